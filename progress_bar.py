"""The progress bar of a training or test run on a terminal (tqdm).

One line, redrawn in place: the iteration (training) or the trial (testing) out of its limit,
the recent goal grasp success (the last 100 grasps; any object's grasps in a goal-agnostic run),
the recent push reward (the last 50 pushes), seconds per iteration (the last 20) and, when a
limit is set (--max_iterations when training, --max_test_trials when testing), the time left.
When stderr is not a terminal (a log file, a pipe) there is no bar and main.py prints one line
per action instead; on a terminal those lines come only with --verbose, above the bar.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import IO, Sequence

RECENT_PUSHES = 50
RECENT_ITERATIONS = 20
FALLBACK_COLUMNS = 100  # a terminal that reports no width (some pseudo-terminals) still gets a bar


class ProgressBar:
    def __init__(self, training: bool, iteration: int, trials_finished: int, max_iterations: int,
                 max_test_trials: int, goal_conditioned: bool, file: IO[str] | None = None) -> None:
        from tqdm import tqdm

        self.training = training
        self.goal_conditioned = goal_conditioned
        self.iteration = iteration
        self.max_iterations = max_iterations
        self._push_rewards: list[float] = []
        self._durations: list[float] = []
        self._last = time.monotonic()
        self._grasps = "-"
        file = file if file is not None else sys.stderr
        width = shutil.get_terminal_size((0, 0)).columns
        sizing = {"dynamic_ncols": True} if width > 0 else {"ncols": FALLBACK_COLUMNS}
        if training:
            total = max_iterations or None
            counted = "{n_fmt}/{total_fmt} it" if total else "{n_fmt} it"
            self._bar = tqdm(total=total, initial=iteration, unit="it", desc="train", file=file, **sizing,
                             bar_format=self._format(counted, bool(total)))
        else:
            self._bar = tqdm(total=max_test_trials, initial=trials_finished, unit="trial", desc="test", file=file,
                             **sizing, bar_format=self._format("trial {n_fmt}/{total_fmt}", True))
        self._refresh_postfix()

    @staticmethod
    def _format(counted: str, has_total: bool) -> str:
        if has_total:
            return "{desc} {percentage:3.0f}%|{bar}| " + counted + " [{elapsed}<{remaining} left{postfix}]"
        return "{desc} " + counted + " [{elapsed}{postfix}]"

    # --- what main.py calls --------------------------------------------------------------------
    def iteration_done(self, iteration: int, primitive: str, reward: float, recent_grasps: Sequence[int]) -> None:
        """After an action is labelled: its reward and the last 100 grasp outcomes (0/1)."""
        now = time.monotonic()
        self._durations = (self._durations + [now - self._last])[-RECENT_ITERATIONS:]
        self._last = now
        self.iteration = iteration
        if primitive == "push":
            self._push_rewards = (self._push_rewards + [float(reward)])[-RECENT_PUSHES:]
        if recent_grasps:
            self._grasps = f"{100.0 * sum(recent_grasps) / len(recent_grasps):.0f}% ({len(recent_grasps)})"
        self._refresh_postfix()
        if self.training:
            self._bar.update(1)
        else:
            self._bar.refresh()

    def trial_done(self) -> None:
        if not self.training:
            self._bar.update(1)

    def write(self, line: str) -> None:
        """A line above the bar (the bar is redrawn under it)."""
        self._bar.write(line)

    def close(self) -> None:
        self._bar.close()

    # --- the figures after the counter ---------------------------------------------------------
    def seconds_per_iteration(self) -> float | None:
        return sum(self._durations) / len(self._durations) if self._durations else None

    def postfix(self) -> str:
        parts = [] if self.training else [f"it {self.iteration}"]
        parts.append(f"{'goal grasps' if self.goal_conditioned else 'grasps'} {self._grasps}")
        if self._push_rewards:
            parts.append(f"push reward {sum(self._push_rewards) / len(self._push_rewards):+.2f}")
        spi = self.seconds_per_iteration()
        parts.append(f"{spi:.2f} s/it" if spi is not None else "- s/it")
        if not self.training and self.max_iterations and spi is not None:
            # A test run stopped by --max_iterations too: the time that limit leaves.
            parts.append(f"max_iterations in {_clock(max(self.max_iterations - self.iteration, 0) * spi)}")
        return ", ".join(parts)

    def _refresh_postfix(self) -> None:
        self._bar.set_postfix_str(self.postfix(), refresh=False)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def make(training: bool, iteration: int, trials_finished: int, max_iterations: int, max_test_trials: int,
         goal_conditioned: bool) -> ProgressBar | None:
    """The bar on a terminal (stderr), None elsewhere."""
    if not sys.stderr.isatty():
        return None
    return ProgressBar(training, iteration, trials_finished, max_iterations, max_test_trials, goal_conditioned)
