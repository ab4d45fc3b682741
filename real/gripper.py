"""Parallel-jaw grippers for the real robot: Robotiq 2F-85 over its URCap socket, and a null one.

The Robotiq URCap (installed on the UR controller) listens on TCP port 63352 of the robot's
address and speaks a line-based ASCII protocol:
    "SET VAR value [VAR value ...]\\n"  -> "ack"
    "GET VAR\\n"                        -> "VAR value"
Variables used here (all integers 0..255 unless noted):
    ACT  activation request (1 = activate)      STA  status (3 = activation complete)
    GTO  go-to request (1 = move to POS)         PRE  echo of the last position request
    POS  requested (SET) / actual (GET) position, 0 = fully open, 255 = fully closed
    SPE  speed, FOR  force                       FLT  fault code (0 = none)
    OBJ  object detection: 0 moving, 1 stopped on an object while opening,
         2 stopped on an object while closing, 3 arrived at the requested position (no object)
A grasp succeeded when the fingers stopped on something while closing (OBJ 2) before reaching
the fully-closed position: SPEC section 6's "fingers stopped before fully closing".
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

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

    def disconnect(self) -> None:
        """Release the connection (idempotent)."""


class NullGripper(Gripper):
    """A gripper that connects to nothing (dry runs, tests): it logs and returns scripted results.

    `close_results`: object_detected answers returned by successive close() calls (the last
    one repeats); default always False, i.e. every grasp fails.
    """

    def __init__(self, close_results: list[bool] | None = None, open_width_m: float = ROBOTIQ_2F85_STROKE_M) -> None:
        self.close_results = list(close_results) if close_results else [False]
        self.open_width_m = open_width_m
        self.commands: list[str] = []

    def open(self) -> GripperState:
        self.commands.append("open")
        LOG.info("dry-run gripper: open")
        return GripperState(False, self.open_width_m)

    def close(self) -> GripperState:
        index = sum(1 for c in self.commands if c == "close")
        detected = self.close_results[min(index, len(self.close_results) - 1)]
        self.commands.append("close")
        LOG.info("dry-run gripper: close -> object_detected=%s", detected)
        return GripperState(detected, 0.03 if detected else 0.0)


class RobotiqGripper(Gripper):
    """Robotiq 2F-85 (or 2F-140, set stroke_m) through the URCap socket of the UR controller.

    host: the robot's IP address; port: 63352. Every socket operation has `timeout_s`; waits for
    motion end have `motion_timeout_s`. Connection errors become one-line UserErrors.
    speed and force are 0..255 (Robotiq units); force limits the grip (and so the squeeze).
    """

    def __init__(self, host: str, port: int = ROBOTIQ_URCAP_PORT, timeout_s: float = 2.0,
                 motion_timeout_s: float = 5.0, speed: int = 255, force: int = 100,
                 stroke_m: float = ROBOTIQ_2F85_STROKE_M, closed_threshold: int = 225,
                 activate: bool = True) -> None:
        self.host, self.port = host, port
        self.timeout_s, self.motion_timeout_s = timeout_s, motion_timeout_s
        self.speed, self.force = _byte("speed", speed), _byte("force", force)
        self.stroke_m = stroke_m
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
        """Activate once (the fingers open and close fully on first activation: keep clear)."""
        if self.get_var("STA") == 3:
            return
        self.set_vars(ACT=1)
        self._wait_until(lambda: self.get_var("STA") == 3, "activation")
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
        fault = self.get_var("FLT")
        if fault != 0:
            raise UserError(f"Robotiq gripper reports fault {fault}: see the gripper manual")
        actual = self.get_var("POS")
        detected = status == OBJ_STOPPED_CLOSING and actual < self.closed_threshold
        return GripperState(detected, self.position_to_width_m(actual), actual)

    def open(self) -> GripperState:
        return self.move(0)

    def close(self) -> GripperState:
        return self.move(255)

    def position_to_width_m(self, position: int) -> float:
        """Approximate finger opening for a Robotiq position (linear over the stroke)."""
        return float(self.stroke_m * (1.0 - min(max(position, 0), 255) / 255.0))

    def _wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + self.motion_timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise UserError(f"Robotiq gripper {what} did not finish within {self.motion_timeout_s} s")
            time.sleep(0.01)

    def disconnect(self) -> None:
        sock, self._socket = getattr(self, "_socket", None), None
        if sock is not None:
            sock.close()


def _byte(name: str, value: int) -> int:
    if not 0 <= int(value) <= 255:
        raise UserError(f"gripper {name} must be in 0..255, got {value}")
    return int(value)
