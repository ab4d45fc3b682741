#!/usr/bin/env python
"""Evaluate a test session: completion, goal grasp success and motion number (SPEC section 7).

Usage::

    python evaluate.py --session_directory logs/<session> --num_obj_complete 1 \
        [--max_goal_grasp_failures 10] [--json PATH] [--no_plot]

Reads ``<session>/transitions/``: executed-action (primitive 0 push / 1 grasp, rot, y, x),
clearance (the iteration at each trial end, i.e. the row where the next trial starts), grasp-obj
(-1 if nothing grasped), goal-obj, and grasp-success when present (1 only for a successful grasp).

Definitions (a "trial" is the run of rows between two clearance marks; rows after the last
mark are an unfinished trial and are ignored; trials with no rows at all, from two marks at the
same iteration, are skipped and counted separately):

* Target grasp. Goal-oriented mode (``num_obj_complete == 1``): a successful grasp whose
  grasp-obj equals that row's goal-obj (rows with goal-obj -1, i.e. a goal-agnostic run, accept
  any successful grasp). Clearance mode (``num_obj_complete = N > 1``, VPG): any
  successful grasp. A grasp is successful when grasp-success is 1 (if that log exists), else
  when grasp-obj >= 0.
* Failure: a trial fails at its ``max_goal_grasp_failures``-th consecutive grasp that is not a
  target grasp (pushes neither count nor break the run; in goal-oriented mode grasping a
  non-goal object counts as a failed goal grasp).
* Completion: the trial reached ``num_obj_complete`` target grasps before failing. Completion
  % = completed / finished trials (trials without any grasp count, as not completed; the
  original code dropped them from the denominator).
* Goal grasp success GS (paper): per completed trial, target grasps / grasp attempts counted up
  to and including the completing grasp; reported as the mean over completed trials.
* Motion number MN (paper): per completed trial, pushes + grasps up to and including the
  completing grasp; mean over completed trials. (The test loop ends a trial right after the
  goal is grasped, so this equals the trial length there.)
* VPG figures, exactly as VPG's evaluate.py computes them over whole trials: clearance % =
  trials with at least N successful grasps (any object) / finished trials; grasp success % =
  mean over cleared trials of successful grasps / grasp attempts; action efficiency % = mean
  over cleared trials of N / actions; grasp-to-push ratio % = mean over cleared trials of
  grasps / actions (VPG's name: it is the grasp share of all actions, not grasps / pushes).
  Also ``grasp_success_all_pct``: successful grasps / grasp attempts pooled over all finished
  trials.
* Motion split (``motion_split``, when the occupancy log exists): where a completed trial's
  motions go, by the state each one started from: pushes while the goal's occupancy ratio was
  above 0.3 (or unknown), the pushes SPEC 5's test rule makes whatever the grasp net says;
  pushes at occupancy <= 0.3, made because the goal's grasp Q was under the rule's threshold;
  and grasps. Means over completed trials; the three add up to MN.

Outputs: a table on stdout, JSON (``<session>/evaluation.json`` or ``--json PATH``), and a plot
``<session>/evaluation.png`` (per-trial motion number, cumulative goal grasp success and
completion) unless ``--no_plot``; for a training session (or with ``--training_curve``) also
``<session>/training-curve.png``: goal grasp success, grasp Q and push reward against iterations,
moving averages over ``--window`` (100). Bad input gives one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rules import GOAL_OCCUPANCY_THRESHOLD
from logger import KNOWN_LOG_COLUMNS, atomic_write_bytes, read_log_file
from utils import UserError

DEFAULT_MAX_GOAL_GRASP_FAILURES = 10
# The motion split's parts, in the order they are shown (module docstring).
MOTION_SPLIT_PARTS = ('pushes_goal_crowded', 'pushes_goal_free', 'grasps')


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _load_log(transitions: Path, name: str, required: bool) -> np.ndarray | None:
    path = transitions / f'{name}.log.txt'
    if not path.exists():
        if required:
            raise UserError(f'missing transitions log {path}')
        return None
    columns = KNOWN_LOG_COLUMNS[name]  # the one table of logs (logger.TRANSITION_LOGS)
    try:
        arr = read_log_file(path, columns)
    except (ValueError, OSError) as e:
        raise UserError(f'cannot read {path}: {e}') from None
    if arr.size and (arr.ndim != 2 or arr.shape[1] < columns):
        raise UserError(f'{path}: expected {columns} column(s) per row, got {arr.shape[-1] if arr.ndim == 2 else 1}')
    return arr.reshape(-1, columns) if arr.ndim == 1 and arr.size else arr


def _column(arr: np.ndarray | None, name: str, num_rows: int) -> np.ndarray | None:
    """First column of a per-iteration log, checked to have one row per executed action."""
    if arr is None:
        return None
    rows = arr.shape[0]
    if rows != num_rows:
        raise UserError(f'inconsistent logs: {name} has {rows} rows but executed-action has '
                        f'{num_rows} (one row per action expected)')
    return arr[:, 0] if rows else np.zeros((0,))


def load_session_logs(directory: str | os.PathLike, need_goal: bool = True) -> dict[str, np.ndarray | None]:
    """Read and check the transitions logs that evaluation needs.

    Returns a dict of 1-D arrays, one entry per executed action: 'primitive' (0 push, 1 grasp),
    'grasp_obj', 'goal_obj' (None when not needed and absent), 'grasp_success', 'reward' and
    'occupancy' (the goal's occupancy ratio before the action; each None when its log is
    absent), and 'clearance' (trial-end iterations, int, possibly empty).
    Raises UserError for a missing directory or log, or inconsistent logs.
    """
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f'session directory not found: {d}')
    transitions = d / 'transitions'
    if not transitions.is_dir():
        raise UserError(f'no transitions/ folder in {d} (is it a session directory?)')

    actions = _load_log(transitions, 'executed-action', required=True)
    if actions is None:  # unreachable (required=True raises), kept for the type checker
        raise UserError(f'missing transitions log {transitions / "executed-action.log.txt"}')
    num_rows = actions.shape[0]
    if num_rows and actions.ndim != 2:
        raise UserError('executed-action log has no columns')
    primitive = actions[:, 0] if num_rows else np.zeros((0,))
    bad = ~np.isin(primitive, (0.0, 1.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f'executed-action row {row}: primitive must be 0 (push) or 1 (grasp), '
                        f'got {primitive[row]!r}')

    grasp_obj = _column(_load_log(transitions, 'grasp-obj', required=True), 'grasp-obj', num_rows)
    goal_obj = _column(_load_log(transitions, 'goal-obj', required=need_goal), 'goal-obj', num_rows)
    grasp_success = _column(_load_log(transitions, 'grasp-success', required=False), 'grasp-success',
                            num_rows)
    reward = _column(_load_log(transitions, 'reward-value', required=False), 'reward-value', num_rows)
    occupancy = _column(_load_log(transitions, 'occupancy', required=False), 'occupancy', num_rows)

    # No clearance file simply means no trial has ended yet (logs are created on first append).
    clear = _load_log(transitions, 'clearance', required=False)
    if clear is None or clear.size == 0:
        clearance = np.zeros((0,), dtype=int)
    else:
        c = clear[:, 0]
        if not np.all(np.isfinite(c)) or np.any(c != np.round(c)):
            raise UserError('clearance log must hold whole iteration numbers')
        clearance = c.astype(int)
    _check_clearance(clearance, num_rows)
    # Trial ends that main.py marked aborted (a test run resumed mid-trial): left out of the metrics.
    aborted_log = _load_log(transitions, 'aborted-trial', required=False)
    aborted = np.zeros((0,), dtype=int) if aborted_log is None else aborted_log.reshape(-1).astype(int)
    return {'primitive': primitive, 'grasp_obj': grasp_obj, 'goal_obj': goal_obj,
            'grasp_success': grasp_success, 'clearance': clearance, 'aborted': aborted, 'reward': reward,
            'occupancy': occupancy}


def _check_clearance(clearance: np.ndarray, num_rows: int) -> None:
    """Trial ends must be non-decreasing row indices within 0..num_rows."""
    if clearance.size == 0:
        return
    if np.any(np.diff(clearance) < 0):
        raise UserError('clearance log is not in increasing order')
    if clearance[0] < 0 or clearance[-1] > num_rows:
        raise UserError(f'clearance marks must lie in 0..{num_rows} (the executed-action row '
                        f'count), got {clearance.min()}..{clearance.max()}')


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * float(x)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def evaluate_logs(primitive: np.ndarray, grasp_obj: np.ndarray, clearance: np.ndarray,
                  goal_obj: np.ndarray | None = None, grasp_success: np.ndarray | None = None,
                  num_obj_complete: int = 1,
                  max_goal_grasp_failures: int = DEFAULT_MAX_GOAL_GRASP_FAILURES,
                  aborted: np.ndarray | None = None, reward: np.ndarray | None = None,
                  occupancy: np.ndarray | None = None,
                  occupancy_threshold: float = GOAL_OCCUPANCY_THRESHOLD) -> dict[str, Any]:
    """Compute per-trial and session metrics from per-action arrays (see the module docstring).

    Args:
        primitive: (R,) 0 push / 1 grasp per executed action.
        grasp_obj: (R,) grasped object index, -1 (or any negative) if none.
        clearance: (T,) trial-end iterations, non-decreasing, each in 0..R.
        goal_obj: (R,) goal object index per action; required when num_obj_complete == 1.
        grasp_success: (R,) 1 for a successful grasp, else 0; if None, grasp_obj >= 0 is used.
        num_obj_complete: target grasps that complete a trial (1: goal-oriented; N > 1: VPG).
        max_goal_grasp_failures: consecutive non-target grasps after which a trial has failed.
        aborted: trial-end iterations of trials cut short by an interruption; skipped.
        reward: (R,) reward-value log, for the paper code's own figures (a grasp with reward
            >= 0.5 is a success there); None: the target grasps stand in for it.
        occupancy: (R,) the goal's occupancy ratio before each action (NaN: unknown), for the
            motion split; None: no split.
        occupancy_threshold: the test rule's occupancy ratio above which it always pushes.

    Returns a JSON-ready dict; percentages are in percent (0..100), None where undefined.
    """
    if num_obj_complete < 1:
        raise UserError(f'--num_obj_complete must be at least 1, got {num_obj_complete}')
    if max_goal_grasp_failures < 1:
        raise UserError(f'--max_goal_grasp_failures must be at least 1, got {max_goal_grasp_failures}')
    goal_mode = num_obj_complete == 1
    if goal_mode and goal_obj is None:
        raise UserError('goal-oriented evaluation (--num_obj_complete 1) needs the goal-obj log')

    primitive = np.asarray(primitive, dtype=float).ravel()
    grasp_obj = np.asarray(grasp_obj, dtype=float).ravel()
    num_rows = primitive.shape[0]
    clearance = np.asarray(clearance, dtype=int).ravel()
    _check_clearance(clearance, num_rows)
    for name, arr in (('grasp_obj', grasp_obj), ('goal_obj', goal_obj), ('grasp_success', grasp_success)):
        if arr is not None and np.size(arr) != num_rows:
            raise UserError(f'inconsistent logs: {name} has {np.size(arr)} rows, executed-action {num_rows}')

    is_grasp = primitive == 1
    if reward is not None and np.size(reward) != num_rows:
        raise UserError(f'inconsistent logs: reward-value has {np.size(reward)} rows, executed-action {num_rows}')
    if occupancy is not None and np.size(occupancy) != num_rows:
        raise UserError(f'inconsistent logs: occupancy has {np.size(occupancy)} rows, executed-action {num_rows}')
    # A push "while crowded" is one the test rule makes whatever the grasp net says; NaN (goal
    # unseen) compares False with <=, so it counts here too.
    crowded_push = (~is_grasp & ~(np.asarray(occupancy, dtype=float).ravel() <= occupancy_threshold)
                    if occupancy is not None else None)
    if grasp_success is not None:
        success = is_grasp & (np.asarray(grasp_success, dtype=float).ravel() > 0.5)
    else:
        success = is_grasp & (grasp_obj >= 0)
    no_goal_rows = 0
    if goal_mode:
        goal = np.asarray(goal_obj, dtype=float).ravel()
        # goal-obj -1 means no goal was assigned (goal-agnostic run): any object is the target.
        no_goal = goal < 0
        no_goal_rows = int(no_goal.sum())
        target = success & (grasp_obj >= 0) & ((grasp_obj == goal) | no_goal)
    else:
        target = success  # clearance: every object counts
    starts = np.concatenate(([0], clearance[:-1])).astype(int) if clearance.size else np.zeros(0, int)
    # The paper's evaluate.py: a grasp whose reward is >= 0.5 is a success.
    paper_success = is_grasp & ((np.asarray(reward, dtype=float).ravel() >= 0.5) if reward is not None else target)

    trials: list[dict[str, Any]] = []
    num_empty = 0
    aborted_ends = set(int(a) for a in np.asarray(aborted if aborted is not None else [], dtype=int).ravel())
    num_aborted = 0
    for start, end in zip(starts, clearance):
        start, end = int(start), int(end)
        if end == start:
            num_empty += 1  # two trial ends at one iteration: a reset without any action
            continue
        if end in aborted_ends:
            num_aborted += 1
            continue
        g = is_grasp[start:end]
        hits = 0
        consecutive_failures = 0
        completed_at: int | None = None  # row offset of the completing grasp
        failed_at: int | None = None
        for j in np.flatnonzero(g):
            if target[start + j]:
                hits += 1
                consecutive_failures = 0
                if hits >= num_obj_complete:
                    completed_at = int(j)
                    break
            else:
                consecutive_failures += 1
                if consecutive_failures >= max_goal_grasp_failures:
                    failed_at = int(j)
                    break
        n_actions = end - start
        n_grasps = int(g.sum())
        n_success = int(success[start:end].sum())
        trial: dict[str, Any] = {
            'trial': len(trials),  # index among non-empty finished trials
            'start_row': start,
            'end_row': end,  # exclusive
            'actions': n_actions,
            'pushes': n_actions - n_grasps,
            'grasps': n_grasps,
            'successful_grasps': n_success,
            'target_grasps': int(target[start:end].sum()),
            'completed': completed_at is not None,
            'failed_row': None if failed_at is None else start + failed_at,
            'cleared_vpg': n_success >= num_obj_complete,
            'motion_number': None,
            'goal_grasp_success_pct': None,
            'first_grasp_is_target': bool(target[start + int(np.flatnonzero(g)[0])]) if g.any() else None,
            'paper_code_successes': int(paper_success[start:end].sum()),
        }
        if completed_at is not None:
            window = slice(start, start + completed_at + 1)
            grasps_w = int(is_grasp[window].sum())  # >= 1: the completing row is a grasp
            trial['motion_number'] = completed_at + 1
            trial['goal_grasp_success_pct'] = 100.0 * int(target[window].sum()) / grasps_w
            if crowded_push is not None:
                crowded = int(crowded_push[window].sum())
                trial['motion_split'] = {'pushes_goal_crowded': crowded,
                                         'pushes_goal_free': completed_at + 1 - grasps_w - crowded,
                                         'grasps': grasps_w}
        trials.append(trial)

    done = [t for t in trials if t['completed']]
    cleared = [t for t in trials if t['cleared_vpg']]
    n = len(trials)
    total_grasps = sum(t['grasps'] for t in trials)
    result: dict[str, Any] = {
        'mode': 'goal-oriented' if goal_mode else 'clearance',
        'num_obj_complete': int(num_obj_complete),
        'max_goal_grasp_failures': int(max_goal_grasp_failures),
        'success_source': 'grasp-success' if grasp_success is not None else 'grasp-obj >= 0',
        'num_actions_logged': int(num_rows),
        'num_trials': n,
        'num_empty_trials': num_empty,
        'unfinished_trial_actions': int(num_rows - (clearance[-1] if clearance.size else 0)),
        'num_completed': len(done),
        'completion_pct': _pct(len(done) / n) if n else None,
        'goal_grasp_success_pct': _mean([t['goal_grasp_success_pct'] for t in done]),
        'motion_number': _mean([t['motion_number'] for t in done]),
        'clearance_pct': _pct(len(cleared) / n) if n else None,
        'grasp_success_pct': _pct(_mean([t['successful_grasps'] / t['grasps'] for t in cleared])),
        'grasp_success_all_pct': (_pct(sum(t['successful_grasps'] for t in trials) / total_grasps)
                                  if total_grasps else None),
        'action_efficiency_pct': _pct(_mean([num_obj_complete / t['actions'] for t in cleared])),
        'grasp_to_push_ratio_pct': _pct(_mean([t['grasps'] / t['actions'] for t in cleared])),
        'trials': trials,
    }
    notes = []
    if result['unfinished_trial_actions']:
        notes.append(f'{result["unfinished_trial_actions"]} action(s) after the last trial end '
                     f'belong to an unfinished trial and are ignored')
    if no_goal_rows:
        notes.append(f'{no_goal_rows} action(s) have goal-obj -1 (no goal assigned): any successful '
                     f'grasp counts as the target there')
    if num_empty:
        notes.append(f'{num_empty} empty trial(s) (trial end with no action) skipped')
    if num_aborted:
        notes.append(f'{num_aborted} aborted trial(s) (interrupted and resumed, or cut by a simulator fault) left out')
    if n == 0:
        notes.append('no finished trials: metrics are null')
    elif not done:
        notes.append('no completed trials: GS and MN are null')
    result.update(paper_code_figures(trials, num_obj_complete))
    with_grasp = [t for t in trials if t['first_grasp_is_target'] is not None]
    # Challenging cases: how often the very first grasp of a trial already took the target.
    result['first_grasp_goal_success_pct'] = (_pct(sum(t['first_grasp_is_target'] for t in with_grasp)
                                                   / len(with_grasp)) if with_grasp else None)
    split_trials = [t['motion_split'] for t in done if 'motion_split' in t]
    result['motion_split'] = ({'occupancy_threshold': float(occupancy_threshold),
                               **{k: _mean([m[k] for m in split_trials])
                                  for k in MOTION_SPLIT_PARTS}}
                              if split_trials else None)
    result['notes'] = notes
    return result


def paper_code_figures(trials: list[dict[str, Any]], num_obj_complete: int = 1) -> dict[str, Any]:
    """The figures as the paper's evaluate.py computes them, to print beside ours: a success is
    any grasp rewarded >= 0.5; trials without a grasp leave the denominator; no failure cap (a
    trial completes if it ever reaches num_obj_complete successes); GS and MN over whole
    completed trials (GS: successes / grasps, MN: actions)."""
    valid = [t for t in trials if t['grasps'] > 0]
    done = [t for t in valid if t['paper_code_successes'] >= num_obj_complete]
    return {
        'paper_code_num_trials': len(valid),
        'paper_code_completion_pct': _pct(len(done) / len(valid)) if valid else None,
        'paper_code_goal_grasp_success_pct': _pct(_mean([t['paper_code_successes'] / t['grasps'] for t in done])),
        'paper_code_motion_number': _mean([t['actions'] for t in done]),
    }


def evaluate_session(directory: str | os.PathLike, num_obj_complete: int = 1,
                     max_goal_grasp_failures: int = DEFAULT_MAX_GOAL_GRASP_FAILURES) -> dict[str, Any]:
    """Evaluate the session at ``directory``; returns the dict of evaluate_logs plus
    'session_directory'. Raises UserError on bad input (missing files, inconsistent logs)."""
    if num_obj_complete < 1:
        raise UserError(f'--num_obj_complete must be at least 1, got {num_obj_complete}')
    logs = load_session_logs(directory, need_goal=num_obj_complete == 1)
    result = evaluate_logs(logs['primitive'], logs['grasp_obj'], logs['clearance'],
                           goal_obj=logs['goal_obj'], grasp_success=logs['grasp_success'],
                           num_obj_complete=num_obj_complete,
                           max_goal_grasp_failures=max_goal_grasp_failures, aborted=logs['aborted'],
                           reward=logs['reward'], occupancy=logs['occupancy'])
    return {'session_directory': str(directory), **result}


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _fmt_pct(x: float | None) -> str:
    return 'n/a' if x is None else f'{x:.1f} %'


def _fmt_split(split: dict[str, float] | None) -> str:
    if split is None:
        return 'n/a (no occupancy log, or no completed trial)'
    t = split['occupancy_threshold']
    return (f'{split["pushes_goal_crowded"]:.2f} pushes at occupancy > {t:g} + '
            f'{split["pushes_goal_free"]:.2f} pushes at <= {t:g} + {split["grasps"]:.2f} grasps')


def format_report(result: dict[str, Any]) -> str:
    """A plain-text table of the per-trial rows and the summary metrics."""
    lines = []
    if 'session_directory' in result:
        lines.append(f'Session: {result["session_directory"]}')
    if result['mode'] == 'goal-oriented':
        lines.append(f'Mode: goal-oriented (a trial completes when the goal is grasped; it fails after '
                     f'{result["max_goal_grasp_failures"]} consecutive failed goal grasps)')
    else:
        lines.append(f'Mode: clearance (a trial completes after {result["num_obj_complete"]} successful '
                     f'grasps; it fails after {result["max_goal_grasp_failures"]} consecutive failed grasps)')
    lines.append(f'Finished trials: {result["num_trials"]}   grasp success from: {result["success_source"]}')
    for note in result['notes']:
        lines.append(f'Note: {note}')
    if result['trials']:
        lines.append('')
        lines.append(f'{"trial":>5} {"rows":>13} {"actions":>7} {"pushes":>6} {"grasps":>6} '
                     f'{"success":>7} {"target":>6} {"completed":>9} {"MN":>4} {"GS %":>6}')
        for t in result['trials']:
            rows = f'{t["start_row"]}-{t["end_row"] - 1}'
            gs = '' if t['goal_grasp_success_pct'] is None else f'{t["goal_grasp_success_pct"]:.1f}'
            mn = '' if t['motion_number'] is None else str(t['motion_number'])
            lines.append(f'{t["trial"]:>5} {rows:>13} {t["actions"]:>7} {t["pushes"]:>6} {t["grasps"]:>6} '
                         f'{t["successful_grasps"]:>7} {t["target_grasps"]:>6} '
                         f'{"yes" if t["completed"] else "no":>9} {mn:>4} {gs:>6}')
    lines.append('')
    mn = result['motion_number']
    rows = [
        ('Completion', _fmt_pct(result['completion_pct'])
         + (f'  ({result["num_completed"]}/{result["num_trials"]})' if result['num_trials'] else '')),
        ('Goal grasp success (GS)', _fmt_pct(result['goal_grasp_success_pct'])),
        ('Motion number (MN)', 'n/a' if mn is None else f'{mn:.2f}'),
        ('Paper code: completion', _fmt_pct(result['paper_code_completion_pct'])
         + f'  (of {result["paper_code_num_trials"]} trials with a grasp; no failure cap)'),
        ('Paper code: GS', _fmt_pct(result['paper_code_goal_grasp_success_pct'])
         + '  (grasps rewarded >= 0.5 / grasps, whole trials)'),
        ('Paper code: MN', 'n/a' if result['paper_code_motion_number'] is None
         else f'{result["paper_code_motion_number"]:.2f}'),
        ('First grasp took the goal', _fmt_pct(result['first_grasp_goal_success_pct'])),
        ('MN split', _fmt_split(result.get('motion_split'))),
        ('VPG clearance', _fmt_pct(result['clearance_pct'])),
        ('VPG grasp success', _fmt_pct(result['grasp_success_pct'])),
        ('Grasp success, all trials', _fmt_pct(result['grasp_success_all_pct'])),
        ('VPG action efficiency', _fmt_pct(result['action_efficiency_pct'])),
        ('VPG grasp-to-push ratio', _fmt_pct(result['grasp_to_push_ratio_pct'])),
    ]
    width = max(len(r[0]) for r in rows)
    lines.extend(f'{name:<{width}}  {value}' for name, value in rows)
    return '\n'.join(lines)


def _save_figure(fig, path: str | os.PathLike) -> None:
    """Write a matplotlib figure as a PNG atomically (never a half-written file) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_evaluation(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Save a figure: per-trial motion number (trials not completed in grey, at their full
    length) and the cumulative goal grasp success, pooled: target grasps / grasp attempts over
    all finished trials so far (the headline GS is instead the mean over completed trials)."""
    import matplotlib
    matplotlib.use('Agg')  # headless: never needs a display
    import matplotlib.pyplot as plt

    trials = result['trials']
    idx = np.arange(len(trials))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    heights = [t['motion_number'] if t['completed'] else t['actions'] for t in trials]
    colors = ['tab:blue' if t['completed'] else 'lightgray' for t in trials]
    ax1.bar(idx, heights, color=colors)
    if result['motion_number'] is not None:
        ax1.axhline(result['motion_number'], color='tab:red', linestyle='--',
                    label=f'mean MN {result["motion_number"]:.2f} (completed)')
        ax1.legend(loc='upper right')
    ax1.set_ylabel('motion number')
    ax1.set_title(f'completion {_fmt_pct(result["completion_pct"])}, '
                  f'GS {_fmt_pct(result["goal_grasp_success_pct"])} (grey: not completed)')
    grasps = np.cumsum([t['grasps'] for t in trials])
    hits = np.cumsum([t['target_grasps'] for t in trials])
    with np.errstate(invalid='ignore', divide='ignore'):
        cumulative = np.where(grasps > 0, 100.0 * hits / np.maximum(grasps, 1), np.nan)
    completed = np.cumsum([t['completed'] for t in trials])
    few = len(trials) <= 60  # markers only where they stay apart
    ax2.plot(idx, cumulative, marker='o' if few else None, label='goal grasp success (pooled grasps)')
    ax2.plot(idx, 100.0 * completed / (idx + 1), marker='s' if few else None, label='completion')
    ax2.set_ylim(0, 105)
    ax2.set_ylabel('cumulative success %\n(trials so far)')
    ax2.legend(loc='lower right', fontsize=8)
    ax2.set_xlabel('trial')
    _save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Learning curves of training sessions (the paper's Fig. 5)
# ----------------------------------------------------------------------------------------------
def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of the last `window` values at each index (fewer at the start)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def training_curve(directory: str | os.PathLike, window: int = 100) -> dict[str, Any]:
    """Goal grasp success and grasp Q against episodes for a training session.

    Every grasp ends an episode (stage grasp_only: each iteration; push_only: the grasp after
    the pushes), so episode k is the k-th grasp. Returns 'episodes' (1..n), 'goal_success'
    (0/1 per grasp: the goal came up), 'goal_success_ma' (moving average over `window`
    grasps), 'grasp_q' (the net's Q of each executed grasp) and 'grasp_q_ma'; and for the
    greedy grasps alone (the net's own choice, not an exploration policy's) 'greedy_episodes'
    and 'greedy_success_ma' (moving average over the last `window` greedy grasps); for the plot
    against iterations 'iterations' (rows), 'grasp_iterations' (the iteration of each grasp),
    'greedy_iterations', 'push_iterations', 'push_reward' and 'push_reward_ma' (moving average
    over the last `window` pushes)."""
    transitions = Path(directory) / 'transitions'
    actions = _load_log(transitions, 'executed-action', required=True)
    primitive = actions[:, 0] if actions.size else np.zeros(0)
    n = primitive.shape[0]
    grasp_obj = _column(_load_log(transitions, 'grasp-obj', required=True), 'grasp-obj', n)
    goal_obj = _column(_load_log(transitions, 'goal-obj', required=True), 'goal-obj', n)
    predicted = _column(_load_log(transitions, 'predicted-value', required=True), 'predicted-value', n)
    grasp = primitive == 1
    success = ((grasp_obj >= 0) & ((grasp_obj == goal_obj) | (goal_obj < 0)))[grasp].astype(float)
    q = predicted[grasp]
    exploit = _load_log(transitions, 'is-exploit', required=False)
    greedy = (_column(exploit, 'is-exploit', n)[grasp] > 0) if exploit is not None and exploit.size \
        else np.ones(success.size, bool)
    episodes = np.arange(1, success.size + 1)
    return {'episodes': episodes, 'goal_success': success,
            'goal_success_ma': moving_average(success, window), 'grasp_q': q,
            'grasp_q_ma': moving_average(q, window), 'window': window,
            'greedy_episodes': episodes[greedy], 'greedy_success_ma': moving_average(success[greedy], window),
            **_iteration_curves(transitions, primitive, greedy, window)}


def _iteration_curves(transitions: Path, primitive: np.ndarray, greedy: np.ndarray, window: int) -> dict[str, Any]:
    n = primitive.shape[0]
    grasp_rows = np.flatnonzero(primitive == 1)
    push = primitive == 0
    reward = _column(_load_log(transitions, 'reward-value', required=False), 'reward-value', n)
    push_reward = reward[push] if reward is not None else np.zeros(0)
    return {'iterations': n, 'grasp_iterations': grasp_rows, 'greedy_iterations': grasp_rows[greedy],
            'push_iterations': np.flatnonzero(push) if reward is not None else np.zeros(0, dtype=int),
            'push_reward': push_reward, 'push_reward_ma': moving_average(push_reward, window)}


def plot_training_curves(curves: dict[str, dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """One PNG: goal grasp success (moving average) and grasp Q against episodes, a line per
    labelled curve (training_curve's output)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for label, c in curves.items():
        if c['episodes'].size == 0:
            continue
        line, = ax1.plot(c['episodes'], 100 * c['goal_success_ma'], label=label)
        if 'greedy_episodes' in c and c['greedy_episodes'].size < c['episodes'].size:
            ax1.plot(c['greedy_episodes'], 100 * c['greedy_success_ma'], linestyle='--', color=line.get_color(),
                     label=f'{label}: greedy grasps only')
        ax2.plot(c['episodes'], c['grasp_q_ma'], label=label)
    window = next(iter(curves.values()))['window'] if curves else 100
    ax1.set_ylabel(f'goal grasp success %\n(last {window} grasps)')
    ax1.set_ylim(0, 100)
    ax1.axhline(80, color='gray', linestyle=':', linewidth=1)
    ax1.set_title(title)
    ax1.legend(loc='lower right', fontsize=8)
    ax2.set_ylabel(f'grasp Q of the executed grasp\n(mean of the last {window})')
    ax2.set_xlabel('episode (one grasp each)')
    _save_figure(fig, path)


def plot_training_session(curve: dict[str, Any], path: str | os.PathLike, title: str) -> None:
    """One training session against iterations: goal grasp success (moving average over the
    last `window` grasps, drawn at each grasp's iteration; dashed: the greedy grasps alone), the
    grasp Q of the executed grasps and, when the session pushed, the push reward (moving average
    over the last `window` pushes)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    pushes = curve['push_iterations'].size > 0
    fig, axes = plt.subplots(3 if pushes else 2, 1, figsize=(8, 8 if pushes else 6), sharex=True)
    window = curve['window']
    ax = axes[0]
    ax.plot(curve['grasp_iterations'], 100 * curve['goal_success_ma'], color='tab:green', label='all grasps')
    if curve['greedy_iterations'].size < curve['grasp_iterations'].size:
        ax.plot(curve['greedy_iterations'], 100 * curve['greedy_success_ma'], color='tab:green', linestyle='--',
                label='greedy grasps only')
    ax.set_ylim(0, 100)
    ax.axhline(80, color='gray', linestyle=':', linewidth=1)
    ax.set_ylabel(f'goal grasp success %\n(last {window} grasps)')
    ax.legend(loc='lower right', fontsize=8)
    ax.set_title(f'{title}: {curve["iterations"]} iterations, {curve["episodes"].size} grasps'
                 + (f', {curve["push_iterations"].size} pushes' if pushes else ''))
    ax = axes[1]
    ax.plot(curve['grasp_iterations'], curve['grasp_q_ma'], color='tab:blue')
    ax.set_ylabel(f'grasp Q of the executed\ngrasp (last {window})')
    if pushes:
        ax = axes[2]
        ax.plot(curve['push_iterations'], curve['push_reward_ma'], color='tab:red')
        ax.set_ylabel(f'push reward\n(last {window} pushes)')
    axes[-1].set_xlabel('iteration')
    _save_figure(fig, path)


def is_training_session(directory: str | os.PathLike) -> bool | None:
    """From the session's info/config.json: True for training, False for testing, None unknown."""
    path = Path(directory) / 'info' / 'config.json'
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return not config.get('is_testing', False) if isinstance(config, dict) else None


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the result as JSON (no NaN: undefined values are null)."""
    text = json.dumps(result, indent=2, allow_nan=False) + '\n'
    atomic_write_bytes(path, text.encode('utf-8'))


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Evaluate a test session: completion, goal grasp success (GS), '
                                            'motion number (MN) and the VPG figures.')
    p.add_argument('--session_directory', required=True, help='session folder, e.g. logs/2021-01-01.12:00:00')
    p.add_argument('--num_obj_complete', type=int, default=1,
                   help='target grasps that complete a trial: 1 = goal-oriented (default), N > 1 = VPG clearance')
    p.add_argument('--max_goal_grasp_failures', type=int, default=DEFAULT_MAX_GOAL_GRASP_FAILURES,
                   help='a trial fails after this many consecutive failed (goal) grasps (default 10)')
    p.add_argument('--json', default=None, help='where to write the JSON (default <session>/evaluation.json)')
    p.add_argument('--no_plot', action='store_true', help='do not write <session>/evaluation.png (nor the '
                                                          'training curve)')
    p.add_argument('--training_curve', action='store_true',
                   help='also draw <session>/training-curve.png (goal grasp success, grasp Q and push reward '
                        'against iterations, moving averages); the default for a session whose '
                        'info/config.json says it trained')
    p.add_argument('--window', type=int, default=100, help='moving-average window of the training curve (default 100)')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        result = evaluate_session(args.session_directory, args.num_obj_complete, args.max_goal_grasp_failures)
        print(format_report(result))
        session = Path(args.session_directory)
        json_path = Path(args.json) if args.json else session / 'evaluation.json'
        try:
            write_json(result, json_path)
        except OSError as e:
            raise UserError(f'cannot write {json_path}: {e.strerror or e}') from None
        print(f'\nWrote {json_path}')
        if not args.no_plot:
            if result['trials']:
                plot_path = session / 'evaluation.png'
                try:
                    plot_evaluation(result, plot_path)
                except OSError as e:
                    raise UserError(f'cannot write {plot_path}: {e.strerror or e}') from None
                print(f'Wrote {plot_path}')
            else:
                print('No plot: no finished trials')
            if args.training_curve or is_training_session(session):
                if args.window < 1:
                    raise UserError(f'--window must be at least 1, got {args.window}')
                curve_path = session / 'training-curve.png'
                curve = training_curve(session, args.window)
                if curve['iterations'] == 0:
                    print('No training curve: no actions')
                else:
                    try:
                        plot_training_session(curve, curve_path, f'training session {session.name}')
                    except OSError as e:
                        raise UserError(f'cannot write {curve_path}: {e.strerror or e}') from None
                    print(f'Wrote {curve_path}')
    except UserError as e:
        msg = ' '.join(str(e).split())  # one line, whatever the message held
        print(f'evaluate.py: error: {msg}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
