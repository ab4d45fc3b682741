#!/usr/bin/env python
"""Regenerate the README's pictures in images/ with the project's own code (about 15 s on 2 cores).

    MUJOCO_GL=egl python images/make_images.py [--out images] [--snapshot PTH] [--transitions DIR]

Writes:
- scene.png: the simulator camera's view of the preset case simulation/test-cases/test-10-obj-06.txt;
- heightmaps.png: its colour heightmap, depth heightmap and goal mask, as the net sees them;
- affordance-grid.png: the grasp net's Q maps over the 16 rotations in that scene (main.py
  --save_visualizations), the executed grasp circled; from --snapshot (default the stage-1
  snapshot of `make reproduce`, results/reproduce/steps/stage1/snapshot.pth, a tiny16
  goal-conditioned net), or an untrained tiny16 net when there is none (the title says which);
- trial-learned.gif: that net grasping the goal in the preset case (main.py --save_video);
- trial-heuristic.gif: the heuristic policy pushing and grasping the goal there;
- learning-curve.png: goal grasp success and grasp Q over stage 1's episodes (evaluate.py's
  training_curve / plot_training_curves) from --transitions' session (default the archived stage 1).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import main  # noqa: E402  (imports torchvision before MuJoCo's EGL context, as it must)
import evaluate  # noqa: E402
import utils  # noqa: E402

CASE = ROOT / "simulation" / "test-cases" / "test-10-obj-06.txt"
STAGE1 = ROOT / "results" / "reproduce" / "steps" / "stage1"
EXACT_CASE = ["--test_preset_cases", "--test_preset_file", str(CASE), "--preset_jitter_mm", "0",
              "--preset_jitter_deg", "0"]
GOAL = ["--grasp_goal_conditioned", "--goal_conditioned"]


def scene_pictures(out: Path) -> None:
    """scene.png and heightmaps.png of the preset case, straight from the simulator."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from logger import write_color_png
    from robot import Robot
    from simulation.mujoco_sim import MujocoSim
    from simulation.test_cases import load_test_case
    from trial_video import outline_goal

    case = load_test_case(str(CASE))
    robot = Robot(MujocoSim(test_case=case))
    try:
        color, _, color_hm, raw_depth_hm = robot.get_heightmaps()
        depth_hm = utils.valid_depth(raw_depth_hm)
        goal = robot.object_masks(color_hm, depth_hm)[case.goal_obj_idx]
    finally:
        robot.close()
    write_color_png(out / "scene.png", color)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    axes[0].imshow(outline_goal(color_hm, goal))
    axes[0].set_title("colour heightmap (goal outlined)")
    shown = axes[1].imshow(100 * depth_hm, cmap="viridis")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="height above the table, cm")
    axes[1].set_title("depth heightmap")
    overlay = (0.35 * color_hm).astype(np.uint8)
    overlay[goal > 0] = (255, 0, 255)
    axes[2].imshow(overlay)
    axes[2].set_title(f"goal mask (object {case.goal_obj_idx}, occupancy "
                      f"{utils.occupancy_ratio(goal, depth_hm):.2f})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{CASE.name}: 224 x 224 cells of 2 mm, what the nets see")
    evaluate._save_figure(fig, out / "heightmaps.png")


def run_main(argv: list[str], logs: Path) -> Path:
    """main.main in-process, its printout kept out of the way; returns the session directory."""
    before = set(logs.iterdir()) if logs.is_dir() else set()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main.main([*argv, "--logs_dir", str(logs)])
    if code != 0:
        raise SystemExit(f"main.py {' '.join(argv)} failed ({code}):\n{printed.getvalue()[-3000:]}")
    (session,) = set(logs.iterdir()) - before
    return session


def learned_trial(out: Path, snapshot: Path | None, logs: Path) -> None:
    """affordance-grid.png and trial-learned.gif from the stage-1 snapshot (or an untrained net)."""
    from PIL import Image, ImageDraw

    if snapshot is None:
        import models

        snapshot = logs.parent / "untrained-tiny16.pth"
        models.save_snapshot(models.build_model("goal_conditioned", "tiny16", pretrained="none", seed=0), snapshot)
        label = "an untrained tiny16 net"
    else:
        label = f"snapshot {snapshot.relative_to(ROOT) if snapshot.is_relative_to(ROOT) else snapshot}"
    session = run_main(["--stage", "grasp_only", "--is_testing", *EXACT_CASE, *GOAL, "--load_snapshot",
                        "--snapshot_file", str(snapshot), "--cpu", "--max_test_trials", "1", "--max_iterations", "10",
                        "--max_goal_grasp_failures", "10", "--save_visualizations", "--save_video"], logs)
    grid = Image.open(session / "visualizations" / "000000.grasp.png").convert("RGB")
    titled = Image.new("RGB", (grid.width, grid.height + 28), "white")
    titled.paste(grid, (0, 28))
    ImageDraw.Draw(titled).text((8, 8), f"grasp Q over the 16 rotations (22.5 deg apart), {label}, "
                                        f"first action circled", fill="black")
    titled.save(out / "affordance-grid.png")
    shutil.copyfile(next((session / "videos").iterdir()), out / "trial-learned.gif")


def heuristic_trial(out: Path, logs: Path) -> None:
    session = run_main(["--stage", "push_grasp", "--policy", "heuristic", "--is_testing", *EXACT_CASE, *GOAL,
                        "--max_test_trials", "1", "--max_iterations", "12", "--save_video"], logs)
    shutil.copyfile(next((session / "videos").iterdir()), out / "trial-heuristic.gif")


def learning_curve(out: Path, session: Path) -> bool:
    if not (session / "transitions" / "executed-action.log.txt").is_file():
        return False
    curve = evaluate.training_curve(session, window=100)
    shown = session.resolve().relative_to(ROOT) if session.resolve().is_relative_to(ROOT) else session
    evaluate.plot_training_curves({"stage 1, goal-conditioned grasping (tiny16)": curve},
                                  out / "learning-curve.png",
                                  f"stage 1: {curve['episodes'].size} episodes ({shown})")
    return True


def main_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "images"), help="where the pictures go (default images/)")
    parser.add_argument("--snapshot", default=str(STAGE1 / "snapshot.pth"),
                        help="goal-conditioned snapshot for the affordance grid and the learned trial "
                             "(default the archived stage 1; missing: an untrained tiny16 net)")
    parser.add_argument("--transitions", default=str(STAGE1),
                        help="training session (a folder with transitions/) for the learning curve")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    snapshot = Path(args.snapshot) if Path(args.snapshot).is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        scene_pictures(out)
        print(f"wrote {out / 'scene.png'} and {out / 'heightmaps.png'}")
        learned_trial(out, snapshot, logs)
        print(f"wrote {out / 'affordance-grid.png'} and {out / 'trial-learned.gif'}"
              + ("" if snapshot else " (untrained net: no snapshot found)"))
        heuristic_trial(out, logs)
        print(f"wrote {out / 'trial-heuristic.gif'}")
    if learning_curve(out, Path(args.transitions)):
        print(f"wrote {out / 'learning-curve.png'}")
    else:
        print(f"no learning curve: {args.transitions} holds no training transitions")
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
