#!/bin/bash
# queue.sh ARM SEED...: stage 1 in crowded-goal scenes, one arm, seeds in turn; resumes a started session.
arm=$1; shift
cd /work/main
for seed in "$@"; do
  dir=$HOME/relabelling-crowded/$arm-seed$seed
  extra=""; [ "$arm" = norelabel ] && extra="--no_goal_relabelling"
  resume=""; [ -d "$dir/transitions" ] && resume="--continue_logging"
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python main.py --stage grasp_only --num_obj 5 \
    --grasp_goal_conditioned --goal_conditioned --goal_obj_idx 4 --backbone tiny16ctx --cpu --experience_replay \
    --explore_rate_decay --learning_rate 0.0001 --replay_candidates other_reward --replay_steps 4 --grasp_explore \
    --grasp_explore_policy heuristic --random_seed $seed --max_iterations 600 --train_scene crowded_goal \
    --logging_directory $dir $resume $extra >> $HOME/relabelling-crowded/$arm-seed$seed.out 2>&1
done
