"""`make reproduce`: the paper's whole pipeline in one resumable command, then its Table I.

    python reproduce.py [--run_dir ~/goal-push-grasp-reproduce-tiny16ctx] [--cases simulation/test-cases]
                        [--trials 30] [--backbone tiny] [--seed 1] [--scale 1.0] [--status]

Steps, in order (each one `python main.py ...` in its own session directory under
RUN_DIR/steps/<step>/):
  explore              goal-agnostic grasp net, the explore model of stage 1 (--grasp_explore)
  stage1               goal-conditioned grasp net, goal relabelling, exploring with the explore model
  stage1-*             the relabelling ablation: with and without relabelling on two seeds
  stage2               push net against the frozen grasp net (crowded goals), the paper's push reward
  stage2-change        the same with VPG's change-only push reward (the ablation)
  stage3-grasp, stage3-push   the alternating halves (grasp net in pushed scenes, then the push net)
  test-<row>-<case>    every row of Table I on every case of --cases, --trials jittered trials each
then RUN_DIR/table1.md, table1.json and the learning curves RUN_DIR/curves-*.png.

Killed and run again (same --run_dir), it skips the finished steps and resumes the unfinished one
with --continue_logging (no finished transition or trial is lost or repeated). Progress, the
time per iteration and an estimate of the time left are printed every --progress_s seconds;
`--status` prints them once without running anything. The defaults (tiny backbone, 2-core CPU)
take about 4 hours; `--scale 0.05 --trials 2` runs the same pipeline in minutes (a smoke test).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rules import GOAL_OCCUPANCY_THRESHOLD, MAX_PUSH_EPISODE_LENGTH

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_CASES = PROJECT_ROOT / "simulation" / "test-cases"
GOAL = ["--grasp_goal_conditioned", "--goal_conditioned"]
TRAIN_GOAL_INDEX = 4  # the paper's k
DEFAULT_BACKBONE = "tiny16ctx"  # the light trunk whose pushes learned on 2 cores (README, Differences)
DEFAULT_RUN_DIR = Path.home() / f"goal-push-grasp-reproduce-{DEFAULT_BACKBONE}"  # tiny16's: ~/goal-push-grasp-reproduce
# Budgets at --scale 1 (iterations). Stage 1 and its ablation: the paper's 600 episodes (one
# grasp each). Stages 2 and 3: sized so that the whole pipeline fits about 4 hours on 2 cores.
EXPLORE_ITERATIONS = 300
STAGE1_ITERATIONS = 600
STAGE2_ITERATIONS = 1500
STAGE2_ABLATION_ITERATIONS = 1000
STAGE3_GRASP_ITERATIONS = 800
STAGE3_PUSH_ITERATIONS = 600
SECONDS_PER_ITERATION_GUESS = 0.9  # until a step has measured its own
ACTIONS_PER_TRIAL_GUESS = 4.0
# A test trial is capped so that a policy stuck pushing cannot run forever: the paper's failure
# rule (10 failed grasps in a row) needs grasps to fire.
MAX_ACTIONS_PER_TRIAL = 30

# The goal grasp Q threshold of the low-threshold row. The light trunks' grasp Q of a free goal
# often stays under 1.5: in the tiny16ctx run's stage-3 logs grasps at Q 1.3-1.5 took the goal
# 70 % of the time (85 % at >= 1.5), and a failed grasp costs one motion, as a push does (README).
LOW_GOAL_GRASP_Q_THRESHOLD = 1.3
LOW_Q_ROW = f"full-q{LOW_GOAL_GRASP_Q_THRESHOLD}"

# Table I rows: (row name, what it is).
ROWS = (
    ("heuristic", "the depth heuristic policy (push when the goal is crowded, grasp across a ridge)"),
    ("heuristic-grasp", "the heuristic's grasp alone, no pushes (is a case challenging?)"),
    ("grasping-only", "the stage-1 snapshot, grasps only (the paper's 'grasping only')"),
    ("no-alternating", "the stage-2 snapshot (the paper's 'no alternating training')"),
    ("full", "the stage-3 snapshot (the full method)"),
    ("full-push-cap", f"the stage-3 snapshot, grasping after {MAX_PUSH_EPISODE_LENGTH} pushes in a row whatever "
                      f"its grasp Q (--max_pushes_before_grasp {MAX_PUSH_EPISODE_LENGTH}, as a stage-2 episode "
                      f"ends; not the paper's rule)"),
    (LOW_Q_ROW, f"the stage-3 snapshot, grasping once the goal's grasp Q reaches {LOW_GOAL_GRASP_Q_THRESHOLD} "
                f"instead of SPEC 5's 1.5 (--goal_grasp_q_threshold {LOW_GOAL_GRASP_Q_THRESHOLD}; not the paper's "
                f"rule)"),
)
# What a run's settings.json holds: the options that shape training, and those that only shape the
# tests.
TRAINING_SETTINGS = ("backbone", "seed", "scale", "learning_rate", "replay_candidates", "stage1_explore",
                     "replay_steps", "alternating_grasp_labels")
TEST_SETTINGS = ("cases", "trials", "test_learning")

# The push cap of the full-push-cap row: a push_only training episode's length (SPEC 5).
PUSHES_BEFORE_GRASP = MAX_PUSH_EPISODE_LENGTH


@dataclass
class Step:
    name: str
    argv: list[str]
    kind: str  # "train" | "test"
    budget: int  # iterations (train) or trials (test)
    snapshot_from: list[str] = field(default_factory=list)  # steps whose snapshots argv needs
    stage: str = ""
    row: str = ""  # test steps: the Table I row and the case
    case: str = ""


def snapshot_path(run_dir: Path, step: str) -> Path:
    return run_dir / "snapshots" / f"{step}.pth"


def build_steps(args: argparse.Namespace) -> list[Step]:
    run_dir, s = args.run_dir, args.scale
    common = ["--backbone", args.backbone, "--cpu", "--experience_replay", "--explore_rate_decay",
              "--learning_rate", str(args.learning_rate), "--replay_candidates", args.replay_candidates,
              "--replay_steps", str(args.replay_steps)]
    n = lambda iterations: max(int(round(iterations * s)), 4)  # noqa: E731
    snap = lambda step: str(snapshot_path(run_dir, step))  # noqa: E731
    seed, seed2 = args.seed, args.seed + 1
    steps = []
    if args.stage1_explore == "model":
        steps.append(Step("explore", ["--stage", "grasp_only", "--num_obj", "5", *common, "--random_seed", str(seed),
                                      "--max_iterations", str(n(EXPLORE_ITERATIONS))], "train",
                          n(EXPLORE_ITERATIONS), stage="grasp_only"))
        explore_argv, explore_from = ["--grasp_explore", "--load_explore_snapshot", "--explore_snapshot_file",
                                      snap("explore")], ["explore"]
    else:  # the depth heuristic explores: no explore model to train
        explore_argv, explore_from = ["--grasp_explore", "--grasp_explore_policy", "heuristic"], []

    def stage1(name: str, run_seed: int, relabel: bool) -> Step:
        argv = ["--stage", "grasp_only", "--num_obj", "5", *GOAL, "--goal_obj_idx", str(TRAIN_GOAL_INDEX), *common,
                *explore_argv, "--random_seed", str(run_seed), "--max_iterations", str(n(STAGE1_ITERATIONS))]
        if not relabel:
            argv.append("--no_goal_relabelling")
        return Step(name, argv, "train", n(STAGE1_ITERATIONS), list(explore_from), "grasp_only")

    steps.append(stage1("stage1", seed, True))

    def push_only(name: str, source: str, iterations: int, *extra: str) -> Step:
        argv = ["--stage", "push_only", "--num_obj", "10", "--grasp_reward_threshold", "1.8", *GOAL,
                "--goal_obj_idx", str(TRAIN_GOAL_INDEX), *common, "--load_snapshot", "--snapshot_file", snap(source),
                "--random_seed", str(seed), "--max_iterations", str(n(iterations)), *extra]
        return Step(name, argv, "train", n(iterations), [source], "push_only")

    steps.append(push_only("stage2", "stage1", STAGE2_ITERATIONS))
    steps.append(push_only("stage3-grasp", "stage2", STAGE3_GRASP_ITERATIONS, "--alternating_training",
                           "--alternating_grasp_labels", args.alternating_grasp_labels))
    steps.append(push_only("stage3-push", "stage3-grasp", STAGE3_PUSH_ITERATIONS))

    cases = sorted(Path(args.cases).glob("*.txt"))
    if not cases:
        raise SystemExit(f"error: no test-case files (*.txt) in {args.cases}")
    full = ["--stage", "push_grasp", *GOAL, "--load_snapshot", "--snapshot_file", snap("stage3-push")]
    row_argv = {
        "heuristic": ["--stage", "push_grasp", "--policy", "heuristic", *GOAL],
        "heuristic-grasp": ["--stage", "grasp_only", "--policy", "heuristic", *GOAL],
        "grasping-only": ["--stage", "grasp_only", *GOAL, "--load_snapshot", "--snapshot_file", snap("stage1")],
        "no-alternating": ["--stage", "push_grasp", *GOAL, "--load_snapshot", "--snapshot_file", snap("stage2")],
        "full": full,
        # the same snapshot under other test rules
        "full-push-cap": [*full, "--max_pushes_before_grasp", str(PUSHES_BEFORE_GRASP)],
        LOW_Q_ROW: [*full, "--goal_grasp_q_threshold", str(LOW_GOAL_GRASP_Q_THRESHOLD)],
    }
    row_source = {"grasping-only": ["stage1"], "no-alternating": ["stage2"],
                  **{row: ["stage3-push"] for row in ("full", "full-push-cap", LOW_Q_ROW)}}
    for row, _ in ROWS:
        for case_index, case in enumerate(cases):
            # The same seed per case for every row: each row meets the same jittered scenes.
            argv = [*row_argv[row], "--num_obj", "10", "--is_testing", "--test_preset_cases",
                    "--test_preset_file", str(case), "--max_test_trials", str(args.trials),
                    "--max_trial_actions", str(MAX_ACTIONS_PER_TRIAL),
                    "--max_iterations", str(args.trials * MAX_ACTIONS_PER_TRIAL),
                    "--random_seed", str(1000 * seed + case_index), "--cpu"]
            if row in row_source and not args.test_learning:
                argv.append("--no_test_learning")
            steps.append(Step(f"test-{row}-{case.stem}", argv, "test", args.trials, row_source.get(row, []),
                              row=row, case=case.stem))
    # The sample-efficiency ablations come last: Table I first.
    steps.append(stage1("stage1-norelabel", seed, False))
    steps.append(stage1("stage1-seed2", seed2, True))
    steps.append(stage1("stage1-norelabel-seed2", seed2, False))
    steps.append(push_only("stage2-change", "stage1", STAGE2_ABLATION_ITERATIONS, "--push_reward", "change"))
    return steps


# ---------------------------------------------------------------------------------------------
# Running one step, resumably
# ---------------------------------------------------------------------------------------------
def step_dir(run_dir: Path, step: Step) -> Path:
    return run_dir / "steps" / step.name


def session_of(run_dir: Path, step: Step) -> Path | None:
    logs = step_dir(run_dir, step) / "logs"
    sessions = sorted(p for p in logs.iterdir() if p.is_dir()) if logs.is_dir() else []
    return sessions[-1] if sessions else None


def is_done(run_dir: Path, step: Step) -> bool:
    return (step_dir(run_dir, step) / "done.json").is_file()


def count_rows(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            # A torn last line (a write cut short) is not a row, as for the logger.
            return sum(1 for line in handle if line.strip() and line.endswith(b"\n"))
    except OSError:
        return 0


def step_progress(run_dir: Path, step: Step) -> int:
    """Iterations (train) or finished trials (test) the step's logs hold."""
    if is_done(run_dir, step):
        return step.budget
    session = session_of(run_dir, step)
    if session is None:
        return 0
    transitions = session / "transitions"
    if step.kind == "train":
        return count_rows(transitions / "executed-action.log.txt")
    return count_rows(transitions / "clearance.log.txt") - count_rows(transitions / "aborted-trial.log.txt")


class Clock:
    """Seconds per iteration as measured, per kind ('train', 'test'), and actions per test trial,
    kept in RUN_DIR/timing.json for the estimate of the time left."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "timing.json"
        self.per_iteration = {"train": SECONDS_PER_ITERATION_GUESS, "test": SECONDS_PER_ITERATION_GUESS,
                              "actions_per_trial": ACTIONS_PER_TRIAL_GUESS}
        if self.path.is_file():
            self.per_iteration.update(json.loads(self.path.read_text()))

    def update(self, kind: str, value: float) -> None:
        self.per_iteration[kind] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.per_iteration))
        os.replace(tmp, self.path)

    def seconds_left(self, run_dir: Path, steps: list[Step]) -> float:
        total = 0.0
        for step in steps:
            left = step.budget - step_progress(run_dir, step)
            if left > 0:
                per_unit = self.per_iteration["actions_per_trial"] if step.kind == "test" else 1.0
                total += left * per_unit * self.per_iteration[step.kind]
        return total


def window_seconds_per_iteration(window_s: float, iterations: int, progress_s: float) -> float | None:
    """Seconds per training iteration over the last progress window, or None for a window that
    ran much longer than one progress interval: the run was paused (kill -STOP while the machine
    is needed), and the pause is not the step's speed."""
    if iterations <= 0 or window_s > 3 * max(progress_s, 1.0):
        return None
    return window_s / iterations


def _fmt_duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds > 5400 else f"{seconds / 60:.0f} min"


def run_step(args: argparse.Namespace, steps: list[Step], index: int, clock: Clock) -> None:
    step, run_dir = steps[index], args.run_dir
    directory = step_dir(run_dir, step)
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    for source in step.snapshot_from:
        if not snapshot_path(run_dir, source).is_file():
            raise SystemExit(f"error: step {step.name} needs the snapshot of step {source}, which is missing")
    session = session_of(run_dir, step)
    argv = [sys.executable, str(PROJECT_ROOT / "main.py"), *step.argv, "--logs_dir", str(directory / "logs")]
    if session is not None:
        argv += ["--continue_logging", "--logging_directory", str(session)]
    started, done_before = time.time(), step_progress(run_dir, step)
    window_start, window_done = started, done_before
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
               PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"))
    with open(directory / "stdout.log", "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)
        try:
            while process.poll() is None:
                try:
                    process.wait(timeout=args.progress_s)
                except subprocess.TimeoutExpired:
                    pass
                done = step_progress(run_dir, step)
                elapsed = time.time() - started
                if done > window_done and step.kind == "train":
                    now = time.time()
                    rate = window_seconds_per_iteration(now - window_start, done - window_done, args.progress_s)
                    if rate is not None:
                        clock.update("train", rate)
                    window_start, window_done = now, done
                print(f"[{index + 1}/{len(steps)} {step.name}] {done}/{step.budget} "
                      f"{'iterations' if step.kind == 'train' else 'trials'}, {elapsed / 60:.1f} min in this run; "
                      f"about {_fmt_duration(clock.seconds_left(run_dir, steps))} left in all", flush=True)
        except KeyboardInterrupt:
            process.send_signal(2)
            process.wait()
            raise
    if process.returncode != 0:
        tail = (directory / "stdout.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"error: step {step.name} failed (exit {process.returncode}); "
                         f"see {directory / 'stdout.log'}: {' | '.join(tail)}")
    session = session_of(run_dir, step)
    # main.py exits 0 after a Ctrl-C of its own too (it saved and stopped): a step is done only
    # when its logs hold its budget (a test step also when it hit its action cap).
    actions = count_rows(session / "transitions" / "executed-action.log.txt") if session else 0
    cap = int(step.argv[step.argv.index("--max_iterations") + 1]) if "--max_iterations" in step.argv else 0
    if step_progress(run_dir, step) < step.budget and not (step.kind == "test" and cap and actions >= cap):
        raise KeyboardInterrupt
    if step.kind == "train":
        source = session / "models" / f"snapshot-backup.{step.stage}.pth"
        target = snapshot_path(run_dir, step.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    else:
        trials = max(step_progress(run_dir, step), 1)
        clock.update("test", (time.time() - started) / max(actions, 1))
        clock.update("actions_per_trial", max(actions / trials, 1.0))
    (directory / "done.json").write_text(json.dumps({"session": str(session), "finished": time.time()}))
    archive_step(args, steps, step)


# ---------------------------------------------------------------------------------------------
# The archive: finished steps in a small, committable form
# ---------------------------------------------------------------------------------------------
# A run dir holds every image of every iteration (hundreds of MB); what the report and the later
# steps need of a finished step is its transition logs (tens of KB) and, for a step that others
# start from, its snapshot (2 MB with a light backbone).  The archive keeps just that, so a run
# can continue in another machine or a fresh checkout once the archive is committed.
def needed_snapshots(steps: list[Step]) -> set[str]:
    return {source for step in steps for source in step.snapshot_from}


def archive_step(args: argparse.Namespace, steps: list[Step], step: Step) -> None:
    if not args.archive:
        return
    session = session_of(args.run_dir, step)
    target = args.archive / "steps" / step.name
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(session / "transitions", tmp / "transitions")
    if step.name in needed_snapshots(steps):
        shutil.copyfile(snapshot_path(args.run_dir, step.name), tmp / "snapshot.pth")
    # The command line as run (run dir paths made relative): --reuse_from compares it, not today's plan.
    argv = [a.replace(str(args.run_dir), "<run_dir>") for a in step.argv]
    (tmp / "done.json").write_text(json.dumps({"session": session.name, "argv": argv}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def restore_from_archive(args: argparse.Namespace, steps: list[Step], archive: Path | None = None) -> list[str]:
    """Mark as done (with their logs and snapshots) the steps that the archive (args.archive unless
    given) holds and the run dir does not; returns their names."""
    restored = []
    archive = archive or args.archive
    if not archive:
        return restored
    for step in steps:
        source = archive / "steps" / step.name
        if is_done(args.run_dir, step) or not (source / "done.json").is_file():
            continue
        session_name = json.loads((source / "done.json").read_text())["session"]
        directory = step_dir(args.run_dir, step)
        shutil.rmtree(directory, ignore_errors=True)  # a half-run step of the run dir is superseded
        session = directory / "logs" / session_name
        shutil.copytree(source / "transitions", session / "transitions")
        if (source / "snapshot.pth").is_file():
            snapshot_path(args.run_dir, step.name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / "snapshot.pth", snapshot_path(args.run_dir, step.name))
        (directory / "done.json").write_text(json.dumps({"session": str(session), "restored_from": str(source)}))
        restored.append(step.name)
    return restored


# ---------------------------------------------------------------------------------------------
# Table I and the curves
# ---------------------------------------------------------------------------------------------
def evaluate_rows(args: argparse.Namespace, steps: list[Step]) -> dict:
    import evaluate

    table: dict = {"rows": {}, "cases": [], "trials_per_case": args.trials}
    for row, description in ROWS:
        per_case = {}
        for step in steps:
            if step.kind != "test" or step.row != row or not is_done(args.run_dir, step):
                continue
            case = step.case
            result = evaluate.evaluate_session(session_of(args.run_dir, step), num_obj_complete=1)
            per_case[case] = {k: result.get(k) for k in (
                "num_trials", "completion_pct", "goal_grasp_success_pct", "motion_number",
                "paper_code_completion_pct", "paper_code_goal_grasp_success_pct", "first_grasp_goal_success_pct",
                "motion_split")}
        if not per_case:
            continue
        mean = lambda key: _mean_of([c[key] for c in per_case.values()])  # noqa: E731
        table["rows"][row] = {"description": description, "cases": per_case,
                              "completion_pct": mean("completion_pct"),
                              "goal_grasp_success_pct": mean("goal_grasp_success_pct"),
                              "motion_number": mean("motion_number"),
                              "paper_code_completion_pct": mean("paper_code_completion_pct"),
                              "paper_code_goal_grasp_success_pct": mean("paper_code_goal_grasp_success_pct"),
                              "first_grasp_goal_success_pct": mean("first_grasp_goal_success_pct"),
                              "motion_split": _mean_split([c.get("motion_split") for c in per_case.values()])}
        table["cases"] = sorted(set(table["cases"]) | set(per_case))
    return table


def _mean_split(splits: list) -> dict | None:
    """The mean over cases of evaluate.py's motion split (None unless every case has one: a
    part-mean would not add up to the row's MN)."""
    from evaluate import MOTION_SPLIT_PARTS

    if not splits or any(s is None for s in splits):
        return None
    return {k: _mean_of([s[k] for s in splits]) for k in MOTION_SPLIT_PARTS}


def _split_cell(split: dict | None) -> str:
    from evaluate import MOTION_SPLIT_PARTS

    return "n/a" if not split else " / ".join(_cell(split[k], 2) for k in MOTION_SPLIT_PARTS)


def _mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(sum(values) / len(values)) if values else None


def _cell(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(table: dict) -> str:
    lines = ["| method | completion % | goal grasp success % | motion number | "
             "paper-code completion % | paper-code GS % | goal grasped at the first grasp % | "
             f"MN split: pushes at goal occupancy > {GOAL_OCCUPANCY_THRESHOLD:g} / pushes at <= "
             f"{GOAL_OCCUPANCY_THRESHOLD:g} / grasps |",
             "|---|---|---|---|---|---|---|---|"] if table["rows"] else []
    for row, values in table["rows"].items():
        # a mean over fewer cases than the other rows is not comparable with them
        measured = len(values["cases"])
        name = row if measured == len(table["cases"]) else f"{row} ({measured} of {len(table['cases'])} cases)"
        lines.append(f"| {name} | {_cell(values['completion_pct'])} | {_cell(values['goal_grasp_success_pct'])} | "
                     f"{_cell(values['motion_number'], 2)} | {_cell(values['paper_code_completion_pct'])} | "
                     f"{_cell(values['paper_code_goal_grasp_success_pct'])} | "
                     f"{_cell(values['first_grasp_goal_success_pct'])} | {_split_cell(values.get('motion_split'))} |")
    learning = table.get("learning", {})
    if learning:
        lines += ["", "| training step | episodes | first episode with >= 80 % goal grasps over the last 100 | "
                      "the same, greedy grasps only | final goal grasp success % (last 100; greedy) | "
                      "final grasp Q (last 100) |", "|---|---|---|---|---|---|"]
        for name, values in learning.items():
            first = values["first_episode_at_80pct_last100"]
            greedy = values.get("first_episode_at_80pct_last100_greedy")
            lines.append(f"| {name} | {values['episodes']} | {first if first is not None else 'not reached'} | "
                         f"{greedy if greedy is not None else 'not reached'} | "
                         f"{_cell(values['final_goal_success_ma_pct'])} "
                         f"({_cell(values.get('final_greedy_success_ma_pct'))}) | "
                         f"{_cell(values['final_grasp_q_ma'], 2)} |")
    if table["rows"]:
        # a run whose test rows have not started has no cases to average yet
        lines.append("")
        lines.append(f"Each figure is the mean over {len(table['cases'])} cases of the per-case value, "
                     f"{table['trials_per_case']} jittered trials per case (the paper's Table I averages its cases).")
        for archive, taken in table.get("reused_from", {}).items():
            rows = taken.get("rows", [])
            lines.append(f"Taken from `{archive}` (--reuse_from, the same command lines): "
                         f"{', '.join(taken.get('training', [])) or 'no training step'}"
                         f"{'; the rows ' + ', '.join(rows) if rows else ''}.")
    if table["rows"]:
        lines += ["", "Per case (completion / GS / MN):", "",
                  "| case | " + " | ".join(table["rows"]) + " |", "|---|" + "---|" * len(table["rows"])]
        for case in table["cases"]:
            cells = []
            for values in table["rows"].values():
                c = values["cases"].get(case)
                cells.append("n/a" if c is None else f"{_cell(c['completion_pct'], 0)} / "
                             f"{_cell(c['goal_grasp_success_pct'], 0)} / {_cell(c['motion_number'], 2)}")
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(args: argparse.Namespace, steps: list[Step]) -> None:
    table = evaluate_rows(args, steps)
    table["learning"] = write_curves(args, steps)
    reused = reused_archives(args, steps)
    if reused:
        table["reused_from"] = reused
    (args.run_dir / "table1.json").write_text(json.dumps(table, indent=1))
    (args.run_dir / "table1.md").write_text(format_table(table))
    print(format_table(table))


# (file name, title, [(label, step)]) of the learning-curve figures.
CURVES = (
    ("curves-stages.png", "Each stage (window: 100 grasps)",
     [("stage 1", "stage1"), ("stage 2", "stage2"), ("stage 3, grasp half", "stage3-grasp"),
      ("stage 3, push half", "stage3-push")]),
    ("curves-relabelling.png", "Stage 1 with and without goal relabelling",
     [("relabelling, seed 1", "stage1"), ("no relabelling, seed 1", "stage1-norelabel"),
      ("relabelling, seed 2", "stage1-seed2"), ("no relabelling, seed 2", "stage1-norelabel-seed2")]),
    ("curves-push-reward.png", "Stage 2: the grasp-net push reward against VPG's change-only reward",
     [("grasp-net reward (paper)", "stage2"), ("change-only reward (VPG)", "stage2-change")]),
)


def write_curves(args: argparse.Namespace, steps: list[Step]) -> dict:
    """The curve PNGs, and per training step the episodes, the first episode whose last-100
    goal grasp success reaches 80 %, and the final moving averages (JSON)."""
    import evaluate

    by_name = {step.name: step for step in steps}
    summary: dict = {}
    for file_name, title, lines in CURVES:
        curves = {}
        for label, name in lines:
            session = session_of(args.run_dir, by_name[name]) if name in by_name else None
            if session is None or not (session / "transitions" / "executed-action.log.txt").is_file():
                continue
            curve = evaluate.training_curve(session)
            curves[label] = curve
            reached = [int(e) for e, v in zip(curve["episodes"], curve["goal_success_ma"])
                       if e >= 100 and v >= 0.8]
            greedy = [int(e) for i, (e, v) in enumerate(zip(curve["greedy_episodes"], curve["greedy_success_ma"]))
                      if i + 1 >= 100 and v >= 0.8]
            summary[name] = {"episodes": int(curve["episodes"].size),
                             "first_episode_at_80pct_last100": reached[0] if reached else None,
                             # An exploration policy that is good by itself (the depth heuristic)
                             # can lift the first figure alone: the net's own grasps tell.
                             "greedy_grasps": int(curve["greedy_episodes"].size),
                             "first_episode_at_80pct_last100_greedy": greedy[0] if greedy else None,
                             "final_greedy_success_ma_pct": 100 * float(curve["greedy_success_ma"][-1])
                             if curve["greedy_episodes"].size else None,
                             "final_goal_success_ma_pct": 100 * float(curve["goal_success_ma"][-1])
                             if curve["episodes"].size else None,
                             "final_grasp_q_ma": float(curve["grasp_q_ma"][-1]) if curve["episodes"].size else None}
        if curves:
            evaluate.plot_training_curves(curves, args.run_dir / file_name, title)
            print(f"wrote {args.run_dir / file_name}")
    return summary


def _portable(folder: Path) -> str:
    """A folder inside a checkout (the cases, a committed archive), named relative to it: the same
    run dir then resumes from another clone of the project."""
    resolved = folder.resolve()
    parts = resolved.parts
    if len(parts) >= 2 and parts[-2:] == ("simulation", "test-cases"):  # the project's cases, in any clone
        return "simulation/test-cases"
    if resolved.is_relative_to(PROJECT_ROOT):
        return str(resolved.relative_to(PROJECT_ROOT))
    return str(resolved)


def _settings_argv(saved: dict) -> list[str]:
    """The reproduce.py options a settings.json records, as a command line."""
    argv = []
    for key in (*TRAINING_SETTINGS, "trials"):
        argv += [f"--{key}", str(saved[key])]
    argv.append("--test_learning" if str(saved["test_learning"]) == "True" else "--no-test_learning")
    cases = Path(saved["cases"])
    return [*argv, "--cases", str(cases if cases.is_absolute() else PROJECT_ROOT / cases)]


def shared_steps(steps: list[Step], other: list[Step], compare_tests: bool = True) -> list[str]:
    """Names of the steps of `steps` that are the same computation in the plan `other` (both
    planned in one run dir): the same main.py command line, from snapshots of steps that are
    shared too (test-full runs the same argv after another stage 3, and is not shared then)."""
    theirs = {step.name: step for step in other}
    shared: list[str] = []
    for step in steps:  # a plan lists a step after the steps whose snapshots it needs
        twin = theirs.get(step.name)
        if twin is None or twin.argv != step.argv or (step.kind == "test" and not compare_tests):
            continue
        if all(source in shared for source in step.snapshot_from):
            shared.append(step.name)
    return shared


def reuse_steps(args: argparse.Namespace, steps: list[Step], source: Path, parser: argparse.ArgumentParser,
                legacy: dict) -> bool:
    """--reuse_from: restore into the run dir the finished steps of another archive that this run
    shares with it (shared_steps) and does not hold yet. False after an error line."""
    source = source.expanduser().resolve()
    settings_file = source / "settings.json"
    try:
        saved = {**legacy, **json.loads(settings_file.read_text())}
        other_args = parser.parse_args(_settings_argv(saved))
    except (OSError, json.JSONDecodeError, TypeError, KeyError, SystemExit):
        print(f"error: --reuse_from {source} is not an archive of reproduce.py (no readable settings.json)",
              file=sys.stderr)
        return False
    other_args.run_dir = args.run_dir
    compare_tests = Path(other_args.cases).is_dir()
    if not compare_tests:  # its cases are not in this checkout: its training steps can still be shared
        other_args.cases = args.cases
    other = build_steps(other_args)
    for step in other:  # what the archive ran, where it says so (archives since 2026-12-03)
        try:
            recorded = json.loads((source / "steps" / step.name / "done.json").read_text()).get("argv")
        except (OSError, json.JSONDecodeError, AttributeError):
            recorded = None
        if recorded is not None:
            step.argv = [a.replace("<run_dir>", str(args.run_dir)) for a in recorded]
    shared = shared_steps(steps, other, compare_tests)
    restored = restore_from_archive(args, [step for step in steps if step.name in shared], source)
    print(f"from {source} (the same command lines): {', '.join(restored) if restored else 'nothing'}")
    return True


def reused_archives(args: argparse.Namespace, steps: list[Step]) -> dict[str, dict[str, list[str]]]:
    """{archive: {"training": [step names], "rows": [Table I rows]}} of the steps restored from an
    archive other than args.archive."""
    own = str(args.archive) if getattr(args, "archive", None) else None
    found: dict[str, dict[str, list[str]]] = {}
    for step in steps:
        done = step_dir(args.run_dir, step) / "done.json"
        try:
            origin = json.loads(done.read_text()).get("restored_from")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if origin and str(Path(origin).parent.parent) != own:
            entry = found.setdefault(_portable(Path(origin).parent.parent), {"training": [], "rows": []})
            if step.kind == "train":
                entry["training"].append(step.name)
            elif step.row not in entry["rows"]:
                entry["rows"].append(step.row)
    return found


def _claim_settings(directory: Path, settings: dict, legacy: dict, option: str) -> bool:
    """Write the run's settings into directory/settings.json, or refuse (one error line, False)
    when it holds a run of other settings (a settings file lacking newer options had their
    legacy values)."""
    settings_file = directory / "settings.json"
    if settings_file.is_file():
        saved = {**legacy, **json.loads(settings_file.read_text())}
        saved["cases"] = _portable(Path(saved["cases"]))
        if saved != settings:
            print(f"error: {directory} holds a run with other settings {settings_file.read_text()}; "
                  f"use another {option} or the same options", file=sys.stderr)
            return False
    settings_file.write_text(json.dumps(settings))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", type=Path, default=DEFAULT_RUN_DIR,
                        help="where every step's session, the snapshots and the report go (resumed when it exists)")
    parser.add_argument("--cases", default=str(DEFAULT_CASES), help="folder of test-case files (*.txt)")
    parser.add_argument("--trials", type=int, default=30, help="jittered trials per case and row (the paper's n)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=["tiny", "tiny16", "tiny16ctx", "resnet18", "densenet121"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every training budget")
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="Adam learning rate of every training step")
    parser.add_argument("--replay_candidates", default="other_reward", choices=["paper", "other_reward"],
                        help="replayed samples (main.py --replay_candidates)")
    parser.add_argument("--replay_steps", type=int, default=4,
                        help="prioritised replay steps after each action (the paper's code: 1; 4 measured to let "
                             "the light trunk learn stage 1 within 600 episodes)")
    parser.add_argument("--stage1_explore", default="heuristic", choices=["model", "heuristic"],
                        help="stage 1 explores with the goal-agnostic explore model (the paper's) or the depth "
                             "heuristic's grasp")
    parser.add_argument("--alternating_grasp_labels", default="grasp_only",
                        choices=["grasp_only", "push_only", "goal_probability"],
                        help="stage 3's grasp half labels (main.py --alternating_grasp_labels)")
    parser.add_argument("--test_learning", action=argparse.BooleanOptionalAction, default=True,
                        help="the learned rows' tests back-propagate within each trial (main.py --test_learning)")
    parser.add_argument("--archive", type=Path, default=None,
                        help="keep each finished step's transition logs (and the snapshots later steps start from) "
                             "here, and take finished steps from it on start: commit it, and a fresh checkout "
                             "continues the run (`make reproduce` uses results/reproduce-tiny16ctx)")
    parser.add_argument("--reuse_from", type=Path, action="append", default=[],
                        help="take from this archive (e.g. results/reproduce-tiny16ctx) every finished step that is "
                             "the same computation as one of this run's (the same main.py command line, from "
                             "snapshots of shared steps): its training when only --cases or --trials differ "
                             "(held-out cases, the paper's files), stages 1-2 and their rows when only stage 3's "
                             "options differ (repeatable)")
    parser.add_argument("--progress_s", type=float, default=60.0, help="seconds between progress lines")
    parser.add_argument("--status", action="store_true", help="print where the run stands and exit")
    parser.add_argument("--until", default="", help="stop after this step (e.g. stage3-push)")
    parser.add_argument("--only", default="", help="run only the steps whose name starts with this "
                                                    "(e.g. test-heuristic: the rows that need no training)")
    parser.add_argument("--report_only", action="store_true", help="write Table I and the curves from what exists")
    parser.add_argument("--ship", default="", help="after the report, copy the full method's snapshot and its "
                                                   "model card into this folder (the repository's snapshots/)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.scale <= 0:
        print("error: --trials must be >= 1 and --scale > 0", file=sys.stderr)
        return 2
    # Started in the background by a shell, SIGINT arrives ignored and every step would inherit
    # that: restore it, and let SIGTERM stop the run the same clean way (steps save their state).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    args.run_dir = args.run_dir.expanduser().resolve()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items() if k in (*TRAINING_SETTINGS, *TEST_SETTINGS)}
    # Run dirs made before these options had their defaults.
    legacy = {"learning_rate": "0.0001", "replay_candidates": "paper", "stage1_explore": "model", "replay_steps": "1",
              "alternating_grasp_labels": "push_only", "test_learning": "False"}
    settings["cases"] = _portable(Path(args.cases))
    try:
        steps = build_steps(args)
    except SystemExit as bad_input:  # before the run dir is claimed: a mistyped --cases leaves nothing behind
        print(bad_input, file=sys.stderr)
        return 2
    if not _claim_settings(args.run_dir, settings, legacy, "--run_dir"):
        return 2
    for source in args.reuse_from:
        if not reuse_steps(args, steps, source, parser, legacy):
            return 2
    if args.archive is not None:
        args.archive = args.archive.expanduser().resolve()
        args.archive.mkdir(parents=True, exist_ok=True)
        if not _claim_settings(args.archive, settings, legacy, "--archive"):
            return 2
        restored = restore_from_archive(args, steps)
        if restored:
            print(f"from the archive {args.archive}: {', '.join(restored)}")
    clock = Clock(args.run_dir)
    if args.status or args.report_only:
        for i, step in enumerate(steps):
            print(f"{i + 1:3d} {step.name:40s} {step_progress(args.run_dir, step)}/{step.budget}"
                  f"{' done' if is_done(args.run_dir, step) else ''}")
        print(f"about {_fmt_duration(clock.seconds_left(args.run_dir, steps))} left")
        if args.report_only:
            write_report(args, steps)
            if args.ship:
                ship(args, steps)
        return 0
    try:
        for index, step in enumerate(steps):
            if args.only and not step.name.startswith(args.only):
                continue
            if not is_done(args.run_dir, step):
                run_step(args, steps, index, clock)
            if step.name == args.until:
                break
    except KeyboardInterrupt:
        print(f"\nstopped; run the same command again to continue ({args.run_dir})", file=sys.stderr)
        return 130
    except SystemExit as stop:
        print(stop, file=sys.stderr)
        return 2
    write_report(args, steps)
    if args.ship:
        ship(args, steps)
    return 0


def ship(args: argparse.Namespace, steps: list[Step]) -> None:
    """The full method's final snapshot and a model card, into args.ship."""
    source = snapshot_path(args.run_dir, "stage3-push")
    if not source.is_file():
        raise SystemExit(f"error: nothing to ship yet: {source} is missing (run the pipeline to stage3-push)")
    target_dir = Path(args.ship)
    target_dir.mkdir(parents=True, exist_ok=True)
    name = f"goal-push-grasp-{args.backbone}.pth"
    shutil.copyfile(source, target_dir / name)
    table = json.loads((args.run_dir / "table1.json").read_text()) if (args.run_dir / "table1.json").is_file() else {}
    full = table.get("rows", {}).get("full")
    by_name = {step.name: step for step in steps}
    lines = [f"# Model card: `{name}`", "",
             f"The full method (stages 1-3 of the paper) with the `{args.backbone}` backbone, trained on a 2-core "
             f"CPU by `make reproduce` (`python reproduce.py --seed {args.seed} --scale {args.scale}`).", "",
             f"- Architecture: goal-conditioned, five `{args.backbone}` trunks (push colour/depth, grasp colour/depth, "
             f"goal mask), 16 rotations; {os.path.getsize(target_dir / name) / 1e6:.1f} MB. The file describes its "
             f"net: `--load_snapshot --snapshot_file snapshots/{name}` needs no `--backbone`.",
             "- Training, in order (each a `python main.py` command line; iterations in brackets):"]
    for step_name in ("explore", "stage1", "stage2", "stage3-grasp", "stage3-push"):
        if step_name not in by_name:
            continue
        step = by_name[step_name]
        shown = [f"<{Path(a).stem} snapshot>" if a.startswith(str(args.run_dir)) else a for a in step.argv]
        lines.append(f"  - {step_name} [{step.budget} iterations]: `python main.py {' '.join(shown)}`")
    if full:
        lines += ["", f"Table I row on {len(table.get('cases', []))} challenging cases, {table.get('trials_per_case')} "
                      f"jittered trials each: completion {_cell(full['completion_pct'])} %, goal grasp success "
                      f"{_cell(full['goal_grasp_success_pct'])} %, motion number {_cell(full['motion_number'], 2)} "
                      f"(the whole table: README, 'Where the reproduction stands')."]
    # The rows that change only the test rule, beside the paper's
    variants = {"full-push-cap": f"`--max_pushes_before_grasp {PUSHES_BEFORE_GRASP}` (grasp after that many pushes "
                                 f"in a row; not the paper's rule, README 'Differences')",
                LOW_Q_ROW: f"`--goal_grasp_q_threshold {LOW_GOAL_GRASP_Q_THRESHOLD}` (grasp once the goal's grasp "
                             f"Q reaches it; SPEC 5's is 1.5; README 'Differences')"}
    for row, how in variants.items():
        values = table.get("rows", {}).get(row)
        if full and values:
            lines.append(f"With {how}: completion {_cell(values['completion_pct'])} %, goal grasp success "
                         f"{_cell(values['goal_grasp_success_pct'])} %, motion number "
                         f"{_cell(values['motion_number'], 2)}.")
    if not full:
        lines += ["", "Table I: the full method's row is not measured yet for this snapshot (the pipeline's test steps "
                      "have not all run); the README ('Where the reproduction stands') gives what was measured so far."]
    lines += ["", "Test it on a case:", "", "```bash",
              f"python main.py --stage push_grasp --num_obj 10 --is_testing --test_preset_cases --test_preset_file "
              f"simulation/test-cases/test-10-obj-00.txt --load_snapshot --snapshot_file snapshots/{name} "
              f"--grasp_goal_conditioned --goal_conditioned --cpu --save_visualizations", "```", ""]
    (target_dir / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"shipped {target_dir / name} and {target_dir / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    sys.exit(main())
