"""How fast is the embedded simulator? Prints one JSON line of wall seconds (median over repeats).

push, grasp: one robot.Robot primitive in a 10-object scene (targets <= 0.3 s, SPEC 11 measured
0.10-0.16 s); render_heightmap: a 640x480 RGB-D render plus utils.get_heightmap (target
<= 60 ms; the first one after a reset also uploads the new model to OpenGL, ~25 ms more);
reset: a new 10-object random drop, settled. Other processes on the machine skew it: llvmpipe
renders on every core, and OpenBLAS threads (utils.transform_points' matmul) stall when the cores
are busy (set OPENBLAS_NUM_THREADS=1 to compare). Run: `python bench/sim.py [--repeats N]`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import utils  # noqa: E402
from robot import Robot  # noqa: E402
from simulation.mujoco_sim import MujocoSim  # noqa: E402

TARGETS_S = {"push": 0.3, "grasp": 0.3, "render_heightmap": 0.06}


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run_bench(repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sim = MujocoSim(num_obj=10, rng=rng)
    robot = Robot(sim)
    times: dict[str, list[float]] = {"push": [], "grasp": [], "render_heightmap": [], "reset": [],
                                     "first_render_heightmap_after_reset": [], "render": [], "heightmap": []}
    robot.get_heightmaps()  # the first render builds the GL context: not what is measured
    for _ in range(repeats):
        times["reset"].append(_timed(lambda: sim.reset_scene(rng)))
        # A new scene is a new MuJoCo model: its first render also uploads it to OpenGL.
        times["first_render_heightmap_after_reset"].append(_timed(robot.get_heightmaps))
        times["render_heightmap"].append(_timed(robot.get_heightmaps))
        # The two halves: the simulator's render, and utils.get_heightmap on its image.
        times["render"].append(_timed(sim.get_camera_data))
        color, depth = sim.get_camera_data()
        times["heightmap"].append(_timed(lambda: utils.get_heightmap(color, depth, sim.intrinsics, sim.camera_pose)))
        valid = utils.valid_depth(robot.get_heightmaps()[3])
        masks = sim.object_masks(None, None)
        target = masks[int(rng.choice(list(masks)))] if masks else np.full(valid.shape, 255, np.uint8)
        rows, cols = np.nonzero(target)
        k = int(rng.integers(rows.size))
        # A push starting 4 cm before an object, towards it; a grasp on an object.
        rotation = int(rng.integers(16))
        theta = rotation * utils.ROTATION_STEP_RAD
        start = (int(np.clip(rows[k] - 20 * np.sin(theta), 0, valid.shape[0] - 1)),
                 int(np.clip(cols[k] - 20 * np.cos(theta), 0, valid.shape[1] - 1)))
        times["push"].append(_timed(lambda: robot.push((rotation, *start), valid)))
        valid = utils.valid_depth(robot.get_heightmaps()[3])
        times["grasp"].append(_timed(lambda: robot.grasp((int(rng.integers(16)), int(rows[k]), int(cols[k])), valid)))
    sim.close()
    result = {"bench": "sim", "repeats": repeats, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
              "mujoco_gl": os.environ.get("MUJOCO_GL"), "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
              "load_average_1min": round(os.getloadavg()[0], 2)}
    for name, values in times.items():
        result[f"{name}_s"] = round(float(np.median(values)), 4)
        result[f"{name}_max_s"] = round(float(np.max(values)), 4)
    result["within_targets"] = all(result[f"{name}_s"] <= limit for name, limit in TARGETS_S.items())
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run_bench(args.repeats, args.seed)))
