#!/bin/bash
# Stage 3 as the paper's code effectively runs it: its grasp head is never updated after stage 1,
# so the grasp net stays stage 2's (= stage 1's) and only the push net trains on.
# Usage, from the repository root: bash bench/results/stage3-frozen-grasp-2026-12-06/train/run.sh RUN_DIR
# (run again with the same RUN_DIR to resume).
run_dir=${1:?usage: run.sh RUN_DIR}
if [ -d "$run_dir/transitions" ]; then resume="--continue_logging"; else resume=""; fi
OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python main.py --stage push_only --num_obj 10 --grasp_reward_threshold 1.8 \
  --grasp_goal_conditioned --goal_conditioned --goal_obj_idx 4 --cpu --experience_replay --explore_rate_decay \
  --learning_rate 0.0001 --replay_candidates other_reward --replay_steps 4 \
  --load_snapshot --snapshot_file results/reproduce-tiny16ctx/steps/stage2/snapshot.pth --random_seed 11 --max_iterations 600 \
  --logging_directory "$run_dir" $resume
