"""Does averaging the push Q over mirror images of the scene rank a case's pushes better? (issue 6, MN)

Not the paper's: a test-time ensemble at no training cost. The trained push nets rank a test
case's candidate first pushes only loosely against what each really did (bench/push_oracle.py:
Spearman 0.28-0.39), and their mistakes on new scenes look like noise (they fit their training
states far better, bench/push_dense.py). The table, the gripper and the blocks are
mirror-symmetric, so the mirrored scene's Q map, mapped back (push_dense.mirror_push_sample's
rotation map), is a second opinion on the same pushes; a 180-degree turn (both mirrors) is what
the net already sees at rotation r + 8, so it adds nothing new.

It needs no simulation of pushes: it reads a push_oracle summary (every case's first-step
candidates with the occupancy each left, from the unjittered start), rebuilds each case's start
and scores each snapshot with the identity view alone (which repeats push_oracle's figures) and
with the mirror views averaged in. Prints a JSON summary (bench/results/mirror-views-<date>.json).
Run: `python bench/mirror_views.py [--oracle bench/results/push-oracle-2026-12-06.json]
[--snapshot snapshots/goal-push-grasp-tiny16ctx.pth]`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# torch before any MuJoCo renderer: importing it after an EGL context exists segfaults (main.py).
import torch  # noqa: E402,F401
import numpy as np  # noqa: E402

import utils  # noqa: E402
from push_dense import mirror_push_sample  # noqa: E402

DEFAULT_ORACLE = ROOT / "bench" / "results" / "push-oracle-2026-12-06.json"
DEFAULT_SNAPSHOT = ROOT / "snapshots" / "goal-push-grasp-tiny16ctx.pth"
# (flip columns, flip rows) of each view; the views averaged per named combination.
VIEWS = {"identity": [(False, False)], "with_column_mirror": [(False, False), (True, False)],
         "with_row_mirror": [(False, False), (False, True)],
         "all_four": [(False, False), (True, False), (False, True), (True, True)]}


def rotation_map(flip_cols: bool, flip_rows: bool, num_rotations: int = utils.NUM_ROTATIONS) -> np.ndarray:
    """(R,) the rotation that each rotation becomes in the mirrored scene (mirror_push_sample's map;
    it is its own inverse)."""
    pixel = np.zeros((1, 2), np.int64)
    blank = np.zeros((2, 2))
    return np.array([mirror_push_sample(blank[..., None], blank, blank, r, pixel, flip_cols, flip_rows,
                                        num_rotations)[3] for r in range(num_rotations)])


def map_back(q_mirrored: np.ndarray, flip_cols: bool, flip_rows: bool) -> np.ndarray:
    """A Q map (R, H, W) computed on the mirrored scene, in the original scene's frame: the
    original push (r, row, col) is the mirrored push (map(r), mirrored row, mirrored col)."""
    q = q_mirrored[rotation_map(flip_cols, flip_rows, q_mirrored.shape[0])]
    if flip_cols:
        q = q[:, :, ::-1]
    if flip_rows:
        q = q[:, ::-1, :]
    return np.ascontiguousarray(q)


def push_q_views(trainer, color: np.ndarray, depth: np.ndarray, goal_mask: np.ndarray) -> dict:
    """The push Q map of each mirror view, mapped back to the original frame."""
    out = {}
    for flip_cols, flip_rows in VIEWS["all_four"]:
        c, d, g, _, _ = mirror_push_sample(color, depth, goal_mask, 0, np.zeros((1, 2), np.int64), flip_cols, flip_rows)
        q, _ = trainer.forward(c, d, g, heads=("push",))
        out[(flip_cols, flip_rows)] = map_back(q, flip_cols, flip_rows)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", default=str(DEFAULT_ORACLE), help="a bench/push_oracle.py summary (JSON)")
    parser.add_argument("--cases", default=str(ROOT / "simulation" / "test-cases"))
    parser.add_argument("--snapshot", action="append", default=[], help=f"repeatable (default {DEFAULT_SNAPSHOT})")
    parser.add_argument("--json", default=None, help="where to write the summary (default bench/results/)")
    args = parser.parse_args(argv)
    from scipy.stats import spearmanr

    from main import observe
    from robot import Robot
    from rules import GOAL_OCCUPANCY_THRESHOLD
    from simulation.mujoco_sim import MujocoSim
    from simulation.test_cases import load_test_case
    from trainer import trainer_for_snapshot
    from utils import UserError

    try:
        oracle = json.loads(Path(args.oracle).read_text())
        per_case = oracle["per_case"]
        trainers = {s: trainer_for_snapshot(s) for s in args.snapshot or [str(DEFAULT_SNAPSHOT)]}
    except (OSError, ValueError, KeyError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scores = {s: {view: [] for view in VIEWS} for s in trainers}
    start_gaps = []
    for case in per_case:
        path = Path(args.cases) / f"{case['case']}.txt"
        if not path.is_file() or not case["first_step_candidates"]:
            continue
        preset = load_test_case(path)
        sim = MujocoSim(num_obj=len(preset.objects), rng=np.random.default_rng(0))
        try:
            robot = Robot(sim)
            robot.load_test_case(preset)
            obs = observe(robot, preset.goal_obj_idx)
        finally:
            sim.close()
        # The oracle's candidates were measured from this very start (deterministic physics).
        start_gaps.append(abs(obs.goal_occupancy - case["start_occupancy"]))
        after = np.array([a for _, a in case["first_step_candidates"]], float)
        found = np.isfinite(after)
        for snapshot, trainer in trainers.items():
            views = push_q_views(trainer, obs.color_heightmap, obs.depth_heightmap, obs.goal_mask)
            for name, members in VIEWS.items():
                q_map = np.mean([views[v] for v in members], axis=0)
                q = np.array([q_map[r, y, x] for (r, y, x), _ in case["first_step_candidates"]])
                pick = int(np.argmax(q))
                rho = spearmanr(q[found], case["start_occupancy"] - after[found]).statistic
                scores[snapshot][name].append({"case": case["case"], "spearman_q_vs_drop": float(rho),
                                               "pick_after": float(after[pick])})
        print(case["case"] + ": " + "; ".join(
            f"{Path(s).name} {name} rho {v[-1]['spearman_q_vs_drop']:.2f} pick leaves {v[-1]['pick_after']:.2f}"
            for s, by_view in scores.items() for name, v in by_view.items()), flush=True)
    summary = {"bench": "mirror_views", "date": datetime.date.today().isoformat(), "oracle": args.oracle,
               "max_start_occupancy_gap": max(start_gaps, default=None), "snapshots": {}}
    for snapshot, by_view in scores.items():
        summary["snapshots"][snapshot] = {
            name: {"cases": len(rows),
                   "mean_spearman_q_vs_drop": float(np.nanmean([r["spearman_q_vs_drop"] for r in rows])),
                   "mean_pick_after": float(np.mean([r["pick_after"] for r in rows])),
                   "pick_reaches_threshold": float(np.mean([r["pick_after"] <= GOAL_OCCUPANCY_THRESHOLD
                                                            for r in rows])),
                   "per_case": rows}
            for name, rows in by_view.items()}
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"mirror-views-{summary['date']}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({s: {n: {k: v for k, v in m.items() if k != "per_case"} for n, m in by_view.items()}
                      for s, by_view in summary["snapshots"].items()}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
