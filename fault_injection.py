"""Fault injection for the crash-safety tests: die with SIGKILL at a named point of a run.

Set ``GPG_KILL_AT=<point>[@<iteration>]`` in the environment of a run; when the run reaches that
point (at that iteration, or at the first time without one) the process sends itself SIGKILL,
exactly as ``kill -9`` or a power cut would end it: no handler, no flush, no clean-up. Points:

- ``between_actions@N``: iteration N's transition is logged and learned, before the next action;
- ``snapshot_write@N``: in the middle of writing the resume state of iteration N (new files
  written, not yet committed);
- ``append:<log>@N``: right after row N of transitions/<log>.log.txt was appended (e.g.
  ``append:occupancy@3``, the last log of an iteration: the row is complete, not yet learned).

Without the variable every call is one dictionary look-up.
"""
from __future__ import annotations

import os
import signal

KILL_ENV = "GPG_KILL_AT"


def kill_point(name: str, iteration: int | None = None) -> None:
    """SIGKILL this process if GPG_KILL_AT names this point (and this iteration)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    point, _, at = spec.partition("@")
    if point != name or (at and (iteration is None or str(int(iteration)) != at.strip())):
        return
    os.kill(os.getpid(), signal.SIGKILL)
