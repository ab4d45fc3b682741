"""Seeing a run work (issue 7 item 5): the progress bar, --save_video, evaluate.py's plots.

The bar is drawn into a StringIO and, end to end, into a pseudo-terminal (tqdm draws nothing
when stderr is not a terminal). The video is one heuristic test trial on a preset case.
"""
import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import main
import progress_bar
import trial_video

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CASE = PROJECT_ROOT / "simulation" / "test-cases" / "test-10-obj-06.txt"
HEURISTIC_TEST = ["--stage", "push_grasp", "--policy", "heuristic", "--is_testing", "--test_preset_cases",
                  "--test_preset_file", str(CASE), "--grasp_goal_conditioned", "--goal_conditioned",
                  "--max_test_trials", "1", "--max_iterations", "12"]


def bar_lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def test_training_bar_shows_iteration_success_push_reward_speed_and_time_left():
    out = io.StringIO()
    bar = progress_bar.ProgressBar(training=True, iteration=10, trials_finished=0, max_iterations=100,
                                   max_test_trials=30, goal_conditioned=True, file=out)
    bar.iteration_done(11, "push", 0.5, [])
    bar.iteration_done(12, "grasp", 1.0, [1, 0, 1, 1])
    bar._bar.refresh()
    last = bar_lines(out.getvalue())[-1]
    bar.close()
    assert "12/100 it" in last
    assert "goal grasps 75% (4)" in last
    assert "push reward +0.50" in last
    assert re.search(r"\d+\.\d\d s/it", last)
    assert re.search(r"<\d\d:\d\d left", last)  # --max_iterations set: the time left


def test_training_bar_without_a_limit_counts_iterations_only():
    out = io.StringIO()
    bar = progress_bar.ProgressBar(True, 0, 0, 0, 30, goal_conditioned=False, file=out)
    bar.iteration_done(1, "grasp", 0.0, [0])
    bar._bar.refresh()
    last = bar_lines(out.getvalue())[-1]
    bar.close()
    assert "1 it" in last and "grasps 0% (1)" in last and "left" not in last


def test_test_bar_counts_trials_and_shows_the_iteration():
    out = io.StringIO()
    bar = progress_bar.ProgressBar(False, 0, 0, 0, 3, goal_conditioned=True, file=out)
    bar.iteration_done(1, "grasp", 1.0, [1])
    bar.trial_done()
    bar._bar.refresh()
    last = bar_lines(out.getvalue())[-1]
    bar.close()
    assert "trial 1/3" in last and "it 1" in last and "goal grasps 100% (1)" in last


def run_on_a_terminal(argv: list[str], tmp_path: Path) -> tuple[int, str]:
    """main.py on a pseudo-terminal 120 columns wide; returns its exit code and all it wrote."""
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "main.py"), *argv,
                                "--logs_dir", str(tmp_path / "logs")], stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower, env=env, cwd=PROJECT_ROOT)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def test_bar_renders_on_a_terminal_and_action_lines_only_with_verbose(tmp_path):
    code, text = run_on_a_terminal(HEURISTIC_TEST, tmp_path)
    assert code == 0, text[-2000:]
    assert re.search(r"test 100%\|.*\| trial 1/1 \[.*it \d+, goal grasps \d+% \(\d+\).*s/it", text), text[-2000:]
    assert "iteration 0:" not in text  # no line per action on a terminal ...
    code, text = run_on_a_terminal([*HEURISTIC_TEST, "--verbose"], tmp_path)
    assert code == 0
    assert "iteration 0:" in text and "trial 1/1" in text  # ... unless asked for


def test_save_video_writes_a_gif_of_the_test_trial(tmp_path):
    import imageio.v3 as iio

    logs = tmp_path / "logs"
    assert main.main([*HEURISTIC_TEST, "--save_video", "--logs_dir", str(logs)]) == 0
    (session,) = logs.iterdir()
    actions = len(np.loadtxt(session / "transitions" / "executed-action.log.txt", ndmin=2))
    (video,) = (session / "videos").iterdir()
    assert video.name == "trial-001.gif"
    frames = iio.imread(video, index=None)
    assert frames.shape[0] == actions + 1  # a frame per action and the scene at the end
    assert frames.shape[-1] == 3 and frames.shape[1] > 200 and frames.shape[2] > 500
    assert frames.std() > 10  # a picture, not a blank


def test_mp4_and_the_projected_action(tmp_path):
    import cv2

    frames = [np.full((64, 96, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    path = trial_video.write_video(tmp_path / "v.mp4", frames, [0.5, 0.5, 1.0])
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 4  # 2 fps: 1 + 1 + 2 frames, each shown as long as asked
    assert not list(tmp_path.glob(".*tmp*"))
    # A point straight ahead of the camera lands at the principal point.
    intrinsics = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
    pose = np.eye(4)
    assert np.allclose(trial_video.project(np.array([[0, 0, 2.0]]), intrinsics, pose), [[320, 240]])
    assert np.allclose(trial_video.project(np.array([[0.1, 0, 1.0]]), intrinsics, pose), [[380, 240]])


def test_evaluate_draws_a_training_session_against_iterations(tmp_path):
    import evaluate
    from logger import Logger

    session = tmp_path / "train"
    lg = Logger(logging_directory=session, verbose=False)
    lg.save_config({"is_testing": False})
    # 40 iterations: a push every 4th, the others grasps; the goal (object 2) comes up from row 20 on.
    for i in range(40):
        push = i % 4 == 0
        lg.append("executed-action", [0 if push else 1, 0, 10, 10])
        lg.append("grasp-obj", -1 if push or i < 20 else 2)
        lg.append("goal-obj", 2)
        lg.append("predicted-value", 0.1 * (i // 4))
        lg.append("reward-value", 0.5 if push else float(not push and i >= 20))
        lg.append("is-exploit", 1)
    lg.append("clearance", 40)
    lg.close()
    curve = evaluate.training_curve(session, window=5)
    assert curve["iterations"] == 40
    assert list(curve["push_iterations"]) == list(range(0, 40, 4))
    assert curve["grasp_iterations"].size == 30 and curve["goal_success_ma"][-1] == 1.0
    assert np.allclose(curve["push_reward_ma"], 0.5)
    assert evaluate.main(["--session_directory", str(session), "--window", "5"]) == 0
    png = session / "training-curve.png"
    assert png.read_bytes().startswith(b"\x89PNG") and (session / "evaluation.png").is_file()
    # A test session gets no training curve unless asked.
    lg = Logger(logging_directory=tmp_path / "test", verbose=False)
    lg.save_config({"is_testing": True})
    for name, row in (("executed-action", [1, 0, 10, 10]), ("grasp-obj", 2), ("goal-obj", 2),
                      ("predicted-value", 0.5), ("clearance", 1)):
        lg.append(name, row)
    lg.close()
    assert evaluate.main(["--session_directory", str(tmp_path / "test")]) == 0
    assert not (tmp_path / "test" / "training-curve.png").exists()
    assert evaluate.main(["--session_directory", str(tmp_path / "test"), "--training_curve"]) == 0
    assert (tmp_path / "test" / "training-curve.png").is_file()


def test_tensorboard_scalars_have_one_table_listed_in_the_readme():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for tag in main.TENSORBOARD_SCALARS:
        assert f"| `{tag}` |" in readme, tag
        assert re.fullmatch(r"(grasp|push|train)/[a-z0-9_]+", tag)
    source = (PROJECT_ROOT / "main.py").read_text()
    assert "log.scalar(" not in source and "logger.scalar(tag" in source  # every scalar goes through _scalar

    class Runner(main.Runner):
        def __init__(self):  # no robot, no session: only _scalar
            self.logger = type("L", (), {"scalar": lambda *a: None})()

    Runner()._scalar("grasp/reward", 1.0, 1)
    try:
        Runner()._scalar("grasp_reward", 1.0, 1)
    except AssertionError as error:
        assert "TENSORBOARD_SCALARS" in str(error)
    else:
        raise AssertionError("an unlisted scalar name was accepted")


def test_make_images_regenerates_every_picture(tmp_path):
    import importlib.util

    import imageio.v3 as iio

    spec = importlib.util.spec_from_file_location("make_images", PROJECT_ROOT / "images" / "make_images.py")
    make_images = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_images)
    out = tmp_path / "images"
    # No snapshot: an untrained tiny16 net; no training session: no learning curve.
    assert make_images.main_cli(["--out", str(out), "--snapshot", str(tmp_path / "none.pth"),
                                 "--transitions", str(tmp_path / "none")]) == 0
    for name in ("scene.png", "heightmaps.png", "affordance-grid.png"):
        image = iio.imread(out / name)
        assert image.ndim == 3 and image.std() > 10, name
    assert iio.imread(out / "affordance-grid.png").shape[:2] == (4 * 224 + 28, 4 * 224)
    for name in ("trial-learned.gif", "trial-heuristic.gif"):
        assert iio.imread(out / name, index=None).shape[0] >= 2, name
    assert not (out / "learning-curve.png").exists()
