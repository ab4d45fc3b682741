"""Make a test-case file from a settled simulated scene (the paper's create.py, SPEC section 7).

    python -m simulation.create --num_obj 10 --seed S --out simulation/test-cases/NAME.txt [--goal_obj_idx k]

Without a goal it saves a plain random drop (reset_scene). With `--goal_obj_idx k` it makes a
challenging goal-oriented case: object k drops first and the others land in a tight cluster
around it; a draw is kept only when every object lies inside the workspace, the scene is
stable, the goal's occupancy ratio (SPEC 3) exceeds `--min_occupancy` (0.3) and at least
`--min_visible` (half) of the goal is seen from above (surrounded, not buried). The file gets a
`# goal_obj_idx: k` header and a comment with the command that made it.

The project's 10 cases were made with (goal meshes varied over the blocks, goal indices the
paper's 0-4, 1-7, 2-8, 3-7, 4-7, 5-3, 6-1, 7-7, 8-5, 9-9):
    python -m simulation.create --all_project_cases
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

import utils
from utils import UserError

PROJECT_CASES_DIR = Path(__file__).resolve().parent / "test-cases"
# (goal index, goal mesh) of test-10-obj-00 .. -09: the paper's goal indices, every block shape.
PROJECT_CASES = ((4, "4.obj"), (7, "1.obj"), (8, "8.obj"), (7, "0.obj"), (7, "6.obj"),
                 (3, "3.obj"), (1, "7.obj"), (7, "2.obj"), (5, "4.obj"), (9, "8.obj"))
DEFAULT_CLUSTER_RADIUS_M = 0.07
PROJECT_MIN_OCCUPANCY = 0.35


def goal_scene_ok(sim, goal: int, min_occupancy: float, min_visible: float) -> tuple[bool, float, float]:
    """Check a settled scene for a goal-oriented case: (accepted, occupancy ratio, visible fraction)."""
    if sim.objects_outside_workspace() or sim.removed.any() or not sim.is_stable():
        return False, 0.0, 0.0
    color, depth = sim.get_camera_data()
    _, depth_hm = utils.get_heightmap(color, depth, sim.intrinsics, sim.camera_pose, sim.workspace_limits_m,
                                      sim.heightmap_resolution_m)
    masks = sim.object_masks(None, None)
    if goal not in masks:
        return False, 0.0, 0.0
    occupancy = utils.occupancy_ratio(masks[goal], utils.valid_depth(depth_hm))
    visible = sim.visible_fraction(goal)
    return occupancy > min_occupancy and visible >= min_visible, occupancy, visible


def create_case(out: Path | str, num_obj: int, seed: int, goal_obj_idx: int | None = None,
                goal_mesh: str | None = None, obj_mesh_dir: Path | str | None = None,
                cluster_radius_m: float = DEFAULT_CLUSTER_RADIUS_M, min_occupancy: float = 0.3,
                min_visible: float = 0.5, attempts: int = 200, command: str = "") -> Path:
    """Simulate draws from `seed` until one qualifies, write it to `out`, return the path."""
    from simulation.mujoco_sim import MujocoSim
    from simulation.test_cases import write_test_case

    if goal_obj_idx is not None and not 0 <= goal_obj_idx < num_obj:
        raise UserError(f"--goal_obj_idx {goal_obj_idx} is out of range for --num_obj {num_obj}")
    rng = np.random.default_rng(seed)
    sim = MujocoSim(obj_mesh_dir=obj_mesh_dir, num_obj=num_obj, rng=rng)
    if goal_mesh is not None and goal_mesh not in sim.mesh_files:
        raise UserError(f"--goal_mesh {goal_mesh} is not in {sim.obj_mesh_dir}")
    try:
        for attempt in range(1, attempts + 1):
            if goal_obj_idx is None:
                if attempt > 1:
                    sim.reset_scene(rng)
                if not sim.objects_outside_workspace() and sim.is_stable():
                    note = "random drop"
                    break
                continue
            names = [str(n) for n in rng.choice(sim.mesh_files, size=num_obj)]
            if goal_mesh is not None:
                names[goal_obj_idx] = goal_mesh
            sim.drop_objects(names, rng, cluster_around=goal_obj_idx, cluster_radius_m=cluster_radius_m)
            ok, occupancy, visible = goal_scene_ok(sim, goal_obj_idx, min_occupancy, min_visible)
            if ok:
                note = f"goal occupancy ratio {occupancy:.2f}, goal visible from above {visible:.2f}"
                break
        else:
            raise UserError(f"no qualifying scene in {attempts} draws from seed {seed}; "
                            f"try another --seed or a smaller --min_occupancy")
        objects = sim.scene_objects()
    finally:
        sim.close()
    comment = [f"made by: python -m simulation.create {command}".rstrip(), f"draw {attempt} of seed {seed}: {note}"]
    path = write_test_case(out, objects, goal_obj_idx, comment=comment)
    print(f"{path}: {len(objects)} objects, goal {goal_obj_idx}, {note} (draw {attempt})")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save a settled simulated scene as a test-case file.")
    parser.add_argument("--num_obj", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="test-case file to write")
    parser.add_argument("--goal_obj_idx", type=int, default=None,
                        help="make a goal-oriented case: object k in the middle of a tight cluster")
    parser.add_argument("--goal_mesh", default=None, help="mesh file of the goal object (default: random)")
    parser.add_argument("--obj_mesh_dir", default=None, help="folder of .obj meshes (default: the blocks)")
    parser.add_argument("--cluster_radius_m", type=float, default=DEFAULT_CLUSTER_RADIUS_M)
    parser.add_argument("--min_occupancy", type=float, default=0.3)
    parser.add_argument("--min_visible", type=float, default=0.5)
    parser.add_argument("--attempts", type=int, default=200)
    parser.add_argument("--all_project_cases", action="store_true",
                        help="(re)make simulation/test-cases/test-10-obj-00..09.txt")
    args = parser.parse_args(argv)
    try:
        if args.all_project_cases:
            for case, (goal, mesh) in enumerate(PROJECT_CASES):
                out = PROJECT_CASES_DIR / f"test-10-obj-{case:02d}.txt"
                # 0.35 rather than 0.3: a margin so a reloaded, re-settled case still counts as cluttered.
                command = (f"--num_obj 10 --seed {case} --goal_obj_idx {goal} --goal_mesh {mesh} "
                           f"--min_occupancy {PROJECT_MIN_OCCUPANCY} --out simulation/test-cases/{out.name}")
                create_case(out, 10, case, goal, mesh, min_occupancy=PROJECT_MIN_OCCUPANCY, command=command)
            return
        if not args.out:
            raise UserError("--out is required (or --all_project_cases)")
        command = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        create_case(args.out, args.num_obj, args.seed, args.goal_obj_idx, args.goal_mesh, args.obj_mesh_dir,
                    args.cluster_radius_m, args.min_occupancy, args.min_visible, args.attempts, command)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
