"""The heightmap projection of a 640x480 RGB-D render, old against ours, in one process (issue 8, item 4).

old: utils.get_heightmap_reference (the plain definition: back-project every pixel, transform,
stable argsort by height, fancy-index assignment). ours: utils.get_heightmap, the cached
HeightmapProjector of the fixed camera (per-pixel rays, per-pixel depth window, np.maximum.at).
Both on the same MuJoCo renders of random 10-object scenes; every pair of maps is checked to be
identical (depth bit for bit, NaN where NaN, and colour). Wall and thread CPU seconds (the
latter is what another process on the cores does not inflate). Also the whole observation
(Robot.get_heightmaps: render + projection) and the one-off projector build.
Prints one JSON object and writes it to bench/results/heightmap-<date>.json.
Run: `python bench/heightmap.py [--scenes 5] [--repeats 20] [--machine_load "..."]`.
"""
from __future__ import annotations

import argparse
import datetime
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

TARGET_S = 0.010


def _timed(function, cpu: list[float] | None = None) -> float:
    """Wall seconds; appends the thread's CPU seconds to cpu (what a busy machine does not inflate)."""
    started, started_cpu = time.perf_counter(), time.thread_time()
    function()
    if cpu is not None:
        cpu.append(time.thread_time() - started_cpu)
    return time.perf_counter() - started


def run_bench(scenes: int, repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sim = MujocoSim(num_obj=10, rng=rng)
    robot = Robot(sim)
    robot.get_heightmaps()  # GL context and projector built outside the timings
    times: dict[str, list[float]] = {"old": [], "ours": [], "observation_ours": [], "old_cpu": [], "ours_cpu": []}
    identical = []
    args = (sim.intrinsics, sim.camera_pose, robot.workspace_limits_m, robot.heightmap_resolution_m)
    for _ in range(scenes):
        sim.reset_scene(rng)
        robot.get_heightmaps()
        color, depth = robot.get_camera_data()
        old = utils.get_heightmap_reference(color, depth, *args)
        ours = utils.get_heightmap(color, depth, *args)
        identical.append(bool(np.array_equal(old[1], ours[1], equal_nan=True) and np.array_equal(old[0], ours[0])))
        for _ in range(repeats):  # interleaved: the same load on both sides
            times["old"].append(_timed(lambda: utils.get_heightmap_reference(color, depth, *args), times["old_cpu"]))
            times["ours"].append(_timed(lambda: utils.get_heightmap(color, depth, *args), times["ours_cpu"]))
            times["observation_ours"].append(_timed(robot.get_heightmaps))
    build_s = _timed(lambda: utils.HeightmapProjector(sim.intrinsics, sim.camera_pose, depth.shape,
                                                      robot.workspace_limits_m, robot.heightmap_resolution_m))
    sim.close()
    result = {"bench": "heightmap", "date": datetime.date.today().isoformat(), "image": list(depth.shape),
              "heightmap": list(utils.heightmap_shape(robot.workspace_limits_m, robot.heightmap_resolution_m)),
              "scenes": scenes, "repeats": repeats, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
              "numpy": np.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load_average_1min": round(os.getloadavg()[0], 2)}
    for name, values in times.items():
        result[f"{name}_median_s"] = round(float(np.median(values)), 5)
        result[f"{name}_min_s"] = round(float(np.min(values)), 5)
    result["ratio_old_over_ours"] = round(result["old_median_s"] / result["ours_median_s"], 2)
    result["ratio_old_over_ours_cpu"] = round(result["old_cpu_median_s"] / result["ours_cpu_median_s"], 2)
    result["projector_build_s"] = round(build_s, 4)
    result["identical_maps"] = f"{sum(identical)}/{len(identical)}"
    result["within_target_wall"] = result["ours_median_s"] <= TARGET_S
    result["within_target_cpu"] = result["ours_cpu_median_s"] <= TARGET_S
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--machine_load", default=None, help="a note on what else the machine was running")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/heightmap-<date>.json)")
    args = parser.parse_args()
    result = run_bench(args.scenes, args.repeats, args.seed)
    if args.machine_load:
        result["machine_load"] = args.machine_load
    out = Path(args.out or Path(__file__).parent / "results" / f"heightmap-{result['date']}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
