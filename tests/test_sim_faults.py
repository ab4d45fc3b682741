"""Simulator faults (issue 7 item 3): each fault injected, detected, recorded, the scene reset, the run on.

Faults are injected with fault_injection.sim_fault (GPG_SIM_FAULT=kind@iteration): a NaN
velocity, an object shot off the table, a gripper that cannot rise, fingers that do not open, an
object that never stops moving. Small scenes: one or two blocks, or the preset case for main.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

import fault_injection
import main
import utils
from robot import Robot
from simulation.base import FAULT_KINDS
from simulation.test_cases import SceneObject

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CASE = PROJECT_ROOT / "simulation" / "test-cases" / "test-10-obj-06.txt"
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
TWO_BLOCKS = [SceneObject("4.obj", RED, (-0.5, 0.0, 0.03), (0.0, 0.0, 0.0)),
              SceneObject("6.obj", BLUE, (-0.4, 0.1, 0.03), (0.0, 0.0, 0.0))]


@pytest.fixture(scope="module")
def sim():
    from simulation.mujoco_sim import MujocoSim

    backend = MujocoSim(objects=TWO_BLOCKS)
    yield backend
    backend.close()


@pytest.fixture(autouse=True)
def fresh_injections():
    fault_injection._fired.clear()
    yield
    fault_injection._fired.clear()


def act(sim, primitive: str, iteration: int = 7) -> list:
    """Load the two blocks, do one primitive on block 0 (a grasp across it, a push into it) with
    whatever GPG_SIM_FAULT injects at this iteration; the faults seen."""
    sim.load_objects(TWO_BLOCKS)
    assert sim.take_faults() == []
    robot = Robot(sim)
    _, _, _, depth_hm = robot.get_heightmaps()
    valid = utils.valid_depth(depth_hm)
    row, col = (int(v) for v in utils.base_xy_to_pixel(-0.5, 0.0))
    with fault_injection.sim_fault(sim, iteration):
        if primitive == "grasp":
            robot.grasp((0, row, col), valid)
        else:
            robot.push((0, row, col - 30), valid)
    return robot.take_faults()


@pytest.mark.parametrize("primitive", ["push", "grasp"])
def test_a_sound_action_has_no_fault(sim, primitive):
    assert act(sim, primitive) == []


@pytest.mark.parametrize("kind,primitive", [("nan_state", "push"), ("thrown_off", "push"), ("gripper_stuck", "push"),
                                            ("gripper_stuck", "grasp"), ("finger_wedged", "grasp"),
                                            ("not_settled", "push")])
def test_each_injected_fault_is_detected(sim, monkeypatch, kind, primitive):
    monkeypatch.setenv(fault_injection.SIM_FAULT_ENV, f"{kind}@7")
    assert act(sim, primitive, iteration=6) == []  # another iteration: nothing injected
    faults = act(sim, primitive)
    assert kind in {f.kind for f in faults}, faults
    assert all(f.kind in FAULT_KINDS and f.detail for f in faults)
    assert sim.take_faults() == []  # taken once
    # The injection is gone and fires once: the same simulator is sound again.
    assert act(sim, primitive) == []


def test_a_nan_state_is_caught_even_where_mujoco_resets_it(sim):
    sim.load_objects(TWO_BLOCKS)
    sim.take_faults()
    sim.data.qpos[sim._object_qpos[1]] = np.nan
    sim._check_scene("checking")
    assert [f.kind for f in sim.take_faults()] == ["nan_state"]
    sim.load_objects(TWO_BLOCKS)  # a new scene is sound again
    assert sim.take_faults() == []


HEURISTIC_TEST = ["--stage", "push_grasp", "--policy", "heuristic", "--is_testing", "--test_preset_cases",
                  "--test_preset_file", str(CASE), "--grasp_goal_conditioned", "--goal_conditioned",
                  "--max_test_trials", "2", "--max_iterations", "30"]


def run_main(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    logs = tmp_path / "logs"
    code = main.main([*HEURISTIC_TEST, *extra, "--logs_dir", str(logs)])
    sessions = list(logs.iterdir()) if logs.is_dir() else []
    return code, sessions[0] if sessions else None


def test_the_run_records_each_fault_aborts_the_trial_and_goes_on(tmp_path, monkeypatch):
    import evaluate
    from logger import read_log_file

    # NaN at the first action and the gripper stuck at the first action of the second trial
    # (iteration 2): trials with no logged action, so no trials at all; fingers wedged at
    # iteration 4, the third action of a trial: that trial is aborted and left out. The seeded
    # preset jitter makes iteration 4 a grasp.
    monkeypatch.setenv(fault_injection.SIM_FAULT_ENV, "nan_state@0,gripper_stuck@2,finger_wedged@4")
    code, session = run_main(tmp_path)
    assert code == 0
    faults = [json.loads(line) for line in (session / "faults.jsonl").read_text().splitlines()]
    assert [(f["iteration"], f["kind"]) for f in faults] == [(0, "nan_state"), (2, "gripper_stuck"),
                                                            (4, "finger_wedged")]
    assert all(f["doing"].startswith(("push", "grasp")) and f["detail"] for f in faults)
    aborted = read_log_file(session / "transitions" / "aborted-trial.log.txt").ravel().tolist()
    assert aborted == [4]
    result = evaluate.evaluate_session(session)
    assert result["num_trials"] == 2  # the test run played two whole trials besides the aborted one
    actions = read_log_file(session / "transitions" / "executed-action.log.txt")
    assert len(actions) == read_log_file(session / "transitions" / "clearance.log.txt").ravel()[-1]


def test_a_new_scene_that_faults_is_built_again(tmp_path, monkeypatch):
    from simulation.mujoco_sim import MujocoSim

    calls = {"n": 0}
    sound = MujocoSim._physics_faults

    def faulty_twice(self):
        calls["n"] += 1
        return ["NaN in the object positions (injected)"] if calls["n"] in (2, 3) else sound(self)

    # Call 1: the backend's own first scene; 2 and 3: the run's first two attempts at its scene.
    monkeypatch.setattr(MujocoSim, "_physics_faults", faulty_twice)
    code, session = run_main(tmp_path, "--max_test_trials", "1")
    assert code == 0
    faults = [json.loads(line) for line in (session / "faults.jsonl").read_text().splitlines()]
    assert [(f["doing"], f["kind"]) for f in faults] == [("a new scene", "nan_state")] * 2


def test_a_simulator_that_keeps_faulting_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys):
    from simulation.mujoco_sim import MujocoSim

    monkeypatch.setattr(MujocoSim, "_physics_faults", lambda self: ["NaN (injected)"])
    code, session = run_main(tmp_path)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the simulator faulted in 5 new scenes in a row") and "faults.jsonl" in err[-1]
    assert len((session / "faults.jsonl").read_text().splitlines()) >= 5  # (and the first scene the backend built)
