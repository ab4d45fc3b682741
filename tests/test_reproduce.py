"""reproduce.py's plan, resume bookkeeping and report, without running the long steps."""
import argparse
import json
from pathlib import Path

import pytest

import reproduce

PROJECT_CASES = Path(__file__).resolve().parents[1] / "simulation" / "test-cases"


def _args(tmp_path: Path, **kw) -> argparse.Namespace:
    base = dict(run_dir=tmp_path / "run", cases=str(PROJECT_CASES), trials=30, backbone="tiny", seed=1, scale=1.0,
                learning_rate=1e-4, replay_candidates="paper", stage1_explore="model", replay_steps=1, archive=None,
                alternating_grasp_labels="grasp_only", test_learning=True)
    return argparse.Namespace(**{**base, **kw})


def test_the_plan_trains_in_the_papers_order_then_tests_every_row_on_every_case(tmp_path):
    steps = reproduce.build_steps(_args(tmp_path))
    names = [s.name for s in steps]
    assert names[:5] == ["explore", "stage1", "stage2", "stage3-grasp", "stage3-push"]
    tests = [s for s in steps if s.kind == "test"]
    assert len(tests) == len(reproduce.ROWS) * 10 and all(s.budget == 30 for s in tests)
    assert {s.row for s in tests} == {row for row, _ in reproduce.ROWS}
    # The ablations after Table I, on the same seeds.
    assert names[-4:] == ["stage1-norelabel", "stage1-seed2", "stage1-norelabel-seed2", "stage2-change"]
    by = {s.name: s for s in steps}
    assert "--no_goal_relabelling" in by["stage1-norelabel"].argv
    assert by["stage2-change"].argv[by["stage2-change"].argv.index("--push_reward") + 1] == "change"
    assert "--alternating_training" in by["stage3-grasp"].argv and "--alternating_training" not in by["stage3-push"].argv
    grasp_half = by["stage3-grasp"].argv
    capped = by["test-full-push-cap-" + tests[0].case].argv
    assert capped[capped.index("--max_pushes_before_grasp") + 1] == "5"
    assert not any("--max_pushes_before_grasp" in s.argv for s in tests if s.row != "full-push-cap")
    low_q = by["test-full-q1.3-" + tests[0].case].argv
    assert low_q[low_q.index("--goal_grasp_q_threshold") + 1] == "1.3"
    assert not any("--goal_grasp_q_threshold" in s.argv for s in tests if s.row != "full-q1.3")
    assert grasp_half[grasp_half.index("--alternating_grasp_labels") + 1] == "grasp_only"
    # The learned rows learn within each trial (the paper's code); the heuristic rows have no net.
    assert not any("--no_test_learning" in s.argv for s in tests)
    frozen = reproduce.build_steps(_args(tmp_path, test_learning=False))
    assert {s.row for s in frozen if "--no_test_learning" in s.argv} == {"grasping-only", "no-alternating", "full",
                                                                          "full-push-cap", "full-q1.3"}
    # Each row meets the same jittered scenes of a case: the same seed per case across rows.
    seeds = {}
    for s in tests:
        seeds.setdefault(s.case, set()).add(s.argv[s.argv.index("--random_seed") + 1])
    assert all(len(v) == 1 for v in seeds.values())
    # A trial that keeps pushing fails at the per-trial cap instead of eating the case's budget.
    assert all(s.argv[s.argv.index("--max_trial_actions") + 1] == str(reproduce.MAX_ACTIONS_PER_TRIAL) for s in tests)
    # Each stage loads the previous stage's snapshot.
    assert by["stage2"].snapshot_from == ["stage1"] and by["stage3-push"].snapshot_from == ["stage3-grasp"]


def test_scale_shrinks_every_training_budget(tmp_path):
    small = {s.name: s.budget for s in reproduce.build_steps(_args(tmp_path, scale=0.01)) if s.kind == "train"}
    assert small["stage1"] == 6 and small["stage2"] == 15 and min(small.values()) >= 4


def test_progress_comes_from_the_step_logs(tmp_path):
    args = _args(tmp_path)
    step = next(s for s in reproduce.build_steps(args) if s.name == "stage1")
    assert reproduce.step_progress(args.run_dir, step) == 0
    transitions = reproduce.step_dir(args.run_dir, step) / "logs" / "2026-12-01.10:00:00" / "transitions"
    transitions.mkdir(parents=True)
    (transitions / "executed-action.log.txt").write_text("1 0 3 4\n" * 7 + "1 0 3")  # a torn last line
    assert reproduce.step_progress(args.run_dir, step) == 7  # the torn line is not a row
    (reproduce.step_dir(args.run_dir, step) / "done.json").write_text("{}")
    assert reproduce.is_done(args.run_dir, step) and reproduce.step_progress(args.run_dir, step) == step.budget


def test_table_markdown_has_every_measured_row(tmp_path):
    cell = {"num_trials": 30, "completion_pct": 90.0, "goal_grasp_success_pct": 80.0, "motion_number": 3.1,
            "paper_code_completion_pct": 95.0, "paper_code_goal_grasp_success_pct": 81.0,
            "first_grasp_goal_success_pct": 0.0,
            "motion_split": {"pushes_goal_crowded": 1.0, "pushes_goal_free": 0.5, "grasps": 1.6}}
    table = {"rows": {"full": {"description": "", "cases": {"c0": cell}, **cell}}, "cases": ["c0"],
             "trials_per_case": 30, "learning": {"stage1": {"episodes": 600, "first_episode_at_80pct_last100": None,
                                                            "final_goal_success_ma_pct": 52.0, "final_grasp_q_ma": 2.1}}}
    text = reproduce.format_table(table)
    assert "| full | 90.0 | 80.0 | 3.10 |" in text and "not reached" in text and "| c0 |" in text
    assert "| 0.0 | 1.00 / 0.50 / 1.60 |" in text  # the MN split, after the first-grasp column


def test_row_split_is_the_case_mean_only_when_every_case_has_one():
    a = {"pushes_goal_crowded": 2.0, "pushes_goal_free": 1.0, "grasps": 1.0}
    b = {"pushes_goal_crowded": 1.0, "pushes_goal_free": 0.0, "grasps": 2.0}
    assert reproduce._mean_split([a, b]) == {"pushes_goal_crowded": 1.5, "pushes_goal_free": 0.5, "grasps": 1.5}
    assert reproduce._mean_split([a, None]) is None and reproduce._mean_split([]) is None


def test_a_run_dir_refuses_other_settings(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "settings.json").write_text(json.dumps({"cases": "simulation/test-cases", "trials": "30",
                                                       "backbone": "tiny", "seed": "1", "scale": "1.0"}))
    # Older run dirs: their settings were the defaults of their day.
    old_defaults = ["--backbone", "tiny", "--replay_steps", "1", "--replay_candidates", "paper",
                    "--stage1_explore", "model", "--alternating_grasp_labels", "push_only", "--no-test_learning"]
    assert reproduce.main(["--run_dir", str(run_dir), "--status", *old_defaults]) == 0
    assert reproduce.main(["--run_dir", str(run_dir), "--status"]) == 2  # today's defaults differ
    assert reproduce.main(["--run_dir", str(run_dir), "--status", *old_defaults, "--seed", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(["--run_dir", str(run_dir), "--backbone", "nope"])


def test_stage1_can_explore_with_the_heuristic_and_then_needs_no_explore_model(tmp_path):
    steps = reproduce.build_steps(_args(tmp_path, stage1_explore="heuristic"))
    by = {s.name: s for s in steps}
    assert "explore" not in by and by["stage1"].snapshot_from == []
    argv = by["stage1"].argv
    assert argv[argv.index("--grasp_explore_policy") + 1] == "heuristic" and "--explore_snapshot_file" not in argv


def test_a_finished_step_travels_through_the_archive_to_a_fresh_run_dir(tmp_path):
    args = _args(tmp_path, archive=tmp_path / "archive")
    steps = reproduce.build_steps(args)
    by = {s.name: s for s in steps}
    for name in ("stage1", "stage1-norelabel"):
        session = reproduce.step_dir(args.run_dir, by[name]) / "logs" / "2026-12-01.10:00:00"
        (session / "transitions").mkdir(parents=True)
        (session / "transitions" / "executed-action.log.txt").write_text("1 0 3 4\n" * 5)
        (session / "data").mkdir()
        (session / "data" / "big-image.png").write_bytes(b"x" * 1000)  # images stay behind
        reproduce.snapshot_path(args.run_dir, name).parent.mkdir(parents=True, exist_ok=True)
        reproduce.snapshot_path(args.run_dir, name).write_bytes(b"weights of " + name.encode())
        (reproduce.step_dir(args.run_dir, by[name]) / "done.json").write_text("{}")
        reproduce.archive_step(args, steps, by[name])
    kept = args.archive / "steps"
    assert (kept / "stage1" / "snapshot.pth").read_bytes() == b"weights of stage1"
    assert not (kept / "stage1-norelabel" / "snapshot.pth").exists()  # no later step starts from it
    assert not list(kept.rglob("*.png"))

    fresh = _args(tmp_path, run_dir=tmp_path / "fresh", archive=args.archive)
    assert reproduce.restore_from_archive(fresh, steps) == ["stage1", "stage1-norelabel"]
    assert reproduce.is_done(fresh.run_dir, by["stage1"])
    assert reproduce.snapshot_path(fresh.run_dir, "stage1").read_bytes() == b"weights of stage1"
    session = reproduce.session_of(fresh.run_dir, by["stage1"])
    assert session.name == "2026-12-01.10:00:00"
    assert reproduce.count_rows(session / "transitions" / "executed-action.log.txt") == 5
    assert reproduce.restore_from_archive(fresh, steps) == []  # done steps are not restored twice


def test_an_archive_refuses_other_settings(tmp_path, capsys):
    archive = tmp_path / "archive"
    assert reproduce.main(["--run_dir", str(tmp_path / "a"), "--archive", str(archive), "--status"]) == 0
    assert reproduce.main(["--run_dir", str(tmp_path / "b"), "--archive", str(archive), "--status",
                           "--seed", "3"]) == 2
    assert "archive" in capsys.readouterr().err


def test_a_table_before_any_test_row_shows_the_learning_figures_only():
    table = {"rows": {}, "cases": [], "trials_per_case": 30,
             "learning": {"stage1": {"episodes": 600, "first_episode_at_80pct_last100": 103,
                                     "final_goal_success_ma_pct": 80.0, "final_grasp_q_ma": 1.9}}}
    text = reproduce.format_table(table)
    assert "| stage1 | 600 | 103 |" in text
    assert "| method |" not in text and "mean over 0 cases" not in text


def test_a_row_measured_on_fewer_cases_says_so():
    cell = {"num_trials": 30, "completion_pct": 90.0, "goal_grasp_success_pct": 80.0, "motion_number": 3.1,
            "paper_code_completion_pct": 95.0, "paper_code_goal_grasp_success_pct": 81.0,
            "first_grasp_goal_success_pct": 0.0}
    table = {"rows": {"heuristic": {"description": "", "cases": {"c0": cell, "c1": cell}, **cell},
                      "full": {"description": "", "cases": {"c0": cell}, **cell}},
             "cases": ["c0", "c1"], "trials_per_case": 30}
    text = reproduce.format_table(table)
    # a mean over fewer cases is not comparable with the others: the row names its coverage
    assert "| heuristic | 90.0 |" in text and "| full (1 of 2 cases) | 90.0 |" in text


def _fake_finished_step(args: argparse.Namespace, steps: list, name: str) -> None:
    by = {s.name: s for s in steps}
    session = reproduce.step_dir(args.run_dir, by[name]) / "logs" / "2026-12-01.10:00:00"
    (session / "transitions").mkdir(parents=True)
    (session / "transitions" / "executed-action.log.txt").write_text("1 0 3 4\n" * 5)
    reproduce.snapshot_path(args.run_dir, name).parent.mkdir(parents=True, exist_ok=True)
    reproduce.snapshot_path(args.run_dir, name).write_bytes(b"weights of " + name.encode())
    (reproduce.step_dir(args.run_dir, by[name]) / "done.json").write_text("{}")
    reproduce.archive_step(args, steps, by[name])


def _trained_archive(tmp_path: Path, *options: str) -> Path:
    """An archive whose stages 1-3 (and the heuristic row's first case) are finished, faked."""
    archive = tmp_path / "archive"
    run_dir = tmp_path / "trained"
    assert reproduce.main(["--run_dir", str(run_dir), "--archive", str(archive), *options, "--status"]) == 0
    args = _args(tmp_path, run_dir=run_dir, archive=archive, backbone=reproduce.DEFAULT_BACKBONE,
                 replay_candidates="other_reward", stage1_explore="heuristic", replay_steps=4)
    for key, value in zip(options[::2], options[1::2]):
        setattr(args, key.removeprefix("--"), value)
    steps = reproduce.build_steps(args)
    for name in ("stage1", "stage2", "stage3-grasp", "stage3-push", "test-heuristic-test-10-obj-00"):
        _fake_finished_step(args, steps, name)
    return archive


def _restored(run_dir: Path) -> set[str]:
    return {p.parent.name for p in (run_dir / "steps").glob("*/done.json")}


def test_reuse_from_takes_the_training_to_other_cases(tmp_path, capsys):
    archive = _trained_archive(tmp_path)
    other_cases = tmp_path / "held-out"
    other_cases.mkdir()
    for name in ("a.txt", "b.txt"):
        (other_cases / name).write_text((PROJECT_CASES / "test-10-obj-00.txt").read_text())
    run_dir = tmp_path / "held-out-run"
    assert reproduce.main(["--run_dir", str(run_dir), "--cases", str(other_cases), "--trials", "2",
                           "--reuse_from", str(archive), "--status"]) == 0
    # the training is the same command line; a test of other cases is not
    assert _restored(run_dir) == {"stage1", "stage2", "stage3-grasp", "stage3-push"}
    assert reproduce.snapshot_path(run_dir, "stage3-push").read_bytes() == b"weights of stage3-push"
    assert json.loads((archive / "settings.json").read_text())["trials"] == "30"  # the archive is only read
    assert "stage3-push" in capsys.readouterr().out

    # an archived step that ran another command line than today's plan says is not shared
    done = archive / "steps" / "stage3-push" / "done.json"
    recorded = json.loads(done.read_text())
    assert "<run_dir>/snapshots/stage3-grasp.pth" in recorded["argv"]
    done.write_text(json.dumps({**recorded, "argv": [*recorded["argv"], "--an_option_of_then"]}))
    assert reproduce.main(["--run_dir", str(tmp_path / "then"), "--cases", str(other_cases), "--trials", "2",
                           "--reuse_from", str(archive), "--status"]) == 0
    assert _restored(tmp_path / "then") == {"stage1", "stage2", "stage3-grasp"}

    # another seed shares nothing
    assert reproduce.main(["--run_dir", str(tmp_path / "seed2"), "--seed", "2", "--reuse_from", str(archive),
                           "--status"]) == 0
    assert _restored(tmp_path / "seed2") == set()
    assert reproduce.main(["--run_dir", str(tmp_path / "y"), "--reuse_from", str(tmp_path), "--status"]) == 2
    assert "not an archive" in capsys.readouterr().err


def test_reuse_from_shares_stages_1_2_and_their_rows_when_only_stage_3_differs(tmp_path):
    archive = _trained_archive(tmp_path)
    run_dir = tmp_path / "other-stage3"
    assert reproduce.main(["--run_dir", str(run_dir), "--alternating_grasp_labels", "goal_probability",
                           "--reuse_from", str(archive), "--status"]) == 0
    # stage 3 and everything tested from its snapshot are new computations; the heuristic row is not
    assert _restored(run_dir) == {"stage1", "stage2", "test-heuristic-test-10-obj-00"}
    args = _args(tmp_path, run_dir=run_dir, archive=None)
    steps = reproduce.build_steps(args)
    assert reproduce.reused_archives(args, steps) == {
        str(archive.resolve()): {"training": ["stage1", "stage2"], "rows": ["heuristic"]}}


def test_a_plan_shares_a_step_only_with_the_snapshots_it_starts_from():
    make = lambda name, argv, sources=(): reproduce.Step(name, list(argv), "train", 1, list(sources))  # noqa: E731
    ours = [make("a", ["1"]), make("b", ["2"], ["a"]), make("c", ["3"], ["b"])]
    theirs = [make("a", ["1"]), make("b", ["2*"], ["a"]), make("c", ["3"], ["b"])]
    assert reproduce.shared_steps(ours, theirs) == ["a"]  # c's argv matches, but after another b
    assert reproduce.shared_steps(ours, ours) == ["a", "b", "c"]


def test_a_table_with_reused_steps_names_their_archive():
    table = {"rows": {"full": {"cases": {"a": {"completion_pct": 100.0, "goal_grasp_success_pct": 50.0,
                                               "motion_number": 2.0}},
                               "completion_pct": 100.0, "goal_grasp_success_pct": 50.0, "motion_number": 2.0,
                               "paper_code_completion_pct": 100.0, "paper_code_goal_grasp_success_pct": 50.0,
                               "first_grasp_goal_success_pct": 50.0}},
             "cases": ["a"], "trials_per_case": 2,
             "reused_from": {"results/reproduce-tiny16ctx": {"training": ["stage1", "stage2"], "rows": ["heuristic"]}}}
    assert ("Taken from `results/reproduce-tiny16ctx` (--reuse_from, the same command lines): stage1, stage2; "
            "the rows heuristic.") in reproduce.format_table(table)


def test_the_time_estimate_skips_a_paused_window():
    assert reproduce.window_seconds_per_iteration(60.0, 20, 60.0) == 3.0
    assert reproduce.window_seconds_per_iteration(900.0, 20, 60.0) is None  # kill -STOP for 15 min
    assert reproduce.window_seconds_per_iteration(60.0, 0, 60.0) is None
