"""Does stage 1 learn? grasp_only, goal-conditioned, 3 objects, light backbone, CPU.

Prints one JSON line (the last line of stdout): goal grasp success over the first and the last
100 iterations of N, over all actions and over the greedy ones only, seconds per iteration, and
the session directory. Target (issue 3): the last 100 at least
twice the first 100 and at least 50 % within 600 iterations. Not run in CI (about 20-30 min).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import main  # noqa: E402
from logger import read_log_file  # noqa: E402


def goal_success_rate(transitions: Path, rows: slice, exploit_only: bool = False) -> float:
    """Fraction of goal grasps among the rows (all actions are grasps in grasp_only).

    exploit_only: only the greedy actions (no explore-model or random-primitive actions; stage 1
    without --grasp_explore has none, so both figures agree).
    """
    grasp_obj = read_log_file(transitions / "grasp-obj.log.txt").reshape(-1)[rows]
    goal_obj = read_log_file(transitions / "goal-obj.log.txt").reshape(-1)[rows]
    keep = np.ones(grasp_obj.shape, dtype=bool)
    if exploit_only:
        keep = read_log_file(transitions / "is-exploit.log.txt").reshape(-1)[rows] > 0
    return float(np.mean(grasp_obj[keep] == goal_obj[keep])) if keep.any() else float("nan")


def run_bench(iterations: int, backbone: str, seed: int, extra: list[str]) -> dict:
    logs = Path(__file__).resolve().parents[1] / "logs"
    before = set(logs.iterdir()) if logs.is_dir() else set()
    started = time.time()
    code = main.main(["--stage", "grasp_only", "--num_obj", "3", "--grasp_goal_conditioned", "--goal_conditioned",
                      "--goal_obj_idx", "0", "--experience_replay", "--explore_rate_decay", "--backbone", backbone,
                      "--cpu", "--random_seed", str(seed), "--max_iterations", str(iterations), *extra])
    seconds = time.time() - started
    if code != 0:
        raise SystemExit(code)
    session = max(set(logs.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    transitions = session / "transitions"
    window = min(100, iterations // 2)
    return {"bench": "learn", "stage": "grasp_only", "backbone": backbone, "iterations": iterations, "seed": seed,
            "goal_success_first": goal_success_rate(transitions, slice(0, window)),
            "goal_success_last": goal_success_rate(transitions, slice(iterations - window, iterations)),
            "exploit_goal_success_first": goal_success_rate(transitions, slice(0, window), exploit_only=True),
            "exploit_goal_success_last": goal_success_rate(transitions, slice(iterations - window, iterations),
                                                           exploit_only=True),
            "window": window, "seconds_per_iteration": seconds / iterations, "session": str(session)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--backbone", default="tiny", choices=["tiny", "resnet18", "densenet121"])
    parser.add_argument("--seed", type=int, default=1)
    args, extra = parser.parse_known_args()
    print(json.dumps(run_bench(args.iterations, args.backbone, args.seed, extra)))
