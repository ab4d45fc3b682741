"""Is a preset case challenging? Grasp the goal straight away, no push, and see.

    python -m simulation.challenging [--cases simulation/test-cases] [--trials 30] [--seed 0]
                                     [--preset_jitter_mm 3] [--preset_jitter_deg 3] [--json PATH]

A case is challenging when grasping the goal at once, without a push, fails (issue 6). For every
case and every jittered trial (the same jitter as testing, `simulation.test_cases.jitter_case`)
this loads the scene, takes the heuristic's best grasp inside the goal mask (VPG's depth
heuristic, `utils.grasp_heuristic`), and records whether the goal came up. Prints one line per
case and a JSON summary; exit code 1 when any case was grasped at once in any trial (remake it
with `python -m simulation.create`), 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import utils
from utils import UserError

DEFAULT_CASES = Path(__file__).resolve().parent / "test-cases"


def immediate_goal_grasps(case_path: Path | str, trials: int, rng: np.random.Generator,
                          jitter_m: float, jitter_rad: float, sim=None) -> list[bool]:
    """One heuristic goal grasp per jittered trial of the case; True where it took the goal."""
    from robot import Robot
    from simulation.mujoco_sim import MujocoSim
    from simulation.test_cases import jitter_case, load_test_case

    case = load_test_case(case_path)
    if case.goal_obj_idx is None:
        raise UserError(f"{case_path}: no goal index (add a '# goal_obj_idx: k' header)")
    own = sim is None
    sim = sim or MujocoSim(num_obj=len(case.objects), rng=rng)
    robot = Robot(sim)
    outcomes = []
    try:
        for _ in range(trials):
            robot.load_test_case(jitter_case(case, rng, jitter_m, jitter_rad))
            _, _, _, raw_depth = robot.get_heightmaps()
            depth = utils.valid_depth(raw_depth)
            goal_mask = robot.object_masks(None, depth).get(case.goal_obj_idx)
            if goal_mask is None or not goal_mask.any():
                outcomes.append(False)
                continue
            result = robot.grasp(utils.grasp_heuristic(depth, goal_mask > 0), depth)
            outcomes.append(bool(result.success and result.object_index == case.goal_obj_idx))
    finally:
        if own:
            sim.close()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=str(DEFAULT_CASES), help="folder of test-case files, or one file")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset_jitter_mm", type=float, default=3.0)
    parser.add_argument("--preset_jitter_deg", type=float, default=3.0)
    parser.add_argument("--json", default="", help="also write the summary here")
    args = parser.parse_args(argv)
    try:
        if args.trials < 1:
            raise UserError(f"--trials must be at least 1, got {args.trials}")
        cases = Path(args.cases)
        files = sorted(cases.glob("*.txt")) if cases.is_dir() else [cases]
        if not files or not files[0].is_file():
            raise UserError(f"no test-case files in {args.cases}")
        rng = np.random.default_rng(args.seed)
        summary = {"trials": args.trials, "seed": args.seed, "preset_jitter_mm": args.preset_jitter_mm,
                   "preset_jitter_deg": args.preset_jitter_deg, "cases": {}}
        for path in files:
            outcomes = immediate_goal_grasps(path, args.trials, rng, args.preset_jitter_mm / 1000.0,
                                             np.deg2rad(args.preset_jitter_deg))
            rate = 100.0 * float(np.mean(outcomes))
            summary["cases"][path.stem] = {"immediate_goal_grasp_pct": rate, "grasped_at_once": int(sum(outcomes))}
            print(f"{path.stem}: goal grasped at once in {sum(outcomes)}/{len(outcomes)} trials "
                  f"({'challenging' if not any(outcomes) else 'NOT challenging'})", flush=True)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary["all_challenging"] = all(c["grasped_at_once"] == 0 for c in summary["cases"].values())
    text = json.dumps(summary, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0 if summary["all_challenging"] else 1


if __name__ == "__main__":
    sys.exit(main())
