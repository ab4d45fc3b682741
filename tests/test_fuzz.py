"""Issue 7, item 4: bad input, fuzzed with hypothesis.

Malformed test-case files, snapshots (truncated, another architecture, another backbone, not a
torch file, wrong tensors), calibration files (real/cell.json, camera_pose.txt) and command lines:
every generated case (about 260 in all) must end in one clear line on stderr, `error: ...`, and
exit code 2, never a traceback; nothing may start (no session directory is made) and an existing
session that a case names is left byte for byte as it was. main.main runs in-process (fast); a
few cases also run as `python main.py` to check the real exit code and stderr.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main
import models
from logger import Logger
from real.cell import CELL_FILE, Cell, cell_to_json

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)
MESHES = sorted(p.name for p in (PROJECT_ROOT / "simulation" / "blocks").glob("*.obj"))
GOOD_LINE = "{} 0.5 0.4 0.3 -0.5 0.0 0.03 0 0 0"
# A bad run must stop before it starts: these bound one that did not (one heuristic action).
SAFE = ["--max_iterations", "1", "--max_test_trials", "1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def session(work) -> Path:
    """An existing session that cases name: it must never change."""
    path = work / "existing-session"
    logger = Logger(logging_directory=path, verbose=False)
    for i in range(3):
        logger.append("executed-action", [1, i, 10, 20])
        logger.append("label-value", [0.5 * i])
    logger.append("reward-value", [0])  # a short log: a resume would pad it
    (path / "info" / "config.json").write_text("{}\n")
    return path


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        digest.update(str(p.relative_to(path)).encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


_runs = itertools.count()


def refused(argv: list[str], capsys, work: Path) -> str:
    """Run main.main(argv); assert exit code 2, one `error:` line last on stderr, no traceback,
    no session made (in a logs folder of its own). Returns the error line."""
    logs = work / f"logs-{next(_runs)}"
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # a warning is more lines on a user's stderr
        warnings.simplefilter("always")
        try:
            code = main.main([*argv, "--logs_dir", str(logs)])
        except SystemExit as exit_:
            code = exit_.code
    out, err = capsys.readouterr()
    err += "".join(f"warning: {w.message}\n" for w in caught if not issubclass(w.category, DeprecationWarning))
    lines = [line for line in err.splitlines() if line.strip()]
    shown = " ".join(argv)
    assert code == 2, (shown, code, err[-2000:])
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), (shown, err)
    assert all(line.startswith("notice:") for line in lines[:-1]), (shown, err)
    assert not logs.exists() or not any(logs.iterdir()), (shown, list(logs.iterdir()))
    return lines[-1]


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------------------------------------
# Test-case files
# ---------------------------------------------------------------------------------------------
number = st.floats(-1.0, 1.0, allow_nan=False).map(lambda v: f"{v:.4g}")
good_line = st.sampled_from(MESHES).map(GOOD_LINE.format)
bad_token = st.sampled_from(["nan", "inf", "-inf", "x", "1,5", "0x10", "--", "1e999", "", "None"])


@st.composite
def bad_line(draw) -> str:
    kind = draw(st.sampled_from(["count", "token", "mesh", "colour", "goal", "frame"]))
    fields = GOOD_LINE.format(draw(st.sampled_from(MESHES))).split()
    if kind == "count":
        n = draw(st.integers(1, 16).filter(lambda k: k != 10))
        return " ".join((fields * 2)[:n])
    if kind == "token":
        fields[draw(st.integers(1, 9))] = draw(bad_token) or "?"
        return " ".join(fields)
    if kind == "mesh":
        return " ".join([draw(st.text("abcxyz_./", min_size=1, max_size=12).filter(lambda m: m not in MESHES)),
                         *fields[1:]])
    if kind == "colour":
        fields[draw(st.integers(1, 3))] = draw(st.sampled_from(["1.5", "-0.1", "255", "2"]))
        return " ".join(fields)
    if kind == "goal":
        return f"# goal_obj_idx: {draw(st.sampled_from(['x', '-3', '99', '1.5', '']))}"
    return f"# pose_frame: {draw(st.sampled_from(['world', 'MESH ', 'x', '1']))}"


@st.composite
def bad_test_case(draw) -> bytes:
    kind = draw(st.sampled_from(["line", "line", "line", "empty", "comments", "binary"]))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n\n", b"   \n"]))
    if kind == "comments":
        return "\n".join(draw(st.lists(st.sampled_from(["# a", "#", "  "]), max_size=4))).encode()
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=64).map(lambda b: b"\xff\xfe" + b))
    lines = draw(st.lists(good_line, min_size=1, max_size=6))
    lines.insert(draw(st.integers(0, len(lines))), draw(bad_line()))
    return ("\n".join(lines) + "\n").encode()


@fuzz(100)
@given(content=bad_test_case())
def test_fuzz_test_case_files(work, session, capsys, content):
    case = write(work / "case.txt", content)
    before = tree_digest(session)
    refused(["--stage", "push_grasp", "--is_testing", "--policy", "heuristic", "--goal_conditioned",
             "--test_preset_cases", "--test_preset_file", str(case), *SAFE], capsys, work)
    assert tree_digest(session) == before


# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_snapshot(work) -> tuple[bytes, dict]:
    path = work / "good.pth"
    models.save_snapshot(models.build_model("goal_conditioned", "tiny", pretrained="none", seed=0), path)
    return path.read_bytes(), torch.load(path, weights_only=True)


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@st.composite
def bad_snapshot(draw, good: bytes, state: dict, explore: bool = False) -> tuple[bytes, list[str]]:
    """(file bytes, extra flags). explore: for --explore_snapshot_file, whose net must be goal-agnostic."""
    kind = draw(st.sampled_from(["truncated", "truncated", "random", "prefixed", "other_object", "dropped_keys",
                                 "reshaped", "bad_meta", "other_architecture", "other_backbone", "text"]))
    goal = ["--grasp_goal_conditioned"]
    if kind == "truncated":
        return good[:draw(st.integers(0, len(good) - 1))], goal
    if kind == "random":
        return draw(st.binary(max_size=512)), goal
    if kind == "prefixed":
        return draw(st.binary(min_size=1, max_size=16)) + good, goal
    if kind == "text":
        return draw(st.text(max_size=64)).encode(), goal
    if kind == "other_object":
        return torch_bytes(draw(st.sampled_from([[1, 2], torch.zeros(3), "state", {"a": 1}, {1: torch.ones(1)},
                                                 None]))), goal
    weights = {k: v for k, v in state.items() if k != models.META_KEY}
    meta = dict(state[models.META_KEY])
    names = sorted(k for k in weights if not k.endswith("num_batches_tracked"))  # those may be missing
    if kind == "dropped_keys":
        drop = draw(st.lists(st.sampled_from(names), min_size=1, max_size=5, unique=True))
        weights = {k: v for k, v in weights.items() if k not in drop}
    elif kind == "reshaped":
        name = draw(st.sampled_from([n for n in names if weights[n].numel() > 1]))
        weights = {**weights, name: torch.zeros(weights[name].numel() + draw(st.integers(1, 3)))}
    elif kind == "bad_meta":
        key = draw(st.sampled_from(["format", "version", "architecture", "backbone"]))  # 'torch' is a note
        meta[key] = draw(st.sampled_from(["", "densenet", 7, None, ["tiny"], "goal"]))
    elif kind == "other_architecture":  # a goal-agnostic net's snapshot where a goal-conditioned one is asked
        if explore:  # and the other way round
            return good, goal
        agnostic = models.build_model("goal_agnostic", "tiny", pretrained="none", seed=0)
        return torch_bytes({**agnostic.state_dict(), models.META_KEY: models.snapshot_meta(agnostic)}), goal
    else:  # another backbone: asked for by flag, or claimed by metadata that does not fit the weights
        if draw(st.booleans()):
            return good, goal + ["--backbone", draw(st.sampled_from(["resnet18", "densenet121"]))]
        meta["backbone"] = "resnet18"
    return torch_bytes({**weights, models.META_KEY: meta}), goal


@fuzz(80)
@given(data=st.data())
def test_fuzz_snapshots(work, session, good_snapshot, capsys, data):
    explore = data.draw(st.booleans())
    content, flags = data.draw(bad_snapshot(*good_snapshot, explore=explore))
    snapshot = write(work / "snapshot.pth", content)
    before = tree_digest(session)
    if explore:  # the explore model of stage 1 reads its file the same way
        argv = ["--stage", "grasp_only", "--goal_conditioned", "--grasp_goal_conditioned", "--backbone", "tiny",
                "--grasp_explore", "--load_explore_snapshot", "--explore_snapshot_file", str(snapshot)]
    else:
        argv = ["--stage", "push_grasp", "--is_testing", "--goal_conditioned", "--load_snapshot",
                "--snapshot_file", str(snapshot), *flags]
    refused([*argv, "--cpu", *SAFE], capsys, work)
    assert tree_digest(session) == before


# ---------------------------------------------------------------------------------------------
# Calibration files
# ---------------------------------------------------------------------------------------------
GOOD_POSE = "0 1 0 -0.5\n1 0 0 0\n0 0 -1 0.6\n0 0 0 1\n"
CELL_FIELDS = sorted(json.loads(cell_to_json(Cell())))


@st.composite
def bad_cell(draw) -> str:
    data = json.loads(cell_to_json(Cell()))
    kind = draw(st.sampled_from(["text", "not_object", "format", "missing", "unknown", "wrong_value",
                                 "wrong_value", "wrong_value"]))
    if kind == "text":
        return draw(st.sampled_from(["", "{", "{'a': 1}", "[1,", "\x00\xff"])) + draw(st.text(max_size=20))
    if kind == "not_object":
        return json.dumps(draw(st.sampled_from([[], [data], 3, "cell", None, True])))
    if kind == "format":
        data["format"] = draw(st.sampled_from(["", "push-grasp cell v2", None, 1]))
    elif kind == "missing":
        for name in draw(st.lists(st.sampled_from([f for f in CELL_FIELDS if f != "format"]), min_size=1,
                                  max_size=3, unique=True)):
            del data[name]
    elif kind == "unknown":
        data[draw(st.sampled_from(["tool", "Table_z_m", "camera", ""]))] = 1
    else:
        name = draw(st.sampled_from([f for f in CELL_FIELDS if f != "format"]))
        data[name] = draw(st.sampled_from(
            ["abc", None, True, [], [1], [[1, 2]], [[1, 2], [3]], {"x": 1}, float("nan"), float("inf"), -1e9, 1e9,
             [float("nan")] * 6, ["a"] * 6, [[0, 1], [0, 1]], [[1, 0], [1, 0]]]))
    return json.dumps(data)


@st.composite
def bad_pose(draw) -> str:
    pose = np.loadtxt(io.StringIO(GOOD_POSE))
    kind = draw(st.sampled_from(["text", "shape", "nonfinite", "last_row", "scaled", "reflected", "empty"]))
    if kind == "text":
        return draw(st.sampled_from(["a b c d", "1 2 3 4\n5 6", "[[1, 0]]", "\x00\x01"])) + draw(st.text(max_size=10))
    if kind == "empty":
        return draw(st.sampled_from(["", "\n", "# nothing\n"]))
    if kind == "shape":
        rows, cols = draw(st.sampled_from([(3, 3), (3, 4), (4, 3), (1, 16), (5, 4), (4, 5), (2, 8)]))
        pose = np.resize(pose, (rows, cols))
    elif kind == "nonfinite":
        pose[draw(st.integers(0, 2)), draw(st.integers(0, 3))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif kind == "last_row":
        pose[3, draw(st.integers(0, 3))] += draw(st.sampled_from([0.5, -1.0, 2.0]))
    elif kind == "scaled":
        pose[:3, :3] *= draw(st.sampled_from([0.5, 1.1, 2.0, 0.0]))
    else:
        pose[:3, 0] *= -1
    return "\n".join(" ".join(repr(float(v)) for v in row) for row in pose) + "\n"


@fuzz(80)
@given(data=st.data())
def test_fuzz_calibration_files(work, session, capsys, data):
    directory = work / "calibration"
    directory.mkdir(exist_ok=True)
    which = data.draw(st.sampled_from(["cell", "pose"]))
    write(directory / CELL_FILE, data.draw(bad_cell()) if which == "cell" else cell_to_json(Cell()))
    write(directory / "camera_pose.txt", data.draw(bad_pose()) if which == "pose" else GOOD_POSE)
    before = tree_digest(session)
    refused(["--real", "--dry_run", "--policy", "heuristic", "--calibration_dir", str(directory), *SAFE],
            capsys, work)
    assert tree_digest(session) == before


def test_the_good_calibration_files_are_good(work):
    """The fuzzed files above are broken copies of files that load (else they prove nothing)."""
    from real import calibration
    from real.cell import load_cell

    directory = work / "good-calibration"
    directory.mkdir()
    load_cell(write(directory / CELL_FILE, cell_to_json(Cell())))
    calibration.load_camera_pose(write(directory / "camera_pose.txt", GOOD_POSE))


# ---------------------------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------------------------
FILLER = st.sampled_from([["--cpu"], ["--verbose"], ["--precision", "fp32"], ["--random_seed", "5"],
                          ["--num_obj", "4"], ["--save_visualizations"], ["--stage", "grasp_only"],
                          ["--backbone", "tiny"], ["--snapshot_interval", "10"]])
INT_OPTIONS = ["num_obj", "random_seed", "goal_obj_idx", "max_push_episode_length", "max_iterations",
               "max_test_trials", "max_goal_grasp_failures", "snapshot_interval", "coppeliasim_port", "replay_steps"]
FLOAT_OPTIONS = ["heightmap_resolution", "future_reward_discount", "learning_rate", "grasp_reward_threshold",
                 "preset_jitter_mm", "preset_jitter_deg"]
CHOICE_OPTIONS = ["sim", "stage", "policy", "backbone", "precision", "train_scene", "push_reward",
                  "replay_candidates", "grasp_explore_policy", "push_explore_policy"]
OUT_OF_RANGE = {
    "num_obj": ["0", "-3"], "random_seed": ["-1"], "goal_obj_idx": ["-2", "99"], "max_push_episode_length": ["0"],
    "max_iterations": ["-1"], "max_test_trials": ["0", "-5"], "max_goal_grasp_failures": ["0"],
    "snapshot_interval": ["0", "-2"], "coppeliasim_port": ["0", "70000"], "replay_steps": ["0", "65"],
    "heightmap_resolution": ["0", "-0.002", "nan", "inf", "1"], "future_reward_discount": ["1", "-0.5", "nan"],
    "learning_rate": ["0", "-1", "nan", "2"], "grasp_reward_threshold": ["nan", "inf"],
    "preset_jitter_mm": ["-1", "nan", "21"], "preset_jitter_deg": ["-3", "inf"],
}
# Options that contradict each other or need another: (argv, what the error names)
CONFLICTS = [
    ["--stage", "push_only"],
    ["--grasp_goal_conditioned"],
    ["--alternating_training"],
    ["--push_reward", "change"],
    ["--train_scene", "crowded_goal"],
    ["--continue_logging"],
    ["--load_snapshot"],
    ["--load_snapshot", "--snapshot_file", "/nonexistent/x.pth"],
    ["--grasp_explore", "--goal_conditioned"],
    ["--load_explore_snapshot", "--explore_snapshot_file", "/nonexistent/e.pth"],
    ["--test_preset_cases"],
    ["--test_preset_file", "/nonexistent/case.txt"],
    ["--continue_logging", "--logging_directory", "/nonexistent/session"],
    ["--obj_mesh_dir", "/nonexistent/meshes"],
    ["--pretrained_weights", "/nonexistent/w.pth"],
]


@st.composite
def bad_command_line(draw, session: Path) -> list[str]:
    kind = draw(st.sampled_from(["unknown", "type", "choice", "range", "range", "conflict", "conflict",
                                 "missing_value", "existing_session"]))
    if kind == "unknown":
        bad = [draw(st.sampled_from(["--foo", "--continue-logging", "--num-obj", "--is_testing_now", "-x", "stray",
                                     "--stage=grasp", "--goal_conditioned=1"]))]
    elif kind == "type":
        name = draw(st.sampled_from(INT_OPTIONS + FLOAT_OPTIONS))
        values = ["abc", "", "1,5", "0x1f", "--"] + (["1.5", "1e3", "nan"] if name in INT_OPTIONS else ["1.2.3", "one"])
        bad = [f"--{name}", draw(st.sampled_from(values))]
    elif kind == "choice":
        bad = [f"--{draw(st.sampled_from(CHOICE_OPTIONS))}", draw(st.sampled_from(["", "x", "TINY", "all", "0"]))]
    elif kind == "range":
        name = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        bad = [f"--{name}", draw(st.sampled_from(OUT_OF_RANGE[name]))]
    elif kind == "conflict":
        bad = list(draw(st.sampled_from(CONFLICTS)))
    elif kind == "missing_value":
        bad = [f"--{draw(st.sampled_from(INT_OPTIONS + FLOAT_OPTIONS + CHOICE_OPTIONS))}"]
    else:  # a new session may not reuse an existing one
        bad = ["--logging_directory", str(session)]
    # A filler after the bad option must not set that option again (the later value would win).
    fillers = [f for f in draw(st.lists(FILLER, max_size=3)) if f[0] not in bad]
    argv = [token for filler in fillers for token in filler]
    position = draw(st.integers(0, len(fillers)))
    head = [token for filler in fillers[:position] for token in filler]
    tail = [token for filler in fillers[position:] for token in filler]
    if kind in ("missing_value",):  # a flag with no value must come last to lack it
        head, tail = argv, []
    if kind not in ("conflict", "existing_session") and draw(st.booleans()):  # cases that name the existing session must leave it alone
        head = ["--continue_logging", "--logging_directory", str(session), *head]
    return ["--policy", "heuristic", *SAFE, *head, *bad, *tail]


@fuzz(150)
@given(data=st.data())
def test_fuzz_command_lines(work, session, capsys, data):
    argv = data.draw(bad_command_line(session))
    before = tree_digest(session)
    refused(argv, capsys, work)
    assert tree_digest(session) == before


# ---------------------------------------------------------------------------------------------
# The same through `python main.py`
# ---------------------------------------------------------------------------------------------
def test_a_few_cases_through_the_command(work, session, good_snapshot):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    truncated = write(work / "truncated.pth", good_snapshot[0][:1000])
    case = write(work / "bad-case.txt", GOOD_LINE.format(MESHES[0]) + "\n0.obj 1 2\n")
    cases = [["--num_obj", "x"],
             ["--stage", "push_grasp", "--is_testing", "--goal_conditioned", "--grasp_goal_conditioned",
              "--load_snapshot", "--snapshot_file", str(truncated)],
             ["--is_testing", "--policy", "heuristic", "--test_preset_cases", "--test_preset_file", str(case),
              "--continue_logging", "--logging_directory", str(session)]]
    before = tree_digest(session)
    for argv in cases:
        done = subprocess.run([sys.executable, str(PROJECT_ROOT / "main.py"), *argv, "--logs_dir",
                               str(work / "logs"), "--cpu"], capture_output=True, text=True, env=env, timeout=120,
                              cwd=PROJECT_ROOT)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, (argv, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, done.stderr)
    assert tree_digest(session) == before
    assert not (work / "logs").exists() or not any((work / "logs").iterdir())
