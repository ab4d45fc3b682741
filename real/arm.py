"""Arms for the real robot: a UR5 through ur-rtde (`RTDEArm`) and one that connects to nothing
(`DryRunArm`). Poses are fingertip TCP poses (real.motion).

`check(waypoints)` runs before the first command of a primitive: the local envelope and, for
the UR5, the controller's own isPoseWithinSafetyLimits (isJointsWithinSafetyLimits for joint
moves). Guarded descents (`move_until_contact`) stop on ur-rtde's toolContact or on a TCP force
change beyond a threshold instead of driving into whatever lies below and tripping a protective
stop; a protective stop is reported as one.

ur-rtde replaces the old hand-parsed port-30002 byte stream (SPEC section 10), so CB3 and
e-Series controllers both work; the e-Series must be in remote-control mode.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Callable, Protocol, Sequence

import numpy as np

from utils import UserError

from real.motion import SafetyEnvelope, Waypoint, describe

LOG = logging.getLogger(__name__)

RTDE_PORT = 30004
CONTACT_POLL_S = 0.004  # 250 Hz: at 5 cm/s the fingers travel 0.2 mm between two looks
CONTACT_EXTRA_TIME_S = 2.0  # a guarded move may take this long beyond distance / speed
STOP_DECELERATION_M_S2 = 2.0  # stopL after a contact: stop within ~1 mm at 5 cm/s
ARRIVED_TOLERANCE_M = 0.002  # a guarded move that ended this close to its pose reached it
HOME_TOLERANCE_M = 0.005  # the cell's home TCP pose vs the controller's forward kinematics
HOME_TOLERANCE_RAD = np.deg2rad(2.0)


class Arm(Protocol):
    """What real.ur5.UR5Robot needs from an arm."""

    def set_tool_offset(self, tool_offset_m: float) -> None: ...
    def check(self, waypoints: Sequence[Waypoint]) -> list[str]: ...
    def move_linear(self, waypoint: Waypoint) -> None: ...
    def move_until_contact(self, waypoint: Waypoint, contact_force_n: float) -> bool: ...
    def move_joints(self, waypoint: Waypoint) -> None: ...
    def tcp_pose(self) -> np.ndarray: ...
    def disconnect(self) -> None: ...


class DryRunArm:
    """An arm that connects to nothing: validates each motion locally and records it.

    `motions` is the list of waypoints in execution order; tests compare it with the expected
    sequence. `log` receives one line per motion (main's dry run prints them).
    """

    def __init__(self, envelope: SafetyEnvelope | None = None, start_pose: np.ndarray | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.envelope = envelope
        self.motions: list[Waypoint] = []
        self.tool_offset_m: float | None = None
        self.log = log or LOG.info
        self._pose = np.asarray(start_pose, dtype=float) if start_pose is not None else np.full(6, np.nan)

    def set_tool_offset(self, tool_offset_m: float) -> None:
        self.tool_offset_m = tool_offset_m
        self.log(f"dry run: setTcp [0, 0, {tool_offset_m:g}, 0, 0, 0] (fingertip TCP)")

    def check(self, waypoints: Sequence[Waypoint]) -> list[str]:
        local = self.envelope.check(waypoints) if self.envelope is not None else ["not checked"] * len(waypoints)
        return [f"{line}; controller: not asked (dry run)" for line in local]

    def _record(self, waypoint: Waypoint) -> None:
        if self.envelope is not None:
            self.envelope.check_one(waypoint)
        self.motions.append(waypoint)
        self._pose = np.asarray(waypoint.pose, dtype=float)
        self.log(f"dry run: {describe(waypoint)}")

    def move_linear(self, waypoint: Waypoint) -> None:
        self._record(waypoint)

    def move_until_contact(self, waypoint: Waypoint, contact_force_n: float) -> bool:
        """Nothing is in the way of a dry run: the descent reaches its pose (False: no contact)."""
        self._record(waypoint)
        self.log(f"dry run:   ... stops early on toolContact or a TCP force change > {contact_force_n:g} N")
        return False

    def move_joints(self, waypoint: Waypoint) -> None:
        self._record(waypoint)

    def tcp_pose(self) -> np.ndarray:
        return self._pose.copy()

    def disconnect(self) -> None:
        pass


def probe_tcp(host: str, port: int, timeout_s: float) -> str | None:
    """None if something accepts TCP connections at host:port within timeout_s, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return str(error) or type(error).__name__


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _floats(values) -> list[float]:
    return [float(v) for v in values]


class RTDEArm:
    """A UR5 driven through ur-rtde's RTDEControlInterface / RTDEReceiveInterface.

    The controller is probed first (TCP to `rtde_port`, `connect_timeout_s`) because an
    unroutable address would otherwise block for the OS connect timeout inside ur-rtde.
    """

    def __init__(self, host: str, envelope: SafetyEnvelope, connect_timeout_s: float = 2.0,
                 rtde_port: int = RTDE_PORT) -> None:
        self.host = host
        self.envelope = envelope
        self.tool_offset_m = envelope.tool_offset_m
        reason = probe_tcp(host, rtde_port, connect_timeout_s)
        if reason is not None:
            raise UserError(f"cannot reach UR5 at {host}: port {rtde_port}: {reason} "
                            "(check the address, the cable and that the robot is powered on)")
        try:
            import rtde_control
            import rtde_receive
        except ImportError as error:
            raise UserError(f"ur-rtde is not installed ({_one_line(error)}): pip install ur-rtde") from None
        self._control = None
        try:
            self._receive = rtde_receive.RTDEReceiveInterface(host)
        except RuntimeError as error:
            raise UserError(f"cannot reach UR5 at {host}: {_one_line(error)}") from None
        try:
            self._control = rtde_control.RTDEControlInterface(host)
        except RuntimeError as error:
            self._receive.disconnect()  # connected a moment ago: do not leave it open
            self._receive = None
            raise UserError(f"cannot reach UR5 at {host}: {_one_line(error)}") from None

    def set_tool_offset(self, tool_offset_m: float) -> None:
        if not self._control.setTcp([0.0, 0.0, float(tool_offset_m), 0.0, 0.0, 0.0]):
            raise UserError(f"UR5 at {self.host} refused the TCP offset {tool_offset_m} m")
        self.tool_offset_m = float(tool_offset_m)

    # --- checks before anything moves -----------------------------------------------------
    def check(self, waypoints: Sequence[Waypoint]) -> list[str]:
        """Local envelope, then the controller's own limits, for every waypoint; sends no motion."""
        lines = []
        for waypoint in waypoints:
            local = self.envelope.check_one(waypoint)
            pose = _floats(waypoint.pose)
            where = f"waypoint '{waypoint.label}' {np.round(pose, 4).tolist()}"
            if waypoint.is_joint_move:
                joints = _floats(waypoint.joints_rad)
                if not self._control.isJointsWithinSafetyLimits(joints):
                    raise UserError(f"UR5 controller refuses {where}: joints {np.round(joints, 4).tolist()} rad are "
                                    "outside its safety limits (isJointsWithinSafetyLimits)")
            if not self._control.isPoseWithinSafetyLimits(pose):
                raise UserError(f"UR5 controller refuses {where}: outside its safety limits (planes, tool "
                                "orientation or reach; isPoseWithinSafetyLimits)")
            lines.append(f"{local}; controller: within its safety limits")
        return lines

    def check_home(self, home: Waypoint) -> None:
        """The cell's home TCP pose must be what the controller computes for the home joints."""
        computed = np.asarray(self._control.getForwardKinematics(_floats(home.joints_rad),
                                                                 [0.0, 0.0, self.tool_offset_m, 0.0, 0.0, 0.0]))
        position_error = float(np.linalg.norm(computed[:3] - np.asarray(home.pose[:3], dtype=float)))
        from scipy.spatial.transform import Rotation

        rotation_error = (Rotation.from_rotvec(computed[3:]) * Rotation.from_rotvec(home.pose[3:]).inv()).magnitude()
        if position_error > HOME_TOLERANCE_M or rotation_error > HOME_TOLERANCE_RAD:
            raise UserError(f"the cell's home_tcp_pose {np.round(home.pose, 4).tolist()} is not where its home joints "
                            f"put the tool (controller: {np.round(computed, 4).tolist()}): record the home again "
                            "with `python -m real.calibrate --cell_only --record_home`")

    # --- motions ------------------------------------------------------------------------------
    def move_linear(self, waypoint: Waypoint) -> None:
        self.envelope.check_one(waypoint)
        if not self._control.moveL(_floats(waypoint.pose), float(waypoint.speed), float(waypoint.acceleration)):
            self._failed(waypoint)

    def move_joints(self, waypoint: Waypoint) -> None:
        self.envelope.check_one(waypoint)
        if not waypoint.is_joint_move:
            raise ValueError(f"waypoint '{waypoint.label}' is not a joint move")
        if not self._control.moveJ(_floats(waypoint.joints_rad), float(waypoint.speed), float(waypoint.acceleration)):
            self._failed(waypoint)

    def move_until_contact(self, waypoint: Waypoint, contact_force_n: float) -> bool:
        """Move towards the pose, stop on contact; True if a contact stopped it short.

        An asynchronous moveL is watched every CONTACT_POLL_S: toolContact (the controller's own
        contact detection along the motion) or a TCP force change beyond contact_force_n stops
        it with stopL.
        """
        self.envelope.check_one(waypoint)
        target = np.asarray(waypoint.pose, dtype=float)
        start = np.asarray(self._receive.getActualTCPPose(), dtype=float)
        direction = target[:3] - start[:3]
        distance = float(np.linalg.norm(direction))
        direction = direction / distance if distance > 0 else np.array([0.0, 0.0, -1.0])
        baseline = np.asarray(self._receive.getActualTCPForce(), dtype=float)[:3]
        if not self._control.moveL(_floats(target), float(waypoint.speed), float(waypoint.acceleration), True):
            self._failed(waypoint)
        deadline = time.monotonic() + distance / waypoint.speed + CONTACT_EXTRA_TIME_S
        while True:
            if self._receive.isProtectiveStopped():
                self._failed(waypoint)
            force = np.asarray(self._receive.getActualTCPForce(), dtype=float)[:3]
            if self._control.toolContact(_floats([*direction, 0.0, 0.0, 0.0])) > 0 or \
                    np.linalg.norm(force - baseline) > contact_force_n:
                self._control.stopL(STOP_DECELERATION_M_S2)
                reached = np.asarray(self._receive.getActualTCPPose(), dtype=float)
                LOG.info("guarded '%s' stopped on contact at %s", waypoint.label, np.round(reached[:3], 4).tolist())
                return True
            if self._control.getAsyncOperationProgress() < 0:  # no motion running any more ...
                reached = np.asarray(self._receive.getActualTCPPose(), dtype=float)
                if np.linalg.norm(reached[:3] - target[:3]) < ARRIVED_TOLERANCE_M:  # ... and it got there
                    return False
            if time.monotonic() > deadline:
                self._control.stopL(STOP_DECELERATION_M_S2)
                raise UserError(f"UR5 guarded move '{waypoint.label}' did not finish within "
                                f"{distance / waypoint.speed + CONTACT_EXTRA_TIME_S:.1f} s: stopped")
            time.sleep(CONTACT_POLL_S)

    def _failed(self, waypoint: Waypoint) -> None:
        """A refused or interrupted move: say whether the arm is in a protective stop."""
        if self._receive.isProtectiveStopped():
            raise UserError(f"UR5 protective stop during '{waypoint.label}': the arm hit something or was pushed; "
                            "look at the cell, then unlock the protective stop on the pendant")
        raise UserError(f"UR5 move '{waypoint.label}' failed: check the pendant (remote-control mode, "
                        "emergency stop, program state)")

    def tcp_pose(self) -> np.ndarray:
        return np.asarray(self._receive.getActualTCPPose(), dtype=float)

    def joints(self) -> np.ndarray:
        return np.asarray(self._receive.getActualQ(), dtype=float)

    def disconnect(self) -> None:
        control, receive = getattr(self, "_control", None), getattr(self, "_receive", None)
        self._control = self._receive = None
        if control is not None:
            try:
                control.stopScript()  # leave the controller idle, not running our RTDE script
            except RuntimeError as error:  # already disconnected (e.g. protective stop): still close
                LOG.warning("UR5 stopScript failed: %s", _one_line(error))
            control.disconnect()
        if receive is not None:
            receive.disconnect()
