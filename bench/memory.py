"""Resident memory over a long training run (issue 7): does anything grow beyond the replay memory?

Runs `main.py` stage 1 (light backbone, 3 objects, prioritised replay) as a subprocess for
--iterations iterations and samples its resident set size (VmRSS, /proc) when the transition
logs reach each checkpoint (default 100, 500, 1000 iterations). The replay memory's own payload
is measured separately from the same heightmaps (ReplayMemory.nbytes of what the session logged),
so the growth that is *not* replay is

    other_growth = (rss[last] - rss[first]) - (replay[last] - replay[first])

and the target is other_growth < 10 % of rss[first]. Prints one JSON object (last line of
stdout); not run in CI (about 20 minutes at 1000 iterations on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def rows(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n"))
    except OSError:
        return 0


def replay_bytes(session: Path, upto: int) -> int:
    """Bytes the replay memory holds after `upto` transitions: its compressed heightmaps, read
    back from the session's own saved heightmaps and masks (ReplayMemory's encoding)."""
    import cv2
    import numpy as np

    from trainer import ReplayMemory

    memory = ReplayMemory(capacity=10_000)
    data = session / "data"
    total = 0
    for i in range(upto):
        color = cv2.imread(str(data / "color-heightmaps" / f"{i:06d}.0.color.png"), cv2.IMREAD_COLOR)
        depth = cv2.imread(str(data / "depth-heightmaps" / f"{i:06d}.0.depth.png"), cv2.IMREAD_UNCHANGED)
        if color is None or depth is None:
            continue
        mask = np.zeros(depth.shape, np.uint8)
        parts = memory._encode(color[:, :, ::-1], depth.astype(np.float32) / 1e5, mask)
        total += sum(len(p) for p in parts if p is not None)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--checkpoints", default="100,500,1000")
    parser.add_argument("--backbone", default="tiny16")
    parser.add_argument("--machine_load", default="", help="a note on what else ran (goes into the JSON)")
    args = parser.parse_args(argv)
    checkpoints = sorted(int(c) for c in args.checkpoints.split(",") if int(c) <= args.iterations)
    logs = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    command = [sys.executable, str(PROJECT_ROOT / "main.py"), "--stage", "grasp_only", "--num_obj", "3",
               "--grasp_goal_conditioned", "--goal_conditioned", "--goal_obj_idx", "0", "--experience_replay",
               "--explore_rate_decay", "--replay_steps", "4", "--replay_candidates", "other_reward",
               "--grasp_explore", "--grasp_explore_policy", "heuristic", "--backbone", args.backbone, "--cpu",
               "--max_iterations", str(args.iterations), "--random_seed", "1", "--logs_dir", str(logs)]
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
               PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"))
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    samples: dict[int, float] = {}
    session = None
    while process.poll() is None and len(samples) < len(checkpoints):
        time.sleep(0.5)
        sessions = [p for p in logs.iterdir() if p.is_dir()]
        if not sessions:
            continue
        session = sessions[0]
        done = rows(session / "transitions" / "executed-action.log.txt")
        for c in checkpoints:
            if c not in samples and done >= c:
                samples[c] = rss_mb(process.pid)
    process.wait()
    if session is None or len(samples) < len(checkpoints):
        print(json.dumps({"error": f"run ended early (exit {process.returncode})", "logs": str(logs)}))
        return 1
    replay = {c: replay_bytes(session, c) / 1e6 for c in checkpoints}
    first, last = checkpoints[0], checkpoints[-1]
    other = (samples[last] - samples[first]) - (replay[last] - replay[first])
    result = {"bench": "memory", "backbone": args.backbone, "iterations": args.iterations,
              "rss_mb": {str(c): round(samples[c], 1) for c in checkpoints},
              "replay_payload_mb": {str(c): round(replay[c], 2) for c in checkpoints},
              "growth_beyond_replay_mb": round(other, 1),
              "growth_beyond_replay_pct_of_first": round(100 * other / samples[first], 1),
              "target_pct": 10.0, "meets_target": bool(100 * other / samples[first] < 10.0),
              "seconds": round(time.time() - started, 1), "session": str(session),
              "machine_load": args.machine_load}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
