"""Parallel-jaw grippers for the real robot: Robotiq 2F-85 over its URCap socket, and a null one.

The Robotiq URCap (installed on the UR controller) listens on TCP port 63352 of the robot's
address and speaks a line-based ASCII protocol:
    "SET VAR value [VAR value ...]\\n"  -> "ack"
    "GET VAR\\n"                        -> "VAR value"
Variables used here (all integers 0..255 unless noted):
    ACT  activation request (1 = activate)      STA  status: 0 reset, 1 activating, 3 active
    GTO  go-to request (1 = move to POS)         PRE  echo of the last position request
    POS  requested (SET) / actual (GET) position, 0 = fully open, 255 = fully closed
    SPE  speed, FOR  force                       FLT  fault code (0 = none)
    OBJ  object detection: 0 moving, 1 stopped on an object while opening,
         2 stopped on an object while closing, 3 arrived at the requested position (no object)
A grasp succeeded when the fingers stopped on something while closing (OBJ 2) before reaching
the fully-closed position: SPEC section 6's "fingers stopped before fully closing". After the
lift the same test runs again (`holding`): an object lost or dropped reads OBJ 3.

Activation clears faults only on a rising edge of ACT: a gripper that faulted with ACT already 1
(an emergency stop, an obstruction during activation) ignores "SET ACT 1". So activation first
resets (ACT 0, wait for ACT 0 and STA 0), then activates and waits for STA 3; a 2F-85 opens and
closes fully meanwhile, which takes a few seconds.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable

from utils import UserError

LOG = logging.getLogger(__name__)

ROBOTIQ_URCAP_PORT = 63352
# Robotiq 2F-85: full stroke 0.085 m over position 0 (open) .. 255 (closed); approximate, the
# exact closed value depends on the unit's calibration (typically 227-230 with nothing held).
ROBOTIQ_2F85_STROKE_M = 0.085

OBJ_MOVING = 0
OBJ_STOPPED_OPENING = 1
OBJ_STOPPED_CLOSING = 2
OBJ_AT_POSITION = 3
STA_RESET, STA_ACTIVE = 0, 3
# A real 2F-85 activation (a full open and close) takes up to ~5 s, more when it must first find
# its stroke; 20 s leaves room without hiding a gripper that never activates.
ACTIVATION_TIMEOUT_S = 20.0
# Fault codes (Robotiq 2F-85 manual, gFLT); 0x0A and above are major faults.
FAULTS = {
    0x05: "action delayed: activation must complete first",
    0x07: "the activation bit must be set first",
    0x08: "maximum operating temperature exceeded",
    0x09: "no communication for at least 1 s",
    0x0A: "under minimum operating voltage",
    0x0B: "automatic release in progress",
    0x0C: "internal fault: contact Robotiq support",
    0x0D: "activation fault: check that nothing blocks the fingers",
    0x0E: "overcurrent",
    0x0F: "automatic release completed",
}
MAJOR_FAULT = 0x0A


def fault_text(code: int) -> str:
    return f"fault {code} (0x{code:02X}: {FAULTS.get(code, 'see the gripper manual')})"


@dataclass(frozen=True)
class GripperState:
    """What the gripper reports after a motion."""

    object_detected: bool  # fingers stopped on an object while closing
    width_m: float  # approximate finger opening, metres (NaN when unknown)
    raw_position: int = -1  # device-specific position (Robotiq 0..255), -1 when unknown


class Gripper:
    """Interface of a parallel gripper (blocking calls: each returns when the fingers stopped)."""

    def open(self) -> GripperState:
        raise NotImplementedError

    def close(self) -> GripperState:
        """Close with the configured force limit; the state says whether something is held."""
        raise NotImplementedError

    def holding(self) -> GripperState:
        """Read again, without moving, whether the closed fingers still hold something."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Release the connection (idempotent)."""


class NullGripper(Gripper):
    """A gripper that connects to nothing (dry runs, tests): it logs and returns scripted results.

    `close_results`: object_detected answers returned by successive close() calls (the last
    one repeats); default always False, i.e. every grasp fails. `hold_results`: the answers of
    successive holding() checks after the lift (default: still held whenever close caught it).
    """

    def __init__(self, close_results: list[bool] | None = None, open_width_m: float = ROBOTIQ_2F85_STROKE_M,
                 hold_results: list[bool] | None = None, log: Callable[[str], None] | None = None) -> None:
        self.close_results = list(close_results) if close_results else [False]
        self.hold_results = list(hold_results) if hold_results else None
        self.open_width_m = open_width_m
        self.commands: list[str] = []
        self.log = log or LOG.info
        self._held = False

    def _next(self, results: list[bool], command: str) -> bool:
        index = sum(1 for c in self.commands if c == command)
        return results[min(index, len(results) - 1)]

    def open(self) -> GripperState:
        self.commands.append("open")
        self._held = False
        self.log("dry run: gripper open")
        return GripperState(False, self.open_width_m)

    def close(self) -> GripperState:
        detected = self._next(self.close_results, "close")
        self.commands.append("close")
        self._held = detected
        self.log(f"dry run: gripper close (force-limited) -> object detected: {detected}")
        return GripperState(detected, 0.03 if detected else 0.0)

    def holding(self) -> GripperState:
        if self.hold_results is not None and self._held:
            self._held = self._next(self.hold_results, "holding")
        self.commands.append("holding")
        self.log(f"dry run: gripper re-check after the rise -> still holding: {self._held}")
        return GripperState(self._held, 0.03 if self._held else 0.0)


class RobotiqGripper(Gripper):
    """Robotiq 2F-85 (or 2F-140, set stroke_m) through the URCap socket of the UR controller.

    host: the robot's IP address; port: 63352. Every socket operation has `timeout_s`; waits for
    motion end have `motion_timeout_s`. Connection errors become one-line UserErrors.
    speed and force are 0..255 (Robotiq units); force limits the grip (and so the squeeze).
    """

    def __init__(self, host: str, port: int = ROBOTIQ_URCAP_PORT, timeout_s: float = 2.0,
                 motion_timeout_s: float = 5.0, speed: int = 255, force: int = 100,
                 stroke_m: float = ROBOTIQ_2F85_STROKE_M, closed_threshold: int = 225,
                 activate: bool = True, activation_timeout_s: float = ACTIVATION_TIMEOUT_S,
                 closed_position: int = 228) -> None:
        self.host, self.port = host, port
        self.timeout_s, self.motion_timeout_s = timeout_s, motion_timeout_s
        self.activation_timeout_s = activation_timeout_s
        self.speed, self.force = _byte("speed", speed), _byte("force", force)
        self.stroke_m = stroke_m
        # Where the fingers stop with nothing between them (typically 227-230, per unit): width 0.
        self.closed_position = _byte("closed position", closed_position)
        # Positions at or beyond this count as "fully closed": nothing between the fingers even
        # if OBJ said otherwise (a very thin or slipping object is not a grasp).
        self.closed_threshold = closed_threshold
        self._buffer = b""
        try:
            self._socket = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as error:
            raise UserError(f"cannot reach Robotiq gripper at {host}:{port}: {error} "
                            "(is the Robotiq URCap installed and the robot on?)") from None
        if activate:
            try:
                self.activate()
            except BaseException:
                self.disconnect()
                raise

    # --- protocol -------------------------------------------------------------------------
    def _exchange(self, command: str) -> str:
        """Send one command line, return the reply line without its newline."""
        try:
            self._socket.sendall(command.encode("ascii") + b"\n")
            deadline = time.monotonic() + self.timeout_s
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._socket.settimeout(remaining)
                chunk = self._socket.recv(1024)
                if not chunk:
                    raise UserError(f"Robotiq gripper at {self.host}:{self.port} closed the connection")
                self._buffer += chunk
                # Some URCap versions answer without a newline: a complete-looking reply that
                # is followed by silence for a moment is taken as it is.
                if b"\n" not in self._buffer and self._looks_complete(command):
                    self._socket.settimeout(0.05)
                    try:
                        more = self._socket.recv(1024)
                    except socket.timeout:
                        more = b""
                    self._buffer += more
                    if not more:
                        break
        except (socket.timeout, OSError) as error:
            raise UserError(f"Robotiq gripper at {self.host}:{self.port} did not answer '{command}': {error}") from None
        if not self._buffer:
            raise UserError(f"Robotiq gripper at {self.host}:{self.port} did not answer '{command}' "
                            f"within {self.timeout_s} s")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("ascii", errors="replace").strip()

    def _looks_complete(self, command: str) -> bool:
        text = self._buffer.decode("ascii", errors="replace").strip()
        if command.startswith("SET"):
            return text == "ack"
        parts = text.split()
        return len(parts) == 2 and parts[1].lstrip("-").isdigit()

    def set_vars(self, **values: int) -> None:
        """SET several variables at once, e.g. set_vars(POS=255, SPE=255, FOR=100)."""
        command = "SET " + " ".join(f"{name} {int(value)}" for name, value in values.items())
        reply = self._exchange(command)
        if reply != "ack":
            raise UserError(f"Robotiq gripper refused '{command}': replied '{reply}'")

    def get_var(self, name: str) -> int:
        reply = self._exchange(f"GET {name}")
        parts = reply.split()
        if len(parts) != 2 or parts[0] != name or not parts[1].lstrip("-").isdigit():
            raise UserError(f"Robotiq gripper gave an unexpected reply to 'GET {name}': '{reply}'")
        return int(parts[1])

    # --- operations -----------------------------------------------------------------------
    def activate(self) -> None:
        """Reset, then activate (the fingers open and close fully: keep clear); an active
        gripper without a fault is left as it is."""
        if self.get_var("STA") == STA_ACTIVE and self.get_var("FLT") == 0:
            return
        # The reset edge: without it a faulted gripper with ACT already 1 ignores the activation.
        self.set_vars(ACT=0, ATR=0)
        self._wait_until(lambda: self.get_var("ACT") == 0 and self.get_var("STA") == STA_RESET, "reset",
                         self.motion_timeout_s)
        self.set_vars(ACT=1)

        def active() -> bool:
            fault = self.get_var("FLT")
            if fault >= MAJOR_FAULT:  # will not clear by waiting
                raise UserError(f"Robotiq gripper activation failed: {fault_text(fault)}")
            return self.get_var("STA") == STA_ACTIVE

        self._wait_until(active, "activation", self.activation_timeout_s)
        self.set_vars(GTO=1)

    def move(self, position: int) -> GripperState:
        """Move to `position` (0 open .. 255 closed) and wait until the fingers stop."""
        position = _byte("position", position)
        self.set_vars(POS=position, SPE=self.speed, FOR=self.force, GTO=1)
        # PRE echoes the request once the controller took it; until then OBJ still describes the
        # previous motion and would end the wait too early.
        self._wait_until(lambda: self.get_var("PRE") == position, "position request")
        status = OBJ_MOVING

        def stopped() -> bool:
            nonlocal status
            status = self.get_var("OBJ")
            return status != OBJ_MOVING

        self._wait_until(stopped, "motion")
        return self._state(status)

    def _state(self, status: int) -> GripperState:
        fault = self.get_var("FLT")
        if fault != 0:
            raise UserError(f"Robotiq gripper reports {fault_text(fault)}")
        actual = self.get_var("POS")
        detected = status == OBJ_STOPPED_CLOSING and actual < self.closed_threshold
        return GripperState(detected, self.position_to_width_m(actual), actual)

    def open(self) -> GripperState:
        return self.move(0)

    def close(self) -> GripperState:
        return self.move(255)

    def holding(self) -> GripperState:
        """OBJ and POS now: still stopped on an object (OBJ 2) short of fully closed. An object
        that slipped out reads OBJ 3 (at the requested position) and a closed position."""
        return self._state(self.get_var("OBJ"))

    def position_to_width_m(self, position: int) -> float:
        """Approximate finger opening for a Robotiq position (linear from 0 open to closed_position)."""
        return float(self.stroke_m * max(self.closed_position - max(position, 0), 0) / self.closed_position)

    def _wait_until(self, condition, what: str, timeout_s: float | None = None) -> None:
        timeout_s = self.motion_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise UserError(f"Robotiq gripper {what} did not finish within {timeout_s:g} s")
            time.sleep(0.01)

    def disconnect(self) -> None:
        sock, self._socket = getattr(self, "_socket", None), None
        if sock is not None:
            sock.close()


def _byte(name: str, value: int) -> int:
    if not 0 <= int(value) <= 255:
        raise UserError(f"gripper {name} must be in 0..255, got {value}")
    return int(value)
