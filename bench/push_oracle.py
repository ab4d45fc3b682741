"""How many pushes must any policy spend before the test rule lets it grasp? (issue 6, motion number)

SPEC 5's test rule pushes while the goal's occupancy ratio exceeds 0.3, whatever the grasp net
says. So on a case whose goal starts crowded, the motion number is at least the pushes needed to
bring the occupancy to 0.3 or below, plus one grasp. This bench measures that floor with an
oracle that sees the future: from each case's start (the file's poses, unjittered) it tries
every candidate push the learned policy may choose (the same start set: free space within
PUSH_NEAR_GOAL_PX of the goal, full-length end at least the push-end margin inside the
workspace), `--starts_per_rotation` seeded starts per rotation x 16 rotations, each from the same
state (the case reloaded and the pushes kept so far replayed; the physics is deterministic), keeps
the push that leaves the lowest occupancy with the goal still in the workspace, and repeats until
the occupancy is at most 0.3 or `--max_pushes` is spent. Also the depth heuristic's push (the
heuristic policy's) and, per step, what share of the candidates lowers the occupancy by more than
0.1 (the +0.5 push reward's condition) or reaches 0.3 at once.

It prints one line per case and a JSON summary (bench/results/push-oracle-<date>.json):
`oracle_pushes` per case and their mean, the floor the test rule puts under the motion number
(oracle pushes + 1 grasp) for any push policy that picks one candidate per step.
With `--snapshot FILE` (repeatable) it also asks each trained net how it ranks the first step's
candidates: the Spearman correlation of its push Q with the occupancy drop each candidate really
gave, and the occupancy its own best candidate leaves (the learned policy's choice among them).
Run: `python bench/push_oracle.py [--cases simulation/test-cases] [--starts_per_rotation 8]
[--snapshot snapshots/goal-push-grasp-tiny16ctx.pth]`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# torch before any MuJoCo renderer: importing it after an EGL context exists segfaults (main.py).
import torch  # noqa: E402,F401
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import utils  # noqa: E402
from main import PUSH_NEAR_GOAL_PX, Config, Observation, learned_push_starts, observe  # noqa: E402
from robot import Robot  # noqa: E402
from rules import GOAL_OCCUPANCY_THRESHOLD  # noqa: E402
from simulation.mujoco_sim import MujocoSim  # noqa: E402
from simulation.test_cases import load_test_case  # noqa: E402

# A push "qualifies" for the +0.5 push reward only when the occupancy falls by more than this (SPEC 5).
OCCUPANCY_DROP_FOR_REWARD = 0.1


def candidate_pushes(obs: Observation, starts_per_rotation: int, end_margin_m: float, resolution_m: float,
                     rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """The learned policy's push set (main.learned_push_starts, as Runner._choose uses it),
    sampled per rotation."""
    starts = learned_push_starts(obs.push_allowed_near_goal, end_margin_m, resolution_m)
    candidates = []
    for rotation in range(starts.shape[0]):
        rows, cols = np.nonzero(starts[rotation])
        if rows.size == 0:
            continue
        for i in rng.choice(rows.size, size=min(starts_per_rotation, rows.size), replace=False):
            candidates.append((rotation, int(rows[i]), int(cols[i])))
    return candidates


def after_pushes(robot: Robot, case, pushes: list[tuple[int, int, int]]) -> Observation:
    """The case reloaded and `pushes` replayed: the state those pushes lead to."""
    robot.load_test_case(case)
    obs = observe(robot, case.goal_obj_idx)
    for push in pushes:
        robot.push(push, obs.depth_heightmap)
        obs = observe(robot, case.goal_obj_idx)
    return obs


def occupancy_or_lost(obs: Observation) -> float:
    """The goal's occupancy; infinity when the push lost the goal (out of the workspace)."""
    if obs.goal_mask is None or not obs.goal_mask.any():
        return float("inf")
    return obs.goal_occupancy


def rank_by_net(trainer, obs: Observation, candidates: list[tuple[list[int], float]],
                start_occupancy: float) -> dict:
    """How a trained net's push Q orders the candidates against the drop each really gave."""
    push_q, _ = trainer.forward(obs.color_heightmap, obs.depth_heightmap, obs.goal_mask, heads=("push",))
    q = np.array([push_q[r, y, x] for (r, y, x), _ in candidates])
    after = np.array([a for _, a in candidates])
    found = np.isfinite(after)  # a candidate that lost the goal has no occupancy to rank
    rho = spearmanr(q[found], start_occupancy - after[found]).statistic if found.sum() > 2 else float("nan")
    pick = int(np.argmax(q))
    return {"spearman_q_vs_drop": float(rho), "net_pick_after": float(after[pick]),
            "net_pick_rank": int(np.sum(after[found] < after[pick])) + 1}


def run_case(path: Path, starts_per_rotation: int, max_pushes: int, end_margin_m: float,
             rng: np.random.Generator, trainers: dict | None = None) -> dict:
    case = load_test_case(path)
    sim = MujocoSim(num_obj=len(case.objects), rng=rng)
    robot = Robot(sim)
    try:
        kept: list[tuple[int, int, int]] = []
        obs = after_pushes(robot, case, kept)
        start_occupancy = obs.goal_occupancy
        # The heuristic policy's first push (main.Runner._choose_heuristic).
        near_goal = obs.free_near_goal if obs.free_near_goal is not None else np.zeros_like(obs.push_allowed)
        heuristic_push = utils.push_heuristic(obs.depth_heightmap, near_goal)
        robot.push(heuristic_push, obs.depth_heightmap)
        heuristic_after = occupancy_or_lost(observe(robot, case.goal_obj_idx))
        steps, replay_gaps, first_candidates, net_ranking = [], [], [], {}
        occupancy = start_occupancy
        while occupancy > GOAL_OCCUPANCY_THRESHOLD and len(kept) < max_pushes:
            obs = after_pushes(robot, case, kept)
            # Replaying the kept pushes must lead to the state measured for them (deterministic physics).
            replay_gaps.append(abs(occupancy_or_lost(obs) - occupancy))
            results = []
            for push in candidate_pushes(obs, starts_per_rotation, end_margin_m, robot.heightmap_resolution_m, rng):
                results.append((occupancy_or_lost(after_pushes(robot, case, kept + [push])), push))
            if not results:
                break
            after = np.array([r[0] for r in results])
            best_after, best_push = min(results, key=lambda r: r[0])
            if not steps:
                first_candidates = [(list(push), float(a)) for a, push in results]
                net_ranking = {name: rank_by_net(t, obs, first_candidates, occupancy)
                               for name, t in (trainers or {}).items()}
            steps.append({"occupancy_before": occupancy, "candidates": len(results),
                          "best_after": best_after, "best_push": list(best_push),
                          "median_after": float(np.median(after[np.isfinite(after)])) if np.isfinite(after).any() else None,
                          "share_dropping_over_0.1": float(np.mean(occupancy - after > OCCUPANCY_DROP_FOR_REWARD)),
                          "share_reaching_threshold": float(np.mean(after <= GOAL_OCCUPANCY_THRESHOLD)),
                          "share_losing_goal": float(np.mean(~np.isfinite(after)))})
            kept.append(best_push)
            occupancy = best_after
        return {"case": path.stem, "start_occupancy": start_occupancy,
                "heuristic_first_push_after": heuristic_after,
                "oracle_pushes": len(kept) if occupancy <= GOAL_OCCUPANCY_THRESHOLD else None,
                "final_occupancy": occupancy, "steps": steps,
                "max_replay_occupancy_gap": max(replay_gaps, default=0.0),
                "first_step_candidates": first_candidates, "nets": net_ranking}
    finally:
        sim.close()


def short_name(snapshot: str) -> str:
    """Enough of a snapshot's path to tell archived steps apart (their files are all snapshot.pth)."""
    parts = Path(snapshot).parts
    return "/".join(parts[-3:-1]) if Path(snapshot).name == "snapshot.pth" else Path(snapshot).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=str(Path(__file__).resolve().parents[1] / "simulation" / "test-cases"))
    parser.add_argument("--starts_per_rotation", type=int, default=4)
    parser.add_argument("--max_pushes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot", action="append", default=[],
                        help="a trained snapshot whose push Q ranks the first step's candidates (repeatable)")
    parser.add_argument("--json", default=None, help="where to write the summary (default bench/results/)")
    args = parser.parse_args(argv)
    cases = sorted(Path(args.cases).glob("*.txt"))
    if not cases:
        print(f"error: no test-case files (*.txt) in {args.cases}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    end_margin_m = Config().push_end_margin_m
    from trainer import trainer_for_snapshot
    from utils import UserError

    try:
        trainers = {snapshot: trainer_for_snapshot(snapshot) for snapshot in args.snapshot}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    per_case = []
    for path in cases:
        result = run_case(path, args.starts_per_rotation, args.max_pushes, end_margin_m, rng, trainers)
        per_case.append(result)
        trail = " -> ".join(f"{s['best_after']:.2f}" for s in result["steps"])
        print(f"{path.stem}: occupancy {result['start_occupancy']:.2f} -> {trail or '(no push needed)'}; "
              f"oracle pushes {result['oracle_pushes']}; the heuristic's first push leaves "
              f"{result['heuristic_first_push_after']:.2f}"
              + "".join(f"; {short_name(n)}: rho {v['spearman_q_vs_drop']:.2f}, its pick leaves {v['net_pick_after']:.2f}"
                        for n, v in result["nets"].items()), flush=True)
    solved = [r["oracle_pushes"] for r in per_case if r["oracle_pushes"] is not None]
    first = [r["steps"][0] for r in per_case if r["steps"]]
    summary = {
        "bench": "push_oracle", "date": datetime.date.today().isoformat(), "cases": args.cases,
        "starts_per_rotation": args.starts_per_rotation, "max_pushes": args.max_pushes, "seed": args.seed,
        "push_end_margin_m": end_margin_m, "push_near_goal_px": PUSH_NEAR_GOAL_PX,
        "mean_start_occupancy": float(np.mean([r["start_occupancy"] for r in per_case])),
        "mean_oracle_pushes": float(np.mean(solved)) if solved else None,
        "cases_not_freed_within_max_pushes": [r["case"] for r in per_case if r["oracle_pushes"] is None],
        "motion_number_floor": float(np.mean(solved)) + 1 if solved else None,
        "first_push_share_dropping_over_0.1": float(np.mean([s["share_dropping_over_0.1"] for s in first])),
        "first_push_share_reaching_threshold": float(np.mean([s["share_reaching_threshold"] for s in first])),
        "max_replay_occupancy_gap": max(r["max_replay_occupancy_gap"] for r in per_case),
        "nets": {name: {"mean_spearman_q_vs_drop": float(np.nanmean([r["nets"][name]["spearman_q_vs_drop"]
                                                                     for r in per_case if name in r["nets"]])),
                        "mean_pick_after": float(np.mean([r["nets"][name]["net_pick_after"]
                                                          for r in per_case if name in r["nets"]])),
                        "pick_reaches_threshold": float(np.mean([r["nets"][name]["net_pick_after"]
                                                                 <= GOAL_OCCUPANCY_THRESHOLD
                                                                 for r in per_case if name in r["nets"]]))}
                 for name in trainers},
        "seconds": time.perf_counter() - started, "per_case": per_case,
    }
    out = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / \
        f"push-oracle-{summary['date']}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_case"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
