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


# ----------------------------------------------------------------------------------------------
# Simulator faults (issue 7 item 3): GPG_SIM_FAULT=<kind>@<iteration>[,<kind>@<iteration>...]
# ----------------------------------------------------------------------------------------------
SIM_FAULT_ENV = "GPG_SIM_FAULT"
_fired: set[str] = set()  # each kind@iteration breaks one action (the faulty one is not counted, so
#                           the iteration comes again)


def sim_fault(backend, iteration: int):
    """A context around one primitive that breaks the MuJoCo simulator as GPG_SIM_FAULT says at
    this iteration (a do-nothing context otherwise). Kinds, as simulation.base.FAULT_KINDS:

    - ``nan_state``: an object's velocity becomes NaN (MuJoCo warns and resets its physics);
    - ``thrown_off``: an object is shot away at 6 m/s, off the table;
    - ``gripper_stuck``: the gripper cannot rise (lifts and rises do nothing);
    - ``finger_wedged``: the fingers do not open again after closing (use it on a grasp);
    - ``not_settled``: an object keeps moving at 20 cm/s (its speed as the simulator reports it), so
      the scene never comes to rest.

    Each kind@iteration fires once per process.
    """
    import contextlib

    spec = os.environ.get(SIM_FAULT_ENV)
    if not spec:
        return contextlib.nullcontext()
    parts = [part.strip() for part in spec.split(",")]
    due = [part for part in parts if part.partition("@")[2].strip() == str(int(iteration)) and part not in _fired]
    _fired.update(due)
    kinds = [part.partition("@")[0] for part in due]
    return _broken(backend, kinds) if kinds else contextlib.nullcontext()


def _broken(backend, kinds: list[str]):
    import contextlib

    import numpy as np

    @contextlib.contextmanager
    def context():
        in_scene = [i for i in range(len(backend.removed)) if not backend.removed[i]]
        victim = in_scene[0] if in_scene else 0
        dof = backend._object_dof[victim]
        patched = []
        if "nan_state" in kinds:
            backend.data.qvel[dof:dof + 3] = np.nan
        if "thrown_off" in kinds:
            backend.data.qvel[dof:dof + 3] = (6.0, 0.0, 3.0)
        if "gripper_stuck" in kinds:
            move = backend._move

            def no_rise(target_m, speed_m_s, guarded=False):
                if not guarded and target_m[2] > backend._gripper_position()[2] + 0.01:
                    return False
                return move(target_m, speed_m_s, guarded)
            backend._move = no_rise
            backend._lift = lambda above_m, speed_m_s: None
            patched += ["_move", "_lift"]
        if "finger_wedged" in kinds:
            backend._open_fingers = lambda: None
            patched.append("_open_fingers")
        if "not_settled" in kinds:
            speeds = backend._object_speeds

            def jittering():  # an object that keeps shaking at 20 cm/s, as interpenetrating shapes do
                linear, angular = speeds()
                linear = linear.copy()
                linear[victim] = max(float(linear[victim]), 0.2)
                return linear, angular
            backend._object_speeds = jittering
            patched.append("_object_speeds")
        try:
            yield
        finally:
            for name in patched:
                delattr(backend, name)  # the class's own methods again
    return context()
