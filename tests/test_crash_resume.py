"""Issue 7, item 1: a training run killed with SIGKILL at any moment resumes with
--continue_logging and loses no completed transition and repeats none; Ctrl-C saves and exits 0.

One short uninterrupted run (tiny backbone, 3 objects, a snapshot every 2 iterations) is the
reference. The same run is killed by fault injection (GPG_KILL_AT, fault_injection.py) at three
points: between actions, in the middle of writing the resume state, and right after a log
append (the row complete, not yet learned). Each is resumed to the reference's length, and then
- its logs equal the reference's row for row, byte for byte, up to the kill point, and hold one
  row per iteration after it (none lost, none repeated, none padded);
- its replay memory holds the reference's transitions of every iteration before the kill (same
  states, goal masks, actions, labels and rewards, relabelled grasps included), rebuilt from the
  heightmaps and logs where the newest snapshot did not have them, and one transition of every
  iteration after it;
- the counters continue (iteration, episodes) and no half-written state is left.
CPU runs with one seed are repeatable (one torch thread per process), which the row-for-row
comparison of the killed runs (subprocesses) with the reference checks too. The resumes run
in-process (no second start-up of torch and MuJoCo); their rows need not match the reference's.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import main
from logger import PER_ITERATION_LOGS
from trainer import ReplayMemory

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STAGE = "grasp_only"
RUN = ["--stage", STAGE, "--num_obj", "3", "--grasp_goal_conditioned", "--goal_conditioned", "--goal_obj_idx", "1",
       "--experience_replay", "--explore_rate_decay", "--snapshot_interval", "2", "--backbone", "tiny", "--cpu",
       "--random_seed", "3"]
ITERATIONS = 5


def main_py(session: Path, iterations: int, kill: str = "", resume: bool = False, wait: bool = True):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GPG_KILL_AT=kill,
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"))
    argv = [sys.executable, str(PROJECT_ROOT / "main.py"), *RUN, "--max_iterations", str(iterations),
            "--logging_directory", str(session), *(["--continue_logging"] if resume else [])]
    if not wait:
        # A test run started from a background job inherits SIGINT ignored, and main.py rightly
        # leaves an ignored SIGINT alone: give the child the terminal's default back.
        return subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def resume(session: Path, iterations: int, capsys) -> str:
    """Resume the session in-process; returns its stderr."""
    capsys.readouterr()
    code = main.main([*RUN, "--max_iterations", str(iterations), "--logging_directory", str(session),
                      "--continue_logging"])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def log_lines(session: Path, name: str) -> list[str]:
    path = session / "transitions" / f"{name}.log.txt"
    return path.read_text().splitlines() if path.exists() else []


def memory(session: Path) -> ReplayMemory:
    return ReplayMemory.load(session / "models" / f"state.{STAGE}" / "replay.npz")


def entries(mem: ReplayMemory, below: int) -> list:
    """The transitions of iterations < below in the order they were added, without `predicted`
    (replay rewrites it)."""
    out = []
    for index in sorted(int(i) for i in mem._id if i >= 0):
        t = mem[index]
        if t.iteration < below:
            out.append(t)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    session = tmp_path_factory.mktemp("reference") / "session"
    done = main_py(session, ITERATIONS)
    assert done.returncode == 0, done.stderr
    return session


# (kill point, complete rows when killed, iteration of the newest committed state)
KILLS = [("between_actions@3", 3, 2), ("snapshot_write@4", 4, 2), ("append:occupancy@2", 3, 2)]


@pytest.mark.parametrize("kill,rows,snapshot", KILLS, ids=[k for k, _, _ in KILLS])
def test_killed_run_resumes_exactly(reference, tmp_path, capsys, kill, rows, snapshot):
    session = tmp_path / "session"
    killed = main_py(session, ITERATIONS, kill=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = session / "models" / f"state.{STAGE}"
    assert json.loads((state / "trainer.json").read_text())["iteration"] == snapshot
    if kill.startswith("snapshot_write"):  # the new state was half-written, the old one untouched
        assert (session / "models" / f"state.{STAGE}.new").is_dir()
        assert not (session / "models" / f"state.{STAGE}.new" / "COMPLETE").exists()
    assert len(log_lines(session, "executed-action")) == rows

    err = resume(session, ITERATIONS, capsys)
    assert f"of iterations {snapshot}..{rows - 1}" in err, err

    for name in PER_ITERATION_LOGS:  # row for row up to the kill, then one row per iteration
        got, want = log_lines(session, name), log_lines(reference, name)
        assert len(got) == len(want) == ITERATIONS, name
        assert got[:rows] == want[:rows], name
        assert "nan" not in " ".join(got), name
    episodes = [float(v) for v in log_lines(session, "episode")]
    assert episodes == sorted(episodes) and episodes[rows] > episodes[rows - 1]

    mine, theirs = memory(session), memory(reference)
    before, expected = entries(mine, rows), entries(theirs, rows)
    assert [(t.iteration, t.primitive, t.action, t.label, t.reward) for t in before] == \
        [(t.iteration, t.primitive, t.action, t.label, t.reward) for t in expected]
    for a, b in zip(before, expected):
        assert np.array_equal(a.color_heightmap, b.color_heightmap)
        assert np.abs(a.depth_heightmap - b.depth_heightmap).max() <= 1.01e-5
        assert np.array_equal(a.goal_mask, b.goal_mask)
    assert sorted({t.iteration for t in entries(mine, ITERATIONS)}) == list(range(ITERATIONS))

    assert json.loads((session / "models" / f"progress.{STAGE}.json").read_text())["iteration"] == ITERATIONS
    assert (state / "COMPLETE").is_file()
    assert not list((session / "models").glob("*.new")) + list((session / "models").glob("*.old"))
    assert not list((session / "models").glob(".*.tmp"))


def test_ctrl_c_saves_and_exits_0(tmp_path, capsys):
    session = tmp_path / "session"
    process = main_py(session, 50, wait=False)
    try:
        deadline = time.time() + 120
        while len(log_lines(session, "executed-action")) < 2 and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "state saved" in err
    rows = len(log_lines(session, "executed-action"))
    assert 2 <= rows < 50
    for name in PER_ITERATION_LOGS:
        assert len(log_lines(session, name)) == rows, name
    state = session / "models" / f"state.{STAGE}"
    assert json.loads((state / "trainer.json").read_text())["iteration"] == rows
    assert {t.iteration for t in entries(memory(session), rows)} == set(range(rows))
    assert "rebuilt" not in resume(session, rows + 1, capsys)  # the saved state held every transition
    assert len(log_lines(session, "executed-action")) == rows + 1

    # Resuming with options whose net does not fit the saved state is refused, the session untouched.
    before = {p: p.read_bytes() for p in session.rglob("*") if p.is_file()}
    capsys.readouterr()
    other_net = [a for a in RUN if a != "--grasp_goal_conditioned"]
    assert main.main([*other_net, "--max_iterations", "9", "--logging_directory", str(session),
                      "--continue_logging"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    assert {p: p.read_bytes() for p in session.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("crash_after", ["write", "marker", "first_rename", "second_rename"])
def test_an_interrupted_state_commit_leaves_one_whole_state(tmp_path, monkeypatch, crash_after):
    """commit_state_dir cut short at each step: recover_state_dir finds the old state or the new
    one, whole, never a mix."""
    import checkpoint

    final = tmp_path / "state.x"
    checkpoint.commit_state_dir(final, lambda d: (d / "a").write_text("old"), 1)
    steps = {"write": 0, "marker": 1, "first_rename": 2, "second_rename": 3}
    calls = {"n": 0}
    real_rename, real_write = os.rename, checkpoint._atomic_write_text

    class Crash(Exception):
        pass

    def step():
        if calls["n"] == steps[crash_after]:
            raise Crash
        calls["n"] += 1

    def write(d):
        (d / "a").write_text("new")
        step()

    monkeypatch.setattr(checkpoint, "_atomic_write_text", lambda *a: (real_write(*a), step()))
    monkeypatch.setattr(checkpoint.os, "rename", lambda *a: (real_rename(*a), step()))
    with pytest.raises(Crash):
        checkpoint.commit_state_dir(final, write, 2)
    monkeypatch.undo()
    checkpoint.recover_state_dir(final)
    assert (final / "a").read_text() == ("old" if crash_after == "write" else "new")
    assert (final / "COMPLETE").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.x"]


def test_rebuilt_transitions_skip_padded_rows_and_relabel_other_objects(tmp_path):
    """logged_transitions on a hand-made session: a row padded on resume (its action cut short)
    is no transition; a grasp of another object comes back with its relabelled twin, whose label
    is the row's with the success reward (rules.grasp_only_label)."""
    import checkpoint
    import rules
    from logger import Logger

    log = Logger(logging_directory=tmp_path / "s", verbose=False)
    rng = np.random.default_rng(0)
    rows = [  # primitive, success, grasped, goal, reward, label
        (1, 0, -1, 1, 0.0, 0.0), (1, 1, 2, 1, 0.0, 0.5 * 1.25), (1, 1, 1, 1, 1.0, 1.0 + 0.5 * 0.75)]
    for i, (primitive, success, grasped, goal, reward, label) in enumerate(rows):
        log.save_heightmaps(i, rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
                            rng.uniform(0, 0.1, (224, 224)).astype(np.float32))
        log.save_mask(i, "goal", rng.integers(0, 2, (224, 224)) * 255)
        if success:
            log.save_mask(i, "grasped", np.eye(224) * 255)
        values = {"executed-action": [primitive, i, 10 + i, 20], "label-value": [label], "reward-value": [reward],
                  "predicted-value": [0.25], "is-exploit": [1], "use-heuristic": [0], "grasp-obj": [grasped],
                  "goal-obj": [goal], "grasp-success": [success], "push-step": [0], "episode": [1],
                  "change-detected": [1, 10], "improved-grasp-reward": [0], "occupancy": [0, 0]}
        for name in PER_ITERATION_LOGS:
            log.append(name, values[name])
    log.append("executed-action", [1, 3, 0, 0])  # a fourth action, cut short: resume pads its row
    for name in PER_ITERATION_LOGS[1:]:
        log.pad_to(name, 4)
    out, missing = checkpoint.logged_transitions(log, 0, 4, goal_conditioned=True, relabel=True)
    assert missing == []  # the padded row is skipped as no transition, not reported as lacking files
    assert [(t.iteration, t.label, t.reward) for t in out] == [
        (0, 0.0, 0.0), (1, 0.625, 0.0), (1, rules.grasp_only_label(True, 1.0, 1.25), 1.0), (2, 1.375, 1.0)]
    assert np.array_equal(out[2].goal_mask, (np.eye(224) * 255).astype(np.uint8)) and out[2].predicted == 0.0
    assert np.array_equal(out[1].color_heightmap, log.load_heightmaps(1)[0])
