"""`make demo`: the whole pipeline on the embedded simulator in a few minutes on a 2-core CPU.

0. The shipped snapshot of the full method (snapshots/, see its MODEL_CARD.md) pushes the packed
   goal of a challenging case free and grasps it: metrics table and visualisations.
1. The heuristic policy clears a goal out of one of the project's preset cluttered cases
   (no network: shows the simulator, the primitives and the metrics).
2. Stage 1 (goal-conditioned grasping, goal relabelling, prioritised replay) trains a light
   network for a short while.
3. That snapshot is tested on the preset case as a grasping-only policy, scored by evaluate.py.
Each step leaves a session directory under logs/ that evaluate.py scores again later.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import evaluate
import main
import reproduce

PROJECT_ROOT = Path(__file__).resolve().parent
DEMO_CASE = PROJECT_ROOT / "simulation" / "test-cases" / "test-10-obj-00.txt"
# The name reproduce.py --ship gives the full method's snapshot of its default backbone.
SHIPPED_SNAPSHOT = PROJECT_ROOT / "snapshots" / f"goal-push-grasp-{reproduce.DEFAULT_BACKBONE}.pth"


def run(step: str, argv: list[str]) -> Path:
    print(f"\n=== {step}\n$ python main.py {' '.join(argv)}", flush=True)
    started = time.time()
    code = main.main(argv)
    if code != 0:
        sys.exit(code)
    session = max((p for p in (PROJECT_ROOT / "logs").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    print(f"=== {step}: {time.time() - started:.0f} s, session {session}", flush=True)
    return session


def main_demo(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_iterations", type=int, default=300)
    parser.add_argument("--test_trials", type=int, default=3)
    parser.add_argument("--backbone", default="tiny16", choices=["tiny", "tiny16", "tiny16ctx", "resnet18", "densenet121"])
    args = parser.parse_args(argv)
    common = ["--backbone", args.backbone, "--random_seed", "7", "--cpu"]

    if SHIPPED_SNAPSHOT.is_file():
        # The snapshot describes its own net: no --backbone.
        run("the shipped full-method snapshot on a challenging case", [
            "--stage", "push_grasp", "--num_obj", "10", "--is_testing", "--test_preset_cases",
            "--test_preset_file", str(DEMO_CASE), "--load_snapshot", "--snapshot_file", str(SHIPPED_SNAPSHOT),
            "--grasp_goal_conditioned", "--goal_conditioned", "--max_test_trials", str(args.test_trials),
            "--max_iterations", str(15 * args.test_trials), "--save_visualizations", "--random_seed", "7", "--cpu"])
    else:
        print(f"notice: no shipped snapshot at {SHIPPED_SNAPSHOT} yet (make reproduce makes it); "
              f"skipping the trained-policy step", flush=True)

    heuristic = run("heuristic policy on a preset case", [
        "--stage", "push_grasp", "--policy", "heuristic", "--is_testing", "--test_preset_cases",
        "--test_preset_file", str(DEMO_CASE), "--grasp_goal_conditioned", "--goal_conditioned",
        "--max_test_trials", str(args.test_trials), "--random_seed", "7"])

    training = run("stage 1: goal-conditioned grasp net", [
        "--stage", "grasp_only", "--num_obj", "3", "--grasp_goal_conditioned", "--goal_conditioned",
        "--goal_obj_idx", "0", "--experience_replay", "--explore_rate_decay",
        # The light-trunk settings of make reproduce (README, Differences).
        "--replay_steps", "4", "--replay_candidates", "other_reward", "--grasp_explore",
        "--grasp_explore_policy", "heuristic",
        "--max_iterations", str(args.train_iterations), "--snapshot_interval", "50", *common])
    snapshot = training / "models" / "snapshot-backup.grasp_only.pth"

    # Stage 1 trains only the grasp net, so it is tested as the paper's "grasping only" policy;
    # push_grasp testing needs the push net of stages 2 and 3.
    run("test the stage-1 snapshot on the preset case (grasping only)", [
        "--stage", "grasp_only", "--is_testing", "--test_preset_cases", "--test_preset_file", str(DEMO_CASE),
        "--grasp_goal_conditioned", "--goal_conditioned", "--load_snapshot", "--snapshot_file", str(snapshot),
        "--max_test_trials", str(args.test_trials), "--max_iterations", str(12 * args.test_trials),
        "--save_visualizations", *common])

    print("\n=== stage 1 training, scored like a test session (every scene is a trial)")
    print(evaluate.format_report(evaluate.evaluate_session(training)))
    print(f"\nheuristic session: {heuristic}\ntraining session: {training}")
    return 0


if __name__ == "__main__":
    sys.exit(main_demo())
