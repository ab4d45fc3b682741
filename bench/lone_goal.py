"""Is the grasp net unsure of a goal that is plainly free, and is it right to be? (issue 6, MN)

The full method pushes a free goal while the goal's grasp Q stays under the test rule's 1.5
(README, "Where the reproduction stands"), and most on the long goals. This bench isolates the
grasp net from the clutter: for each case file it builds the goal alone on the table at the
file's pose (with `--keep_beyond_m D`, also the case's other objects whose origin lies farther
than D from the goal's), the goal moved by a seeded random offset and turned by a random angle
(`--draws` per case),
asks each snapshot for its best goal-masked grasp (the test policy's pick: the Q map's maximum
inside the goal mask), executes that grasp, and records the Q and whether the goal was taken.
A calibrated net that is unsure of a lone goal fails its grasps there too; one whose grasps
succeed anyway is unsure for no reason, which costs the policy pushes in the test rule.

It prints one line per goal mesh and snapshot, and a JSON summary
(bench/results/lone-goal-<date>.json): per mesh, the number of draws, the mean best goal grasp Q,
the share of draws at Q >= 1.5 (the test rule would grasp) and the share whose grasp took the goal.
Run: `python bench/lone_goal.py [--cases simulation/test-cases] [--draws 8]
[--snapshot snapshots/goal-push-grasp-tiny16ctx.pth]`.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# torch before any MuJoCo renderer: importing it after an EGL context exists segfaults (main.py).
import torch  # noqa: E402,F401
import numpy as np  # noqa: E402

from main import Config, observe  # noqa: E402
from robot import Robot  # noqa: E402
from rules import best_pixel  # noqa: E402
from simulation.mujoco_sim import MujocoSim  # noqa: E402
from simulation.test_cases import jitter_case, load_test_case  # noqa: E402

DEFAULT_SNAPSHOT = ROOT / "snapshots" / "goal-push-grasp-tiny16ctx.pth"
OFFSET_M = 0.03  # the lone goal's random shift, each of x and y: away from its file position, not out of reach
YAW_RAD = float(np.pi)  # any heading: the net should be sure of every one


def lone_goal_case(path: Path, keep_beyond_m: float | None = None):
    """The case with its goal object first (index 0, at the file's pose) and no other object, or,
    with keep_beyond_m, the other objects whose origin lies farther than that from the goal's
    (the clutter without the goal's near neighbours)."""
    case = load_test_case(path)
    if case.goal_obj_idx is None:
        from utils import UserError

        raise UserError(f"{path} names no goal (# goal_obj_idx: k)")
    goal = case.objects[case.goal_obj_idx]
    others = []
    if keep_beyond_m is not None:
        gone = set(case.outside_workspace) | set(case.below_table)
        others = [o for i, o in enumerate(case.objects) if i != case.goal_obj_idx and i not in gone
                  and np.hypot(o.position_m[0] - goal.position_m[0], o.position_m[1] - goal.position_m[1]) > keep_beyond_m]
    return dataclasses.replace(case, objects=(goal, *others), goal_obj_idx=0, outside_workspace=(), below_table=())


def probe(trainer, robot: Robot, case) -> dict:
    """The net's best goal-masked grasp on the lone goal, executed."""
    robot.load_test_case(case)
    obs = observe(robot, 0)
    if obs.goal_mask is None or not obs.goal_mask.any():
        return {"q": None, "goal_taken": None}
    _, grasp_q = trainer.forward(obs.color_heightmap, obs.depth_heightmap, obs.goal_mask, heads=("grasp",))
    action, q = best_pixel(grasp_q, obs.goal_mask > 0)
    result = robot.grasp(action, obs.depth_heightmap)
    return {"q": float(q), "goal_taken": bool(result.success and result.object_index == 0),
            "occupancy": float(obs.goal_occupancy), "action": list(action)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=str(ROOT / "simulation" / "test-cases"))
    parser.add_argument("--draws", type=int, default=8, help="random poses of each case's goal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep_beyond_m", type=float, default=None,
                        help="keep the other objects farther than this from the goal (default: none kept)")
    parser.add_argument("--snapshot", action="append", default=[], help=f"repeatable (default {DEFAULT_SNAPSHOT})")
    parser.add_argument("--json", default=None, help="where to write the summary (default bench/results/)")
    args = parser.parse_args(argv)
    cases = sorted(Path(args.cases).glob("*.txt"))
    if not cases or args.draws < 1:
        print(f"error: need test-case files (*.txt) in {args.cases} and --draws >= 1", file=sys.stderr)
        return 2
    from trainer import trainer_for_snapshot
    from utils import UserError

    try:
        trainers = {snapshot: trainer_for_snapshot(snapshot) for snapshot in args.snapshot or [str(DEFAULT_SNAPSHOT)]}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threshold = Config().goal_grasp_q_threshold
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    draws = []
    for path in cases:
        try:
            base = lone_goal_case(path, args.keep_beyond_m)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        sim = MujocoSim(num_obj=len(base.objects), rng=rng)
        robot = Robot(sim)
        try:
            for _ in range(args.draws):
                # Only the goal moves: the kept clutter stays where the file has it.
                moved = jitter_case(dataclasses.replace(base, objects=base.objects[:1]), rng, OFFSET_M, YAW_RAD)
                case = dataclasses.replace(base, objects=moved.objects + base.objects[1:])
                row = {"case": path.stem, "mesh": base.objects[0].mesh_file}
                for snapshot, trainer in trainers.items():
                    row[snapshot] = probe(trainer, robot, case)
                draws.append(row)
        finally:
            sim.close()
    summary = {"bench": "lone_goal", "date": datetime.date.today().isoformat(), "cases": args.cases,
               "draws_per_case": args.draws, "seed": args.seed, "keep_beyond_m": args.keep_beyond_m, "offset_m": OFFSET_M, "yaw_rad": YAW_RAD,
               "goal_grasp_q_threshold": threshold, "snapshots": {}}
    for snapshot in trainers:
        per_mesh = {}
        for mesh in sorted({d["mesh"] for d in draws}):
            seen = [d[snapshot] for d in draws if d["mesh"] == mesh and d[snapshot]["q"] is not None]
            q = np.array([s["q"] for s in seen])
            taken = np.array([s["goal_taken"] for s in seen])
            per_mesh[mesh] = {"draws": len(seen), "mean_q": float(q.mean()) if seen else None,
                              "share_q_at_threshold": float(np.mean(q >= threshold)) if seen else None,
                              "goal_taken": float(taken.mean()) if seen else None,
                              "mean_occupancy": float(np.mean([s["occupancy"] for s in seen])) if seen else None,
                              "goal_taken_when_q_under_threshold": (float(taken[q < threshold].mean())
                                                                    if np.any(q < threshold) else None)}
            m = per_mesh[mesh]
            if seen:
                print(f"{Path(snapshot).name} {mesh}: {m['draws']} draws, mean Q {m['mean_q']:.2f}, "
                      f"Q >= {threshold:g} in {100 * m['share_q_at_threshold']:.0f} %, goal taken "
                      f"{100 * m['goal_taken']:.0f} %, goal occupancy {m['mean_occupancy']:.2f}", flush=True)
        summary["snapshots"][snapshot] = per_mesh
    summary["seconds"] = time.perf_counter() - started
    summary["draws"] = draws
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"lone-goal-{summary['date']}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out} ({summary['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
