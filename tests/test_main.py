"""The command lines of the paper's README, end to end on MuJoCo with the tiny backbone.

Each run is a few iterations: enough to go through observe -> label -> learn -> choose -> act,
snapshots, logs and resume, with every stage's flags. Runs in-process (torch imports once).
"""
import os
from pathlib import Path

import numpy as np
import pytest

import main
import models
from logger import read_log_file

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CASE = PROJECT_ROOT / "simulation" / "test-cases" / "test-10-obj-00.txt"
GOAL = ["--grasp_goal_conditioned", "--goal_conditioned"]
FAST = ["--backbone", "tiny", "--cpu", "--random_seed", "3"]


def run(tmp_path: Path, *argv: str) -> Path:
    """Run main.main in a fresh logs dir under tmp_path; returns the session directory."""
    logs = tmp_path / "logs"
    before = set(logs.iterdir()) if logs.is_dir() else set()
    code = main.main([*argv, "--logs_dir", str(logs)])
    assert code == 0
    (session,) = set(logs.iterdir()) - before
    return session


def rows(session: Path, name: str) -> np.ndarray:
    return read_log_file(session / "transitions" / f"{name}.log.txt")


def tiny_snapshot(tmp_path: Path, architecture: str) -> Path:
    path = tmp_path / f"{architecture}.pth"
    models.save_snapshot(models.build_model(architecture, "tiny", pretrained="none", seed=0), path)
    return path


def assert_consistent_logs(session: Path, iterations: int) -> None:
    for name in main.PER_ITERATION_LOGS:
        assert len(rows(session, name)) == iterations, name


def test_stage1_grasp_only(tmp_path):
    session = run(tmp_path, "--stage", "grasp_only", "--num_obj", "3", *GOAL, "--goal_obj_idx", "1",
                  "--experience_replay", "--explore_rate_decay", "--save_visualizations",
                  "--max_iterations", "5", "--snapshot_interval", "2", *FAST)
    assert_consistent_logs(session, 5)
    assert set(rows(session, "executed-action")[:, 0]) == {1}  # grasps only
    assert (session / "models" / "snapshot-000004.grasp_only.pth").is_file()
    assert (session / "models" / "snapshot-backup.grasp_only.pth").is_file()
    assert list((session / "visualizations").glob("*"))
    # Grasp labels in stage 1: 0 for a miss, 1 + 0.5 * next goal grasp Q for the goal.
    labels, rewards = rows(session, "label-value").ravel(), rows(session, "reward-value").ravel()
    assert np.all(labels[rewards == 0] == 0)


def test_stage1_with_explore_snapshot(tmp_path):
    """The README's two commands: train the goal-agnostic explore model (no goal flags), then
    stage 1 exploring with it."""
    explore_session = run(tmp_path / "explore", "--stage", "grasp_only", "--num_obj", "3", "--experience_replay",
                          "--explore_rate_decay", "--max_iterations", "3", *FAST)
    explore = explore_session / "models" / "snapshot-backup.grasp_only.pth"
    assert models.describe_snapshot(explore) == ("goal_agnostic", "tiny")
    session = run(tmp_path, "--stage", "grasp_only", "--num_obj", "3", *GOAL, "--goal_obj_idx", "0",
                  "--experience_replay", "--explore_rate_decay", "--grasp_explore", "--load_explore_snapshot",
                  "--explore_snapshot_file", str(explore), "--max_iterations", "5", *FAST)
    assert_consistent_logs(session, 5)
    assert (rows(session, "is-exploit").ravel() == 0).any()  # early on the explore model picks most grasps


def test_goal_conditioned_alone_is_a_goal_agnostic_net_with_goal_rewards(tmp_path):
    """As the paper's code: --grasp_goal_conditioned decides the net's inputs, --goal_conditioned
    masks and rewards grasps by the goal."""
    session = run(tmp_path, "--stage", "grasp_only", "--num_obj", "3", "--goal_conditioned", "--goal_obj_idx", "1",
                  "--max_iterations", "3", *FAST)
    snapshot = session / "models" / "snapshot-backup.grasp_only.pth"
    assert models.describe_snapshot(snapshot)[0] == "goal_agnostic"
    assert set(rows(session, "goal-obj").ravel()) == {1}
    success, grasped = rows(session, "grasp-success").ravel(), rows(session, "grasp-obj").ravel()
    assert np.array_equal(rows(session, "reward-value").ravel(), ((success > 0) & (grasped == 1)).astype(float))


def test_a_training_scene_ends_after_any_successful_grasp(tmp_path):
    """The paper's code starts a new scene after every successful grasp, goal or not."""
    session = run(tmp_path, "--stage", "grasp_only", "--num_obj", "3", *GOAL, "--goal_obj_idx", "0",
                  "--max_iterations", "8", *FAST, "--policy", "learned")
    success = rows(session, "grasp-success").ravel()
    ends = set(rows(session, "clearance").ravel().astype(int)) if (session / "transitions" /
                                                                   "clearance.log.txt").exists() else set()
    for i in np.flatnonzero(success > 0):
        if i + 1 < 8:
            assert i + 1 in ends, (i, ends)


def test_a_snapshot_describes_its_net(tmp_path, capsys):
    """Testing a snapshot needs no --backbone; a flag that contradicts the snapshot is one error."""
    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    test = ["--stage", "push_grasp", "--is_testing", "--test_preset_cases", "--test_preset_file", str(CASE),
            "--max_test_trials", "1", "--max_iterations", "2", "--cpu", "--load_snapshot"]
    argv = [*test, "--snapshot_file", str(snapshot), "--goal_conditioned"]
    run(tmp_path / "ok", *argv)  # neither --backbone nor --grasp_goal_conditioned: the snapshot says
    logs = ["--logs_dir", str(tmp_path / "bad")]
    assert main.main([*argv, "--backbone", "densenet121", *logs]) == 2
    assert "contradicts" in _one_error_line(capsys)
    agnostic = tiny_snapshot(tmp_path, "goal_agnostic")
    assert main.main([*test, "--snapshot_file", str(agnostic), *GOAL, *logs]) == 2
    assert "goal-agnostic" in _one_error_line(capsys)
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_stage2_push_only(tmp_path):
    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    # An untrained net's grasp Q is arbitrary: a high Qg makes the episode push until its length cap.
    session = run(tmp_path, "--stage", "push_only", "--num_obj", "6", "--grasp_reward_threshold", "100", *GOAL,
                  "--goal_obj_idx", "2", "--experience_replay", "--explore_rate_decay", "--load_snapshot",
                  "--snapshot_file", str(snapshot), "--max_push_episode_length", "2", "--max_iterations", "5", *FAST)
    assert_consistent_logs(session, 5)
    primitives = rows(session, "executed-action")[:, 0]
    # Episodes of 2 pushes then a grasp (unless a scene reset cut one short).
    assert list(primitives[:3]) == [0, 0, 1]
    # Push rewards follow SPEC 5: only -0.5, 0 or 0.5.
    rewards = rows(session, "reward-value").ravel()
    assert set(rewards[primitives == 0]) <= {-0.5, 0.0, 0.5}


def test_push_only_can_explore_with_random_policy_pushes(tmp_path):
    """--push_explore_policy random: exploring pushes come from the learned policy's own push set
    (free space near the goal), any rotation, and are not the heuristic's."""
    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    session = run(tmp_path, "--stage", "push_only", "--num_obj", "6", "--grasp_reward_threshold", "100", *GOAL,
                  "--goal_obj_idx", "2", "--experience_replay", "--explore_rate_decay", "--load_snapshot",
                  "--snapshot_file", str(snapshot), "--push_explore_policy", "random", "--max_iterations", "8", *FAST)
    assert_consistent_logs(session, 8)
    actions = rows(session, "executed-action")
    explored = (actions[:, 0] == 0) & (rows(session, "is-exploit").ravel() == 0)
    assert explored.any()  # at iteration < 8 the exploration rate is about 0.5
    assert np.all(rows(session, "use-heuristic").ravel()[explored] == 0)
    # Each exploring push starts where the policy may push: outside every object's footprint.
    import cv2

    for iteration in np.flatnonzero(explored):
        heightmap = session / "data" / "depth-heightmaps" / f"{iteration:06d}.0.depth.png"
        height_m = cv2.imread(str(heightmap), cv2.IMREAD_UNCHANGED).astype(np.float64) * 1e-5
        row, col = int(actions[iteration, 2]), int(actions[iteration, 3])
        assert height_m[row, col] <= 0.02


@pytest.mark.parametrize("half", ["grasp", "push"])
def test_stage3_alternating_halves(tmp_path, half):
    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    extra = ["--alternating_training"] if half == "grasp" else ["--grasp_reward_threshold", "1.8"]
    session = run(tmp_path, "--stage", "push_only", *extra, "--num_obj", "6", *GOAL, "--goal_obj_idx", "1",
                  "--experience_replay", "--explore_rate_decay", "--load_snapshot", "--snapshot_file", str(snapshot),
                  "--max_iterations", "5", *FAST)
    assert_consistent_logs(session, 5)


def test_testing_on_a_preset_case_and_evaluate(tmp_path):
    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    session = run(tmp_path, "--stage", "push_grasp", "--num_obj", "10", "--experience_replay", "--explore_rate_decay",
                  "--is_testing", "--test_preset_cases", "--test_preset_file", str(CASE), "--load_snapshot",
                  "--snapshot_file", str(snapshot), "--save_visualizations", *GOAL, "--max_test_trials", "1",
                  "--max_iterations", "5", *FAST)
    iterations = len(rows(session, "executed-action"))
    assert 1 <= iterations <= 5
    goal = int(open(CASE).read().split("goal_obj_idx:")[1].split()[0])
    assert set(rows(session, "goal-obj").ravel()) == {goal}
    # Testing writes no snapshot (it learns within a trial only).
    assert not list((session / "models").glob("snapshot-*.pth"))
    # Learned pushes end, at full length, 6 cm inside the workspace (--push_end_margin_m).
    inside = __import__("utils").push_end_inside(224, 65, 30)
    pushes = [a for a in rows(session, "executed-action").astype(int) if a[0] == 0]
    assert all(inside[rot, row, col] for _, rot, row, col in pushes)


def test_default_on_switches_turn_off_in_underscore_style():
    assert main.parse_config([]).test_learning and main.parse_config([]).goal_relabelling
    assert not main.parse_config(["--no_test_learning"]).test_learning
    assert not main.parse_config(["--no_goal_relabelling"]).goal_relabelling  # reproduce.py's ablation
    assert not main.parse_config(["--no-goal_relabelling"]).goal_relabelling


@pytest.mark.parametrize("test_learning", [True, False])
def test_testing_learns_within_a_trial_only(tmp_path, monkeypatch, test_learning):
    """--test_learning (the paper's code): every labelled test action is back-propagated, nothing
    is stored or replayed, and each trial starts again from the snapshot's weights."""
    import torch
    from trainer import Trainer

    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    calls = {"backprop": 0, "restore": 0, "replay": 0}
    for name in calls:
        original = getattr(Trainer, {"restore": "restore_snapshot"}.get(name, name))

        def counted(self, *a, _name=name, _original=original, **kw):
            calls[_name] += 1
            return _original(self, *a, **kw)
        monkeypatch.setattr(Trainer, {"restore": "restore_snapshot"}.get(name, name), counted)
    cfg = main.parse_config(["--stage", "push_grasp", *GOAL, "--is_testing", "--test_preset_cases",
                             "--test_preset_file", str(CASE), "--load_snapshot", "--snapshot_file", str(snapshot),
                             "--experience_replay", "--max_test_trials", "2", "--max_iterations", "6",
                             "--logs_dir", str(tmp_path / "logs"), *FAST]
                            + ([] if test_learning else ["--no_test_learning"]))
    runner = main.Runner(cfg)
    try:
        runner.run()
        labelled = len(rows(Path(runner.logger.session_directory), "executed-action"))
        assert calls["backprop"] == (labelled if test_learning else 0)
        assert calls["replay"] == 0 and len(runner.trainer.memory) == 0
        assert calls["restore"] == (runner.progress.trials_finished if test_learning else 0)
        reference = models.build_model("goal_conditioned", "tiny", pretrained="none", seed=0).state_dict()

        def unchanged() -> bool:
            return all(torch.equal(v, reference[k]) for k, v in runner.trainer.model.state_dict().items())
        if runner.progress.trials_finished == 0:  # the run stopped inside its first trial
            assert unchanged() != test_learning
        runner._end_trial("test")
        assert unchanged()  # the trial's lessons are gone
    finally:
        runner.close()


@pytest.mark.parametrize("argv", [["--goal_grasp_q_threshold", "nan"], ["--max_trial_actions", "-1"],
                                  ["--push_end_margin_m", "0.5"], ["--max_pushes_before_grasp", "-1"]])
def test_test_policy_options_are_checked(argv):
    from validation import UserError

    with pytest.raises(UserError):
        main.check_config(main.parse_config(argv))


def test_heuristic_policy_completes_a_preset_trial(tmp_path):
    session = run(tmp_path, "--stage", "push_grasp", "--policy", "heuristic", "--is_testing", "--test_preset_cases",
                  "--test_preset_file", str(CASE), *GOAL, "--max_test_trials", "1", "--max_iterations", "15")
    import evaluate

    result = evaluate.evaluate_session(session)
    assert result["completion_pct"] == 100.0 and result["num_trials"] == 1


def test_resume_continues_iterations_without_gaps(tmp_path):
    common = ["--stage", "grasp_only", "--num_obj", "3", *GOAL, "--goal_obj_idx", "0", "--experience_replay",
              "--explore_rate_decay", *FAST]
    session = run(tmp_path, *common, "--max_iterations", "3")
    progress_before = (session / "models" / "state.grasp_only" / "progress.json").read_text()
    assert '"iteration": 3' in progress_before
    code = main.main([*common, "--max_iterations", "6", "--continue_logging", "--logging_directory", str(session)])
    assert code == 0
    assert_consistent_logs(session, 6)
    episodes = rows(session, "episode").ravel()
    assert np.all(np.diff(episodes) >= 0)  # counters continued, not restarted
    images = sorted(p.name for p in (session / "data" / "color-heightmaps").iterdir())
    assert images == [f"{i:06d}.0.color.png" for i in range(6)]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    logs = ["--logs_dir", str(tmp_path / "logs")]
    bad_case = tmp_path / "bad.txt"
    bad_case.write_text("4.obj 0.1 0.2 nope -0.5 0 0.03 0 0 0\n")
    assert main.main(["--is_testing", "--test_preset_cases", "--test_preset_file", str(bad_case), "--policy",
                      "heuristic", *GOAL, *logs]) == 2
    assert "bad.txt" in _one_error_line(capsys)
    assert main.main(["--is_testing", "--test_preset_cases", "--test_preset_file", str(CASE), "--policy", "heuristic",
                      *GOAL, "--goal_obj_idx", "10", *logs]) == 2
    assert "goal index 10" in _one_error_line(capsys)
    assert main.main(["--load_snapshot", "--snapshot_file", str(tmp_path / "missing.pth"), *logs]) == 2
    assert "missing.pth" in _one_error_line(capsys)
    wrong = tiny_snapshot(tmp_path, "goal_agnostic")
    assert main.main(["--stage", "grasp_only", *GOAL, "--load_snapshot", "--snapshot_file", str(wrong),
                      "--max_iterations", "1", *FAST, *logs]) == 2
    _one_error_line(capsys)
    assert main.main(["--continue_logging", "--logging_directory", str(tmp_path / "nowhere"), *logs]) == 2
    _one_error_line(capsys)
    assert main.main(["--replay_steps", "0", *logs]) == 2
    assert "--replay_steps" in _one_error_line(capsys)


def test_goal_agnostic_grasp_only_rewards_any_grasp(tmp_path):
    """The goal-agnostic stage 1 trains the explore model: every held grasp earns reward 1."""
    session = run(tmp_path, "--stage", "grasp_only", "--num_obj", "3", "--max_iterations", "4", *FAST)
    rewards = rows(session, "reward-value").ravel()
    assert np.array_equal(rewards, rows(session, "grasp-success").ravel().astype(float))
    assert set(rows(session, "goal-obj").ravel()) == {-1}


def test_resumed_test_run_marks_the_interrupted_trial_aborted(tmp_path):
    import evaluate

    common = ["--stage", "push_grasp", "--policy", "heuristic", "--is_testing", "--test_preset_cases",
              "--test_preset_file", str(CASE), *GOAL, "--max_test_trials", "1",
              "--preset_jitter_mm", "0", "--preset_jitter_deg", "0"]  # the file as made: the heuristic clears it
    session = run(tmp_path, *common, "--max_iterations", "2")
    assert not (session / "transitions" / "clearance.log.txt").exists()
    assert main.main([*common, "--continue_logging", "--logging_directory", str(session)]) == 0
    assert rows(session, "aborted-trial").ravel().tolist() == [2]
    result = evaluate.evaluate_session(session)
    assert result["num_trials"] == 1 and result["completion_pct"] == 100.0


def test_same_seed_same_run_on_the_cpu(tmp_path):
    argv = ["--stage", "grasp_only", "--num_obj", "3", *GOAL, "--goal_obj_idx", "0", "--experience_replay",
            "--max_iterations", "3", *FAST]
    first = run(tmp_path / "a", *argv)
    second = run(tmp_path / "b", *argv)
    for name in ("executed-action", "label-value", "predicted-value", "grasp-obj"):
        assert np.array_equal(rows(first, name), rows(second, name)), name


def _first_heightmaps_of_trials(session: Path) -> list[np.ndarray]:
    from logger import read_depth_png

    starts = [0] + [int(v) for v in rows(session, "clearance").ravel()[:-1]]
    data = session / "data" / "depth-heightmaps"
    return [read_depth_png(data / f"{start:06d}.0.depth.png", 100000) for start in starts]


def test_jittered_trials_differ_and_repeat_under_one_seed(tmp_path):
    """Each test trial starts from the case moved by a seeded offset: two trials start from
    different scenes, and the same seed gives the same scenes again (and 0 jitter the file)."""
    argv = ["--stage", "grasp_only", "--policy", "heuristic", *GOAL, "--is_testing", "--test_preset_cases",
            "--test_preset_file", str(CASE), "--max_test_trials", "2", "--max_goal_grasp_failures", "1",
            "--random_seed", "11"]
    first = _first_heightmaps_of_trials(run(tmp_path / "a", *argv))
    again = _first_heightmaps_of_trials(run(tmp_path / "b", *argv))
    assert len(first) == 2
    assert np.abs(first[0] - first[1]).max() > 0.005  # different starting scenes
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    exact = _first_heightmaps_of_trials(run(tmp_path / "c", *argv, "--preset_jitter_mm", "0",
                                            "--preset_jitter_deg", "0"))
    assert np.array_equal(exact[0], exact[1])


def test_stage1_can_explore_with_the_depth_heuristic(tmp_path):
    session = run(tmp_path, "--stage", "grasp_only", "--num_obj", "3", *GOAL, "--goal_obj_idx", "0",
                  "--experience_replay", "--explore_rate_decay", "--grasp_explore", "--grasp_explore_policy",
                  "heuristic", "--max_iterations", "4", *FAST)
    assert_consistent_logs(session, 4)
    heuristic = rows(session, "use-heuristic").ravel() > 0
    assert heuristic.any() and np.all(rows(session, "is-exploit").ravel()[heuristic] == 0)


def test_overlapped_physics_gives_the_sequential_labels(tmp_path, monkeypatch):
    """--overlap_learning runs an action's physics in a thread while the previous transition is
    back-propagated and replayed: every logged row must equal the one-after-the-other loop's."""
    import threading

    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    argv = ["--stage", "push_only", "--num_obj", "6", *GOAL, "--goal_obj_idx", "1", "--experience_replay",
            "--explore_rate_decay", "--load_snapshot", "--snapshot_file", str(snapshot),
            "--max_push_episode_length", "2", "--grasp_reward_threshold", "100", "--max_iterations", "7", *FAST]
    threads_that_acted = []
    original_push = main.Robot.push

    def push(self, *args, **kwargs):
        threads_that_acted.append(threading.current_thread().name)
        return original_push(self, *args, **kwargs)

    monkeypatch.setattr(main.Robot, "push", push)
    sequential = run(tmp_path / "sequential", *argv, "--no_overlap_learning")
    assert not any(name.startswith("physics") for name in threads_that_acted)
    threads_that_acted.clear()
    overlapped = run(tmp_path / "overlapped", *argv, "--overlap_learning")
    assert any(name.startswith("physics") for name in threads_that_acted)
    for name in main.PER_ITERATION_LOGS:
        assert np.array_equal(rows(sequential, name), rows(overlapped, name)), name
    labels = rows(overlapped, "label-value").ravel()
    assert len(labels) == 7 and np.isfinite(labels).all()


def test_overlap_is_on_where_a_core_is_free(monkeypatch):
    import torch

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    assert not main.overlap_pays("cpu") and main.overlap_pays("cuda")
    monkeypatch.setattr(torch, "get_num_threads", lambda: max(cores - 1, 0))
    assert main.overlap_pays("cpu")


def test_a_test_trial_grasps_after_the_push_cap(tmp_path):
    """--max_pushes_before_grasp 2 with a Q threshold no net reaches: two pushes, then a grasp."""
    snapshot = tiny_snapshot(tmp_path, "goal_conditioned")
    session = run(tmp_path, "--stage", "push_grasp", *GOAL, "--is_testing", "--test_preset_cases",
                  "--test_preset_file", str(CASE), "--load_snapshot", "--snapshot_file", str(snapshot),
                  "--goal_grasp_q_threshold", "10", "--max_pushes_before_grasp", "2", "--max_iterations", "5",
                  "--no_test_learning", *FAST)
    primitives = list(rows(session, "executed-action")[:, 0].astype(int))
    trial_ends = [int(v) for v in rows(session, "clearance").ravel()] if (session / "transitions" /
                                                                         "clearance.log.txt").exists() else []
    assert primitives[:3] == [0, 0, 1] and (len(primitives) < 5 or primitives[3:5] == [0, 0] or trial_ends)
