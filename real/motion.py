"""Motion plans of the real arm: waypoints, the local safety envelope, and each primitive's
waypoint list (SPEC sections 6 and 8). Pure numpy: no robot library is imported here.

A "fingertip point" is a plan's target (z = the fingertips' lowest point). The robot's TCP is
the fingertip point (the cell's tool_offset_m along the flange z axis), so every Cartesian pose
is a fingertip pose [x, y, z, rx, ry, rz] (UR rotation vector) with the tool z axis pointing
down and the plan's yaw about the base z axis. Home is a joint configuration (a joint move), so
the first Cartesian move of every primitive starts from one known pose.

Every primitive's whole waypoint list, the conditional ones (bin, retreat) and home included,
is checked before its first command: here (workspace box, tool down, speed and acceleration,
the UR5's reach measured from the flange) and by the controller (real.arm.RTDEArm.check).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

import robot
from robot import GraspPlan, PushPlan
from utils import UserError

from real.cell import Cell

# Conservative hard limits for an arm next to people; the UR's own safety configuration still applies.
MAX_TCP_SPEED_M_S = 0.5
MAX_TCP_ACCELERATION_M_S2 = 1.5
MAX_JOINT_SPEED_RAD_S = 1.05  # ur-rtde's default moveJ speed
MAX_JOINT_ACCELERATION_RAD_S2 = 1.4
# UR5 (CB3 and e-Series): 0.85 m reach, measured from the shoulder axis to the tool flange.
UR5_REACH_M = 0.85
UR5_SHOULDER_M = np.array([0.0, 0.0, 0.089159])  # shoulder joint centre above the base frame
# Tool-down check: the tool z axis must be within this angle of the base -z axis.
TOOL_DOWN_TOLERANCE_RAD = np.deg2rad(1.0)
POSITION_TOLERANCE_M = 1e-6
TRANSIT_MIN_HEIGHT_M = 0.05  # bin / home: at least this far above the table
TRANSIT_MAX_ABOVE_BOX_M = 0.3


@dataclass(frozen=True)
class Waypoint:
    """One move: a Cartesian moveL to pose, or a joint moveJ to joints_rad (when given).

    pose: the fingertip TCP pose [x, y, z, rx, ry, rz] (m, rotation vector rad) the move ends at
    (for a joint move, the pose those joints give). speed, acceleration: m/s and m/s^2 for a
    moveL, rad/s and rad/s^2 (the leading joint) for a moveJ.
    guarded: a descent, which stops on contact instead of pressing on to the pose.
    transit: a move outside the workspace box (bin, home): checked against the reach, not the box.
    """

    pose: np.ndarray
    speed: float
    acceleration: float
    label: str
    transit: bool = False
    guarded: bool = False
    joints_rad: np.ndarray | None = None

    @property
    def is_joint_move(self) -> bool:
        return self.joints_rad is not None


def joint_waypoint(joints_rad: np.ndarray, pose: np.ndarray, speed_rad_s: float, acceleration_rad_s2: float,
                   label: str) -> Waypoint:
    return Waypoint(np.asarray(pose, dtype=float), speed_rad_s, acceleration_rad_s2, label, transit=True,
                    joints_rad=np.asarray(joints_rad, dtype=float))


def tcp_pose(point_m: np.ndarray, yaw_rad: float, gripper_yaw_offset_rad: float = 0.0) -> np.ndarray:
    """Fingertip TCP pose with the tool pointing down (tool z = base -z) and the given yaw.

    R = Rz(yaw + offset) @ Rx(pi): at yaw 0 the tool x axis is base +x and the tool y axis is
    base -y, so fingers closing along the tool y axis close along base y, as robot.py requires.
    """
    rotation = Rotation.from_euler("z", yaw_rad + gripper_yaw_offset_rad) * Rotation.from_euler("x", np.pi)
    return np.concatenate([np.asarray(point_m, dtype=float).reshape(3), rotation.as_rotvec()])


def yaw_deg(pose: np.ndarray) -> float:
    """Yaw of a tool-down pose about the base z axis (the tool x axis' heading), degrees."""
    x_axis = Rotation.from_rotvec(np.asarray(pose, dtype=float)[3:]).as_matrix()[:, 0]
    return float(np.degrees(np.arctan2(x_axis[1], x_axis[0])))


def describe(waypoint: Waypoint) -> str:
    """One line: label, kind of move, target and speed (the dry run prints it)."""
    pose = np.asarray(waypoint.pose, dtype=float)
    where = f"{np.round(pose[:3], 4).tolist()} yaw {yaw_deg(pose):+.1f} deg"
    if waypoint.is_joint_move:
        joints = np.round(np.degrees(np.asarray(waypoint.joints_rad, dtype=float)), 2).tolist()
        return (f"{waypoint.label:<9} moveJ  joints {joints} deg -> TCP {where}, "
                f"{waypoint.speed:g} rad/s, {waypoint.acceleration:g} rad/s^2")
    kind = "guarded moveL (stops on contact)" if waypoint.guarded else "moveL"
    return f"{waypoint.label:<9} {kind} to {where}, {waypoint.speed:g} m/s, {waypoint.acceleration:g} m/s^2"


class SafetyEnvelope:
    """The local checks every motion passes before anything is sent (SPEC section 8)."""

    def __init__(self, workspace_limits_m: np.ndarray, max_speed_m_s: float, max_acceleration_m_s2: float,
                 tool_offset_m: float = 0.175, require_tool_down: bool = True,
                 max_joint_speed_rad_s: float = MAX_JOINT_SPEED_RAD_S,
                 max_joint_acceleration_rad_s2: float = MAX_JOINT_ACCELERATION_RAD_S2) -> None:
        self.workspace_limits_m = np.asarray(workspace_limits_m, dtype=float)
        if self.workspace_limits_m.shape != (3, 2) or not np.all(self.workspace_limits_m[:, 0] < self.workspace_limits_m[:, 1]):
            raise UserError(f"workspace limits must be 3 rows of [min, max] with min < max, got {workspace_limits_m!r}")
        if not 0 < max_speed_m_s <= MAX_TCP_SPEED_M_S:
            raise UserError(f"max speed {max_speed_m_s} m/s is outside (0, {MAX_TCP_SPEED_M_S}] m/s")
        if not 0 < max_acceleration_m_s2 <= MAX_TCP_ACCELERATION_M_S2:
            raise UserError(f"max acceleration {max_acceleration_m_s2} m/s^2 is outside (0, {MAX_TCP_ACCELERATION_M_S2}]")
        if not 0 < max_joint_speed_rad_s <= MAX_JOINT_SPEED_RAD_S:
            raise UserError(f"max joint speed {max_joint_speed_rad_s} rad/s is outside (0, {MAX_JOINT_SPEED_RAD_S}]")
        if not 0 < max_joint_acceleration_rad_s2 <= MAX_JOINT_ACCELERATION_RAD_S2:
            raise UserError(f"max joint acceleration {max_joint_acceleration_rad_s2} rad/s^2 is outside "
                            f"(0, {MAX_JOINT_ACCELERATION_RAD_S2}]")
        self.max_speed_m_s = max_speed_m_s
        self.max_acceleration_m_s2 = max_acceleration_m_s2
        self.max_joint_speed_rad_s = max_joint_speed_rad_s
        self.max_joint_acceleration_rad_s2 = max_joint_acceleration_rad_s2
        self.tool_offset_m = float(tool_offset_m)
        self.require_tool_down = require_tool_down

    def check(self, waypoints: Sequence[Waypoint]) -> list[str]:
        """What each waypoint passed, in order; UserError naming the first bad one and why."""
        return [self.check_one(waypoint) for waypoint in waypoints]

    def check_one(self, waypoint: Waypoint) -> str:
        pose = np.asarray(waypoint.pose, dtype=float)
        where = f"waypoint '{waypoint.label}' {np.round(pose, 4).tolist()}"
        if pose.shape != (6,) or not np.all(np.isfinite(pose)):
            raise UserError(f"unsafe motion refused: {where} is not a finite 6-vector pose")
        if waypoint.is_joint_move:
            joints = np.asarray(waypoint.joints_rad, dtype=float)
            if joints.shape != (6,) or not np.all(np.isfinite(joints)) or np.any(np.abs(joints) > 2 * np.pi + 1e-9):
                raise UserError(f"unsafe motion refused: {where} joints {joints.tolist()} are not 6 finite angles "
                                "within +-2 pi rad")
            speed, acceleration = self._limited(where, waypoint.speed, self.max_joint_speed_rad_s, "rad/s",
                                                waypoint.acceleration, self.max_joint_acceleration_rad_s2, "rad/s^2")
        else:
            speed, acceleration = self._limited(where, waypoint.speed, self.max_speed_m_s, "m/s",
                                                waypoint.acceleration, self.max_acceleration_m_s2, "m/s^2")
        passed = [speed, acceleration]
        rotation = Rotation.from_rotvec(pose[3:]).as_matrix()
        if self.require_tool_down:
            if np.arccos(np.clip(-rotation[2, 2], -1.0, 1.0)) > TOOL_DOWN_TOLERANCE_RAD:
                raise UserError(f"unsafe motion refused: {where} does not point the tool down")
            passed.append("tool down")
        table_z = self.workspace_limits_m[2][0]
        if waypoint.transit:
            if pose[2] < table_z + TRANSIT_MIN_HEIGHT_M:
                raise UserError(f"unsafe motion refused: {where} is less than {TRANSIT_MIN_HEIGHT_M * 100:g} cm above "
                                f"the table (z {table_z:g} m)")
            if pose[2] > self.workspace_limits_m[2][1] + TRANSIT_MAX_ABOVE_BOX_M:
                raise UserError(f"unsafe motion refused: {where} is more than {TRANSIT_MAX_ABOVE_BOX_M} m above the "
                                "workspace box")
            passed.append("above the table")
        else:
            low, high = self.workspace_limits_m[:, 0], self.workspace_limits_m[:, 1]
            if np.any(pose[:3] < low - POSITION_TOLERANCE_M) or np.any(pose[:3] > high + POSITION_TOLERANCE_M):
                raise UserError(f"unsafe motion refused: {where} is outside the workspace box "
                                f"{self.workspace_limits_m.tolist()}")
            passed.append("in the box")
        # The reach is the flange's, not the fingertip's: the flange sits tool_offset_m back along tool z.
        flange = pose[:3] - self.tool_offset_m * rotation[:, 2]
        reach = float(np.linalg.norm(flange - UR5_SHOULDER_M))
        if reach > UR5_REACH_M:
            raise UserError(f"unsafe motion refused: {where} puts the flange {np.round(flange, 3).tolist()} "
                            f"{reach:.3f} m from the shoulder, beyond the UR5's {UR5_REACH_M} m reach")
        passed.append(f"flange reach {reach:.3f} <= {UR5_REACH_M} m")
        return ", ".join(passed)

    @staticmethod
    def _limited(where: str, speed: float, max_speed: float, speed_unit: str, acceleration: float,
                 max_acceleration: float, acceleration_unit: str) -> tuple[str, str]:
        if not (np.isfinite(speed) and 0 < speed <= max_speed):
            raise UserError(f"unsafe motion refused: {where} speed {speed} {speed_unit} exceeds the limit "
                            f"{max_speed} {speed_unit} (or is not positive)")
        if not (np.isfinite(acceleration) and 0 < acceleration <= max_acceleration):
            raise UserError(f"unsafe motion refused: {where} acceleration {acceleration} {acceleration_unit} exceeds "
                            f"the limit {max_acceleration} {acceleration_unit} (or is not positive)")
        return f"speed {speed:g} <= {max_speed:g}", f"acc {acceleration:g} <= {max_acceleration:g}"


@dataclass
class MotionConfig:
    """The cell and how fast the arm may move in it (Cartesian in m/s, joints in rad/s)."""

    cell: Cell = field(default_factory=Cell)
    travel_speed_m_s: float = 0.15
    approach_speed_m_s: float = 0.05  # guarded descents to a push / grasp point
    push_speed_m_s: float = 0.05
    acceleration_m_s2: float = 0.5
    max_speed_m_s: float = 0.25
    max_acceleration_m_s2: float = 1.2
    joint_speed_rad_s: float = 0.5  # the home move
    joint_acceleration_rad_s2: float = 0.8
    # A guarded descent also stops when the TCP force changes by more than this (ur-rtde's
    # toolContact is the first test): a finger landing on a neighbour, not a protective stop.
    contact_force_n: float = 25.0

    @property
    def workspace_limits_m(self) -> np.ndarray:
        return self.cell.workspace_limits_m

    def envelope(self, require_tool_down: bool = True) -> SafetyEnvelope:
        return SafetyEnvelope(self.cell.workspace_limits_m, self.max_speed_m_s, self.max_acceleration_m_s2,
                              self.cell.tool_offset_m, require_tool_down)

    def check(self) -> None:
        """Fail at start-up, not in the middle of a grasp, when the speeds are unsafe."""
        for name in ("travel_speed_m_s", "approach_speed_m_s", "push_speed_m_s"):
            value = getattr(self, name)
            if not 0 < value <= self.max_speed_m_s:
                raise UserError(f"{name} = {value} m/s must be in (0, max_speed_m_s = {self.max_speed_m_s}]")
        if not 0 < self.acceleration_m_s2 <= self.max_acceleration_m_s2:
            raise UserError(f"acceleration {self.acceleration_m_s2} m/s^2 must be in (0, {self.max_acceleration_m_s2}]")
        if not 0 < self.contact_force_n <= 100:
            raise UserError(f"contact_force_n {self.contact_force_n} N must be in (0, 100]")


class PushMotions(NamedTuple):
    approach: Waypoint
    descend: Waypoint  # guarded
    push: Waypoint
    rise: Waypoint
    retreat: Waypoint  # straight back up when the descent met something: the push is skipped
    home: Waypoint  # a joint move


class GraspMotions(NamedTuple):
    approach: Waypoint
    descend: Waypoint  # guarded
    rise: Waypoint
    bin: Waypoint  # only when something is held after the rise
    home: Waypoint  # a joint move


def _cartesian(config: MotionConfig, point_m: np.ndarray, yaw_rad: float, speed_m_s: float, label: str,
               transit: bool = False, guarded: bool = False) -> Waypoint:
    return Waypoint(tcp_pose(point_m, yaw_rad, config.cell.gripper_yaw_offset_rad), speed_m_s,
                    config.acceleration_m_s2, label, transit, guarded)


def _above(config: MotionConfig, point_m: np.ndarray, height_m: float) -> np.ndarray:
    """Approach point: height_m above, capped at the box's z max (never leaves the box)."""
    above = np.asarray(point_m, dtype=float).copy()
    above[2] = min(above[2] + height_m, config.cell.workspace_limits_m[2][1])
    return above


def home_waypoint(config: MotionConfig) -> Waypoint:
    cell = config.cell
    return joint_waypoint(cell.home_joints_rad, cell.home_tcp_pose, config.joint_speed_rad_s,
                          config.joint_acceleration_rad_s2, "home")


def bin_waypoint(config: MotionConfig) -> Waypoint:
    cell = config.cell
    return _cartesian(config, np.asarray(cell.bin_position_m, dtype=float), cell.bin_yaw_rad, config.travel_speed_m_s,
                      "bin", transit=True)


def push_motions(plan: PushPlan, config: MotionConfig) -> PushMotions:
    """Approach above the start, guarded descent, push to the end, rise above the end, home."""
    start, end = np.asarray(plan.start_m, dtype=float), np.asarray(plan.end_m, dtype=float)
    above_start = _above(config, start, robot.PUSH_APPROACH_HEIGHT_M)
    return PushMotions(
        _cartesian(config, above_start, plan.yaw_rad, config.travel_speed_m_s, "approach"),
        _cartesian(config, start, plan.yaw_rad, config.approach_speed_m_s, "descend", guarded=True),
        _cartesian(config, end, plan.yaw_rad, config.push_speed_m_s, "push"),
        _cartesian(config, _above(config, end, robot.PUSH_APPROACH_HEIGHT_M), plan.yaw_rad, config.travel_speed_m_s,
                   "rise"),
        _cartesian(config, above_start, plan.yaw_rad, config.travel_speed_m_s, "retreat"),
        home_waypoint(config))


def grasp_motions(plan: GraspPlan, config: MotionConfig) -> GraspMotions:
    """Approach above, guarded descent, rise back (the fingers close in between), bin, home."""
    point = np.asarray(plan.position_m, dtype=float)
    above = _above(config, point, robot.GRASP_APPROACH_HEIGHT_M)
    return GraspMotions(
        _cartesian(config, above, plan.yaw_rad, config.travel_speed_m_s, "approach"),
        _cartesian(config, point, plan.yaw_rad, config.approach_speed_m_s, "descend", guarded=True),
        _cartesian(config, above, plan.yaw_rad, config.travel_speed_m_s, "rise"),
        bin_waypoint(config),
        home_waypoint(config))
