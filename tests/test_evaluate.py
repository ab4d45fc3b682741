"""Tests of evaluate.py on a hand-made session whose metrics are derived by hand below."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import evaluate  # noqa: E402
from logger import Logger  # noqa: E402
from utils import UserError  # noqa: E402

PUSH, GRASP = 0, 1
GOAL = 4
NONE = -1

# The session, one tuple (primitive, grasp-obj) per executed action; the goal is object 4.
ROWS = [
    # trial 0, rows 0-2: push, failed grasp, goal grasp -> completed, MN 3, GS 1/2
    (PUSH, NONE), (GRASP, NONE), (GRASP, GOAL),
    # trial 1, rows 3-14: 5 failed grasps, a push (does not break the run), 5 more failed
    # grasps of which row 11 grasps the non-goal object 2 (a failed goal grasp): the 10th
    # consecutive failure is row 13, so the goal grasp at row 14 comes too late -> failed.
    (GRASP, NONE), (GRASP, NONE), (GRASP, NONE), (GRASP, NONE), (GRASP, NONE),
    (PUSH, NONE),
    (GRASP, NONE), (GRASP, NONE), (GRASP, 2), (GRASP, NONE), (GRASP, NONE),
    (GRASP, GOAL),
    # trial 2, rows 15-18: three pushes free the goal, then one goal grasp -> MN 4, GS 1/1
    (PUSH, NONE), (PUSH, NONE), (PUSH, NONE), (GRASP, GOAL),
    # (an empty trial: two trial ends at iteration 19)
    # trial 3, rows 19-21: grasps non-goal object 7, push, goal grasp -> MN 3, GS 1/2
    (GRASP, 7), (PUSH, NONE), (GRASP, GOAL),
    # trial 4, rows 22-24: ended without the goal (e.g. goal left the workspace) -> not completed
    (PUSH, NONE), (PUSH, NONE), (GRASP, NONE),
    # unfinished trailing trial, rows 25-26: ignored
    (PUSH, NONE), (GRASP, GOAL),
]
CLEARANCE = [3, 15, 19, 19, 22, 25]


def write_session(directory: Path, rows=ROWS, clearance=CLEARANCE, with_success_log=True,
                  goal: int = GOAL) -> Path:
    """Write the logs through the real Logger, as main.py would."""
    lg = Logger(logging_directory=directory, verbose=False)
    for i, (prim, obj) in enumerate(rows):
        lg.append('executed-action', [prim, i % 16, 100, 100])
        lg.append('grasp-obj', obj)
        lg.append('goal-obj', goal)
        if with_success_log:
            lg.append('grasp-success', int(prim == GRASP and obj >= 0))
    for c in clearance:
        lg.append('clearance', c)
    return directory


def test_goal_oriented_metrics_by_hand(tmp_path):
    r = evaluate.evaluate_session(write_session(tmp_path / 's'), num_obj_complete=1)
    assert r['mode'] == 'goal-oriented'
    assert r['num_trials'] == 5          # trials 0-4; the empty one and the unfinished one left out
    assert r['num_empty_trials'] == 1
    assert r['unfinished_trial_actions'] == 2  # rows 25, 26
    assert any('unfinished' in n for n in r['notes'])

    trials = r['trials']
    assert [t['completed'] for t in trials] == [True, False, True, True, False]
    assert [t['actions'] for t in trials] == [3, 12, 4, 3, 3]
    assert [t['pushes'] for t in trials] == [1, 1, 3, 1, 2]
    assert [t['grasps'] for t in trials] == [2, 11, 1, 2, 1]
    assert [t['successful_grasps'] for t in trials] == [1, 2, 1, 2, 0]
    assert [t['target_grasps'] for t in trials] == [1, 1, 1, 1, 0]
    assert trials[1]['failed_row'] == 13
    assert [t['motion_number'] for t in trials] == [3, None, 4, 3, None]
    assert [t['goal_grasp_success_pct'] for t in trials] == [50.0, None, 100.0, 50.0, None]

    # completion: trials 0, 2, 3 of 5 -> 60.0 %
    assert r['completion_pct'] == pytest.approx(60.0)
    # GS: mean(1/2, 1/1, 1/2) = 2/3 -> 66.7 %
    assert r['goal_grasp_success_pct'] == pytest.approx(200.0 / 3)
    # MN: mean(3, 4, 3) = 10/3 = 3.33
    assert r['motion_number'] == pytest.approx(10.0 / 3)
    # VPG clearance: trials with >= 1 successful grasp of anything: 0, 1, 2, 3 -> 4/5 = 80 %
    assert r['clearance_pct'] == pytest.approx(80.0)
    # VPG grasp success over cleared trials: mean(1/2, 2/11, 1/1, 2/2) = (0.5 + 2/11 + 2) / 4
    assert r['grasp_success_pct'] == pytest.approx(100 * (0.5 + 2 / 11 + 2) / 4)  # 67.0 %
    # pooled: 6 successful grasps / 17 attempts
    assert r['grasp_success_all_pct'] == pytest.approx(100 * 6 / 17)
    # action efficiency: mean(1/3, 1/12, 1/4, 1/3) = (4 + 1 + 3 + 4) / 12 / 4 = 1/4 -> 25.0 %
    assert r['action_efficiency_pct'] == pytest.approx(25.0)
    # grasp share of actions: mean(2/3, 11/12, 1/4, 2/3) = (8 + 11 + 3 + 8) / 12 / 4 -> 62.5 %
    assert r['grasp_to_push_ratio_pct'] == pytest.approx(62.5)

    text = evaluate.format_report(r)
    assert '60.0 %' in text and '66.7 %' in text and '3.33' in text


def test_clearance_mode_n2_by_hand(tmp_path):
    r = evaluate.evaluate_session(write_session(tmp_path / 's'), num_obj_complete=2)
    assert r['mode'] == 'clearance'
    # Any successful grasp counts and resets the failure run:
    # trial 0: 1 success -> no. trial 1: failures rows 3-7, 9, 10 (7), success row 11, failures
    # 12, 13 (2), success row 14 -> completed at offset 11: MN 12, GS 2/11. trial 2: 1 success.
    # trial 3: successes rows 19, 21 -> MN 3, GS 2/2. trial 4: none.
    assert [t['completed'] for t in r['trials']] == [False, True, False, True, False]
    assert r['completion_pct'] == pytest.approx(40.0)                  # 2/5
    assert r['motion_number'] == pytest.approx(7.5)                     # (12 + 3) / 2
    assert r['goal_grasp_success_pct'] == pytest.approx(100 * (2 / 11 + 1) / 2)
    assert r['clearance_pct'] == pytest.approx(40.0)                   # same trials as completion
    assert r['action_efficiency_pct'] == pytest.approx(100 * (2 / 12 + 2 / 3) / 2)  # 41.7 %


def test_goal_agnostic_rows_accept_any_object(tmp_path):
    # goal-obj -1 (main.py's value without a goal): with N = 1 any successful grasp completes.
    # trial 0 completes at row 2 (MN 3, GS 1/2); trial 1 at row 11, its first success after 7
    # failed grasps (rows 3-7, 9, 10) and a push: MN 9, GS 1/8; trial 2 at row 18 (MN 4, GS 1/1);
    # trial 3 at row 19 (MN 1, GS 1/1); trial 4 never. Completion 4/5, MN 17/4,
    # GS mean(1/2, 1/8, 1, 1) = 2.625 / 4 = 65.625 %.
    r = evaluate.evaluate_session(write_session(tmp_path / 's', goal=-1))
    assert [t['motion_number'] for t in r['trials']] == [3, 9, 4, 1, None]
    assert r['completion_pct'] == pytest.approx(80.0)
    assert r['motion_number'] == pytest.approx(17 / 4)
    assert r['goal_grasp_success_pct'] == pytest.approx(65.625)
    assert any('goal-obj -1' in n for n in r['notes'])


def test_grasp_success_log_overrides_grasp_obj(tmp_path):
    # Without grasp-success, success is grasp-obj >= 0; with it, the log decides.
    rows = [(GRASP, GOAL)]
    d = write_session(tmp_path / 'a', rows=rows, clearance=[1], with_success_log=False)
    assert evaluate.evaluate_session(d)['completion_pct'] == 100.0
    lg = Logger(continue_logging=True, logging_directory=d, verbose=False)
    lg.append('grasp-success', 0)  # the gripper reported nothing held
    r = evaluate.evaluate_session(d)
    assert r['success_source'] == 'grasp-success'
    assert r['completion_pct'] == 0.0 and r['goal_grasp_success_pct'] is None


def test_max_goal_grasp_failures_option(tmp_path):
    d = write_session(tmp_path / 's')
    # With a limit of 2, trial 0 (1 failure, then the goal) still completes, trial 3 too
    # (non-goal grasp, then goal), trial 2 too; trial 1 fails at row 4 anyway.
    r = evaluate.evaluate_session(d, max_goal_grasp_failures=2)
    assert [t['completed'] for t in r['trials']] == [True, False, True, True, False]
    assert r['trials'][1]['failed_row'] == 4
    # With 1, a single failed grasp ends a trial: only trial 2 (one grasp, the goal) completes.
    r = evaluate.evaluate_session(d, max_goal_grasp_failures=1)
    assert [t['completed'] for t in r['trials']] == [False, False, True, False, False]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / 'evaluate.py'), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_json_and_plot(tmp_path):
    d = write_session(tmp_path / 's')
    p = run_cli('--session_directory', str(d), '--num_obj_complete', '1')
    assert p.returncode == 0, p.stderr
    assert 'Completion' in p.stdout and '60.0 %' in p.stdout
    data = json.loads((d / 'evaluation.json').read_text())
    assert data['completion_pct'] == pytest.approx(60.0)
    assert data['motion_number'] == pytest.approx(10 / 3)
    assert len(data['trials']) == 5
    png = (d / 'evaluation.png').read_bytes()
    assert png.startswith(b'\x89PNG')

    out = tmp_path / 'elsewhere.json'
    p = run_cli('--session_directory', str(d), '--json', str(out), '--no_plot')
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())['num_trials'] == 5


def test_cli_missing_directory_one_line_exit_2(tmp_path):
    p = run_cli('--session_directory', str(tmp_path / 'missing'), '--num_obj_complete', '1')
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and 'not found' in lines[0]
    assert 'Traceback' not in p.stderr


def test_cli_bad_logs_exit_2(tmp_path):
    d = write_session(tmp_path / 's')
    Logger(continue_logging=True, logging_directory=d, verbose=False).append('goal-obj', GOAL)
    p = run_cli('--session_directory', str(d))
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and 'inconsistent' in p.stderr

    (d / 'transitions' / 'executed-action.log.txt').unlink()
    assert evaluate.main(['--session_directory', str(d), '--no_plot']) == 2

    with pytest.raises(UserError, match='clearance'):
        evaluate.evaluate_logs(np.array([1.0]), np.array([-1.0]), np.array([2]), goal_obj=np.array([4.0]))


def test_zero_finished_trials_reports_null(tmp_path, capsys):
    d = write_session(tmp_path / 's', rows=ROWS[:3], clearance=[])  # no clearance log at all
    assert not (d / 'transitions' / 'clearance.log.txt').exists()
    assert evaluate.main(['--session_directory', str(d)]) == 0
    out = capsys.readouterr().out
    assert 'no finished trials' in out
    data = json.loads((d / 'evaluation.json').read_text())
    assert data['num_trials'] == 0 and data['completion_pct'] is None
    assert data['motion_number'] is None and data['unfinished_trial_actions'] == 3
    assert not (d / 'evaluation.png').exists()


def test_aborted_trials_are_left_out():
    # Trial 0: rows 0-1, push then goal grasp (complete). Trial 1: rows 2-3, aborted after two
    # failed grasps (a test run interrupted and resumed). Trial 2: row 4, a goal grasp.
    primitive = np.array([0, 1, 1, 1, 1])
    grasp_obj = np.array([-1, 3, -1, -1, 3])
    goal_obj = np.array([3, 3, 3, 3, 3])
    clearance = np.array([2, 4, 5])
    with_abort = evaluate.evaluate_logs(primitive, grasp_obj, clearance, goal_obj=goal_obj, aborted=np.array([4]))
    assert with_abort["num_trials"] == 2 and with_abort["completion_pct"] == 100.0
    assert with_abort["motion_number"] == 1.5  # (2 + 1) / 2
    without = evaluate.evaluate_logs(primitive, grasp_obj, clearance, goal_obj=goal_obj)
    assert without["num_trials"] == 3 and without["completion_pct"] == pytest.approx(200 / 3)


def test_paper_code_figures_beside_ours():
    """The paper's evaluate.py counts otherwise: grasp-less trials leave the denominator, no
    failure cap, success = any grasp rewarded >= 0.5. Three trials:
    A: miss, goal (2 actions); B: one push, no grasp; C: 10 misses then the goal."""
    primitive = [1, 1] + [0] + [1] * 11
    goal = [3] * 14
    grasp_obj = [-1, 3] + [-1] + [-1] * 10 + [3]
    reward = [0, 1.5] + [-0.5] + [0] * 10 + [1.5]
    clearance = [2, 3, 14]
    r = evaluate.evaluate_logs(primitive, grasp_obj, clearance, goal_obj=goal, reward=reward,
                               max_goal_grasp_failures=10)
    # Ours: only A completes (C failed at its 10th miss); B counts, as not completed.
    assert r['completion_pct'] == pytest.approx(100 / 3) and r['goal_grasp_success_pct'] == 50.0
    assert r['motion_number'] == 2
    # The paper's code: B dropped, C completes (1 success in 11 grasps, 11 actions).
    assert r['paper_code_num_trials'] == 2 and r['paper_code_completion_pct'] == 100.0
    assert r['paper_code_goal_grasp_success_pct'] == pytest.approx((50 + 100 / 11) / 2)
    assert r['paper_code_motion_number'] == pytest.approx((2 + 11) / 2)
    # The first grasp took the goal in none of the trials with a grasp.
    assert r['first_grasp_goal_success_pct'] == 0.0
    assert 'Paper code: completion' in evaluate.format_report(r)


def test_motion_split_adds_up_to_mn_by_hand(tmp_path):
    # The goal's occupancy before each row; only the completed trials' pushes matter: row 0
    # (trial 0), rows 15-17 (trial 2), row 20 (trial 3). NaN (goal unseen) counts as crowded;
    # exactly 0.3 is free (the test rule pushes only above 0.3).
    occupancy = {0: 0.5, 15: 0.6, 16: float('nan'), 17: 0.2, 20: 0.3}
    d = write_session(tmp_path / 's')
    lg = Logger(logging_directory=d, continue_logging=True, verbose=False)
    for i in range(len(ROWS)):
        lg.append('occupancy', [occupancy.get(i, 0.9), 0.0])
    r = evaluate.evaluate_session(d)
    per_trial = [t.get('motion_split') for t in r['trials']]
    assert per_trial == [{'pushes_goal_crowded': 1, 'pushes_goal_free': 0, 'grasps': 2}, None,
                         {'pushes_goal_crowded': 2, 'pushes_goal_free': 1, 'grasps': 1},
                         {'pushes_goal_crowded': 0, 'pushes_goal_free': 1, 'grasps': 2}, None]
    split = r['motion_split']
    assert split['pushes_goal_crowded'] == pytest.approx(1.0)
    assert split['pushes_goal_free'] == pytest.approx(2 / 3)
    assert split['grasps'] == pytest.approx(5 / 3)
    assert sum(split[k] for k in ('pushes_goal_crowded', 'pushes_goal_free', 'grasps')) == \
        pytest.approx(r['motion_number'])
    assert '1.00 pushes at occupancy > 0.3 + 0.67 pushes at <= 0.3 + 1.67 grasps' in evaluate.format_report(r)


def test_motion_split_absent_without_occupancy_log(tmp_path):
    r = evaluate.evaluate_session(write_session(tmp_path / 's'))
    assert r['motion_split'] is None
    assert 'MN split' in evaluate.format_report(r)
