"""Crash-safe resume state of a training session (issue 7, item 1).

A session can be killed at any instant (SIGKILL, a power cut) and resumed with
``--continue_logging --logging_directory D``; nothing completed is lost and nothing repeats:

- The transition logs are the record of what happened (append-only, one row per iteration,
  fsynced once per iteration; a torn last line is dropped, a short log padded on resume).
- ``models/state.<stage>/`` holds the networks, optimiser, replay memory and counters of the
  newest snapshot. It is written whole into ``state.<stage>.new/``, every file fsynced, marked
  complete, then swapped in by renames; ``recover_state_dir`` finishes or undoes a swap that a
  crash interrupted, so a resumed run always finds one complete state, never a mix of two.
- ``models/progress.<stage>.json`` holds the loop's counters and random generator after every
  iteration (atomic, fsynced), so the exploration schedule and the random draws continue where
  the run stopped rather than where the last snapshot was.
- A transition logged after the newest snapshot is rebuilt into the replay memory from the logs,
  the heightmap PNGs and the saved goal masks (``logged_transitions``), with its goal
  relabelling, in the order the run had added them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

import rules
from fault_injection import kill_point
from logger import Logger, _atomic_write_text, fsync_directory, fsync_file

COMPLETE = "COMPLETE"  # written last into a new state folder: the folder is whole


def _siblings(final: Path) -> tuple[Path, Path]:
    return final.with_name(final.name + ".new"), final.with_name(final.name + ".old")


def commit_state_dir(final: str | os.PathLike, write: Callable[[Path], None], iteration: int | None = None) -> None:
    """Replace the folder ``final`` by what ``write(folder)`` puts into a fresh folder, so that a
    crash at any moment leaves either the old state or the new one, complete (recover_state_dir)."""
    final = Path(final)
    new, old = _siblings(final)
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    write(new)
    for path in new.iterdir():
        if path.is_file():
            fsync_file(path)
    kill_point("snapshot_write", iteration)
    _atomic_write_text(new / COMPLETE, f"{iteration}\n")
    fsync_directory(new)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(new, final)
    fsync_directory(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def committed_state_dir(final: str | os.PathLike) -> Path | None:
    """The folder recover_state_dir would make ``final`` (the newest whole state), found without
    changing anything, so that a resume can check the state before it touches the session."""
    final = Path(final)
    new, old = _siblings(final)
    if (new / COMPLETE).is_file():
        return new
    if final.is_dir():
        return final
    return old if old.is_dir() else None


def recover_state_dir(final: str | os.PathLike) -> Path:
    """Finish or undo a commit_state_dir that a crash interrupted; returns ``final`` (which may
    not exist: no state was ever committed)."""
    final = Path(final)
    new, old = _siblings(final)
    if (new / COMPLETE).is_file():  # the new state is whole: it wins, whatever the swap reached
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
        os.rename(new, final)
    elif not final.exists() and old.is_dir():  # crashed between the two renames, new incomplete
        os.rename(old, final)
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return final


def write_json(path: str | os.PathLike, value: Any, default: Callable | None = None) -> None:
    """JSON through a temporary file, fsync and an atomic rename."""
    _atomic_write_text(path, json.dumps(value, default=default))


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object written by write_json, or None when missing or unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _column(logger: Logger, name: str, stop: int) -> np.ndarray:
    values = logger.read(name)
    return values[:stop] if len(values) >= stop else np.full((stop,) + values.shape[1:], np.nan)


def logged_transitions(logger: Logger, start: int, stop: int, *, goal_conditioned: bool, relabel: bool):
    """The replay transitions of iterations start..stop-1 as the run added them, rebuilt from the
    session's logs, heightmaps and masks; returns (transitions, iterations that could not be
    rebuilt). A row padded on resume (its action was cut short by a crash) is not a transition.
    relabel: the run's goal relabelling (stage grasp_only): a grasp of another object adds the
    relabelled twin, whose label is the row's label with the success reward in place of 0."""
    from trainer import Transition

    if stop <= start:
        return [], []
    action = _column(logger, "executed-action", stop)
    label, reward, predicted = (_column(logger, n, stop)[:, 0] for n in ("label-value", "reward-value",
                                                                          "predicted-value"))
    success, grasped, goal = (_column(logger, n, stop)[:, 0] for n in ("grasp-success", "grasp-obj", "goal-obj"))
    out, missing = [], []
    for i in range(start, stop):
        row = np.concatenate([action[i], [label[i], reward[i], predicted[i], success[i], grasped[i], goal[i]]])
        if not np.all(np.isfinite(row)):
            continue  # padded: the action was executed but never labelled
        try:
            color, depth = logger.load_heightmaps(i)
            goal_mask = logger.load_mask(i, "goal") if goal_conditioned else None
        except (OSError, ValueError):
            missing.append(i)
            continue
        if goal_conditioned and goal_mask is None:
            missing.append(i)
            continue
        primitive = "push" if int(action[i, 0]) == 0 else "grasp"
        t = Transition(color, depth, goal_mask, primitive, tuple(int(v) for v in action[i, 1:]),
                       float(label[i]), float(reward[i]), float(predicted[i]), i)
        out.append(t)
        if relabel and primitive == "grasp" and success[i] > 0 and \
                not rules.is_target_grasp(True, int(grasped[i]), int(goal[i]), goal_conditioned):
            mask = logger.load_mask(i, "grasped")
            if mask is not None:  # the run relabels only objects it had a mask of
                success_reward = rules.grasp_only_reward(True)
                out.append(dataclasses.replace(t, goal_mask=mask, reward=success_reward,
                                               label=float(success_reward + (t.label - t.reward)), predicted=0.0))
    return out, missing


def logged_counters(logger: Logger, rows: int, goal_conditioned: bool) -> tuple[list[int], int]:
    """(the last 100 goal grasp outcomes, the last logged episode) from the first ``rows`` rows."""
    action = _column(logger, "executed-action", rows)
    success, grasped, goal, episode = (_column(logger, n, rows)[:, 0]
                                       for n in ("grasp-success", "grasp-obj", "goal-obj", "episode"))
    outcomes = []
    for i in range(rows):
        if action[i, 0] == 1 and np.isfinite([success[i], grasped[i], goal[i]]).all():
            outcomes.append(int(rules.is_target_grasp(bool(success[i] > 0), int(grasped[i]), int(goal[i]),
                                                      goal_conditioned)))
    finite = episode[np.isfinite(episode)]
    return outcomes[-100:], int(finite[-1]) if finite.size else 0
