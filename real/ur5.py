"""Real UR5 backend (CB3 or e-Series) through ur-rtde, with a safety envelope and a dry-run arm.

Frames and units: the robot base frame, metres, radians (robot.py's conventions). A "fingertip
point" is the plan's target (z = the fingertips' lowest point). The robot's TCP is set to the
fingertip point (`tool_offset_m` along the flange's z axis), so every pose sent to moveL is a
fingertip pose [x, y, z, rx, ry, rz] (UR rotation vector) with the tool z axis pointing down and
the plan's yaw about the base z axis.

Safety (SPEC section 8): before a primitive moves anything, its whole waypoint list (including
the drop at the bin) is checked: every fingertip point inside the workspace box (approach points
are capped at the box's z max), tool pointing down, speed and acceleration within limits, and the
bin / home poses inside the reach limits checked at construction. A violation raises UserError
and nothing is sent. `RTDEArm` additionally asks the controller (isPoseWithinSafetyLimits).

ur-rtde replaces the old hand-parsed port-30002 byte stream (SPEC section 10), so CB3 and
e-Series controllers both work; the e-Series must be in remote-control mode.
"""
from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
from scipy.spatial.transform import Rotation

import robot
import utils
from robot import Backend, GraspPlan, GraspResult, PushPlan
from utils import HEIGHTMAP_RESOLUTION_M, WORKSPACE_LIMITS_M, UserError

from real.gripper import Gripper, NullGripper

LOG = logging.getLogger(__name__)

RTDE_PORT = 30004
# Conservative hard limits for an arm next to people; the UR's own safety config still applies.
MAX_TCP_SPEED_M_S = 0.5
MAX_TCP_ACCELERATION_M_S2 = 1.5
# UR5 reach is 0.85 m from the base axis; bin/home poses beyond this are configuration mistakes.
UR5_REACH_M = 0.85
# Tool-down check: the tool z axis must be within this angle of the base -z axis.
TOOL_DOWN_TOLERANCE_RAD = np.deg2rad(1.0)
POSITION_TOLERANCE_M = 1e-6


@dataclass
class UR5Config:
    """Everything that describes a cell. Positions are fingertip points in the base frame (m)."""

    host: str = "192.168.1.10"
    tool_offset_m: float = 0.175  # flange -> fingertip lowest point, along the flange z axis
    # Rotation about the tool z axis that makes the fingers close along the tool y axis at yaw 0
    # (robot.py: at yaw 0 the fingers close along base +y). 0 for a Robotiq 2F-85 on a standard
    # coupling; pi/2 if your gripper closes along the flange x axis.
    gripper_yaw_offset_rad: float = 0.0
    travel_speed_m_s: float = 0.15
    approach_speed_m_s: float = 0.05  # final descent to a push/grasp point
    push_speed_m_s: float = 0.05
    acceleration_m_s2: float = 0.5
    max_speed_m_s: float = 0.25
    max_acceleration_m_s2: float = 1.2
    bin_position_m: tuple[float, float, float] = (-0.50, 0.40, 0.25)  # outside the workspace (y > 0.224)
    bin_yaw_rad: float = 0.0
    # Where the arm waits while the camera looks (out of its view); None: stay where the action ended.
    home_position_m: tuple[float, float, float] | None = (-0.30, 0.35, 0.35)
    home_yaw_rad: float = 0.0
    workspace_limits_m: np.ndarray = field(default_factory=lambda: WORKSPACE_LIMITS_M.copy())
    heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M
    connect_timeout_s: float = 2.0
    rtde_port: int = RTDE_PORT  # only used to probe the controller before ur-rtde connects


@dataclass(frozen=True)
class Waypoint:
    """One moveL target: fingertip TCP pose [x, y, z, rx, ry, rz] (m, rotation vector rad)."""

    pose: np.ndarray
    speed_m_s: float
    acceleration_m_s2: float
    label: str
    transit: bool = False  # bin / home moves: checked against reach limits, not the workspace box


def tcp_pose(point_m: np.ndarray, yaw_rad: float, gripper_yaw_offset_rad: float = 0.0) -> np.ndarray:
    """Fingertip TCP pose with the tool pointing down (tool z = base -z) and the given yaw.

    R = Rz(yaw + offset) @ Rx(pi): at yaw 0 the tool x axis is base +x and the tool y axis is
    base -y, so fingers closing along the tool y axis close along base y, as robot.py requires.
    """
    rotation = Rotation.from_euler("z", yaw_rad + gripper_yaw_offset_rad) * Rotation.from_euler("x", np.pi)
    return np.concatenate([np.asarray(point_m, dtype=float).reshape(3), rotation.as_rotvec()])


class SafetyEnvelope:
    """The checks every motion passes before it is sent (SPEC section 8)."""

    def __init__(self, workspace_limits_m: np.ndarray, max_speed_m_s: float, max_acceleration_m_s2: float,
                 require_tool_down: bool = True) -> None:
        self.workspace_limits_m = np.asarray(workspace_limits_m, dtype=float)
        if self.workspace_limits_m.shape != (3, 2) or not np.all(self.workspace_limits_m[:, 0] < self.workspace_limits_m[:, 1]):
            raise UserError(f"workspace limits must be 3 rows of [min, max] with min < max, got {workspace_limits_m!r}")
        if not 0 < max_speed_m_s <= MAX_TCP_SPEED_M_S:
            raise UserError(f"max speed {max_speed_m_s} m/s is outside (0, {MAX_TCP_SPEED_M_S}] m/s")
        if not 0 < max_acceleration_m_s2 <= MAX_TCP_ACCELERATION_M_S2:
            raise UserError(f"max acceleration {max_acceleration_m_s2} m/s^2 is outside (0, {MAX_TCP_ACCELERATION_M_S2}]")
        self.max_speed_m_s = max_speed_m_s
        self.max_acceleration_m_s2 = max_acceleration_m_s2
        self.require_tool_down = require_tool_down

    def check(self, waypoints: list[Waypoint]) -> None:
        """Raise UserError naming the first bad waypoint; return quietly when all are safe."""
        for waypoint in waypoints:
            self.check_one(waypoint)

    def check_one(self, waypoint: Waypoint) -> None:
        pose = np.asarray(waypoint.pose, dtype=float)
        where = f"waypoint '{waypoint.label}' {np.round(pose, 4).tolist()}"
        if pose.shape != (6,) or not np.all(np.isfinite(pose)):
            raise UserError(f"unsafe motion refused: {where} is not a finite 6-vector pose")
        if not (0 < waypoint.speed_m_s <= self.max_speed_m_s) or not np.isfinite(waypoint.speed_m_s):
            raise UserError(f"unsafe motion refused: {where} speed {waypoint.speed_m_s} m/s exceeds the "
                            f"limit {self.max_speed_m_s} m/s (or is not positive)")
        if not (0 < waypoint.acceleration_m_s2 <= self.max_acceleration_m_s2) or not np.isfinite(waypoint.acceleration_m_s2):
            raise UserError(f"unsafe motion refused: {where} acceleration {waypoint.acceleration_m_s2} m/s^2 exceeds "
                            f"the limit {self.max_acceleration_m_s2} m/s^2 (or is not positive)")
        if self.require_tool_down:
            tool_z = Rotation.from_rotvec(pose[3:]).as_matrix()[:, 2]
            if np.arccos(np.clip(-tool_z[2], -1.0, 1.0)) > TOOL_DOWN_TOLERANCE_RAD:
                raise UserError(f"unsafe motion refused: {where} does not point the tool down")
        if waypoint.transit:
            self.check_reach(pose[:3], waypoint.label)
            return
        low, high = self.workspace_limits_m[:, 0], self.workspace_limits_m[:, 1]
        if np.any(pose[:3] < low - POSITION_TOLERANCE_M) or np.any(pose[:3] > high + POSITION_TOLERANCE_M):
            raise UserError(f"unsafe motion refused: {where} is outside the workspace box "
                            f"{self.workspace_limits_m.tolist()}")

    def check_reach(self, point_m: np.ndarray, label: str) -> None:
        """Poses outside the box (bin, home): above the table and within the UR5's reach."""
        point_m = np.asarray(point_m, dtype=float)
        table_z = self.workspace_limits_m[2][0]
        if point_m.shape != (3,) or not np.all(np.isfinite(point_m)):
            raise UserError(f"{label} position must be 3 finite numbers (m), got {point_m.tolist()}")
        if point_m[2] < table_z + 0.05:
            raise UserError(f"{label} position {point_m.tolist()} is less than 5 cm above the table (z {table_z} m)")
        if point_m[2] > self.workspace_limits_m[2][1] + 0.3 or np.linalg.norm(point_m) > UR5_REACH_M:
            raise UserError(f"{label} position {point_m.tolist()} is beyond the UR5's reach ({UR5_REACH_M} m)")


class Arm(Protocol):
    """What UR5Robot needs from an arm. Poses are fingertip TCP poses (see the module docstring)."""

    def set_tool_offset(self, tool_offset_m: float) -> None: ...
    def move_linear(self, waypoint: Waypoint) -> None: ...
    def tcp_pose(self) -> np.ndarray: ...
    def disconnect(self) -> None: ...


class DryRunArm:
    """An arm that connects to nothing: validates each motion again and records it.

    `motions` is the list of Waypoints in execution order; tests compare it with the expected
    sequence. Every motion is also logged at INFO level.
    """

    def __init__(self, envelope: SafetyEnvelope | None = None,
                 start_pose: np.ndarray | None = None) -> None:
        self.envelope = envelope
        self.motions: list[Waypoint] = []
        self.tool_offset_m: float | None = None
        self._pose = np.asarray(start_pose, dtype=float) if start_pose is not None else np.full(6, np.nan)

    def set_tool_offset(self, tool_offset_m: float) -> None:
        self.tool_offset_m = tool_offset_m

    def move_linear(self, waypoint: Waypoint) -> None:
        if self.envelope is not None:
            self.envelope.check_one(waypoint)
        self.motions.append(waypoint)
        self._pose = np.asarray(waypoint.pose, dtype=float)
        LOG.info("dry-run moveL %-10s pose %s speed %.3f m/s acc %.2f m/s^2", waypoint.label,
                 np.round(waypoint.pose, 4).tolist(), waypoint.speed_m_s, waypoint.acceleration_m_s2)

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


class RTDEArm:
    """A UR5 driven through ur-rtde's RTDEControlInterface / RTDEReceiveInterface.

    The controller is probed first (TCP to `rtde_port`, `connect_timeout_s`) because an
    unroutable address would otherwise block for the OS connect timeout inside ur-rtde.
    """

    def __init__(self, host: str, envelope: SafetyEnvelope, connect_timeout_s: float = 2.0,
                 rtde_port: int = RTDE_PORT) -> None:
        self.host = host
        self.envelope = envelope
        reason = probe_tcp(host, rtde_port, connect_timeout_s)
        if reason is not None:
            raise UserError(f"cannot reach UR5 at {host}: port {rtde_port}: {reason} "
                            "(check the address, the cable and that the robot is powered on)")
        try:
            import rtde_control
            import rtde_receive
        except ImportError as error:
            raise UserError(f"ur-rtde is not installed ({_one_line(error)}): pip install ur-rtde") from None
        try:
            self._receive = rtde_receive.RTDEReceiveInterface(host)
            self._control = rtde_control.RTDEControlInterface(host)
        except RuntimeError as error:
            raise UserError(f"cannot reach UR5 at {host}: {_one_line(error)}") from None

    def set_tool_offset(self, tool_offset_m: float) -> None:
        if not self._control.setTcp([0.0, 0.0, float(tool_offset_m), 0.0, 0.0, 0.0]):
            raise UserError(f"UR5 at {self.host} refused the TCP offset {tool_offset_m} m")

    def move_linear(self, waypoint: Waypoint) -> None:
        self.envelope.check_one(waypoint)
        pose = [float(v) for v in waypoint.pose]
        if not self._control.isPoseWithinSafetyLimits(pose):
            raise UserError(f"UR5 controller says waypoint '{waypoint.label}' {np.round(pose, 4).tolist()} "
                            "violates its safety limits; nothing was sent")
        if not self._control.moveL(pose, float(waypoint.speed_m_s), float(waypoint.acceleration_m_s2)):
            raise UserError(f"UR5 moveL to '{waypoint.label}' failed: check the pendant (protective stop, "
                            "remote-control mode)")

    def tcp_pose(self) -> np.ndarray:
        return np.asarray(self._receive.getActualTCPPose(), dtype=float)

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


class UR5Robot(Backend):
    """robot.Backend for a real UR5 + parallel gripper + RGB-D camera.

    arm: RTDEArm or DryRunArm; gripper: RobotiqGripper or NullGripper; camera: an object with
    `intrinsics` (3, 3) and `get_frames() -> (colour uint8 RGB (H, W, 3), depth float32 m, NaN
    invalid)` (real.camera); camera_pose: (4, 4) camera-to-base from real.calibration;
    depth_scale: the calibrated depth correction factor (metres per camera metre, ~1.0);
    segmenter: turns the colour heightmap into object masks (real.segmentation).
    The scene cannot reset itself: reset_scene asks the operator (`prompt`, default input()).
    """

    def __init__(self, config: UR5Config, arm: Arm, gripper: Gripper, camera, camera_pose: np.ndarray,
                 segmenter, depth_scale: float = 1.0, prompt: Callable[[str], str] | None = None) -> None:
        self.config = config
        self.envelope = SafetyEnvelope(config.workspace_limits_m, config.max_speed_m_s, config.max_acceleration_m_s2)
        self.arm, self.gripper, self.camera = arm, gripper, camera
        self._camera_pose = np.asarray(camera_pose, dtype=float)
        self._depth_scale = float(depth_scale)
        self.segmenter = segmenter
        self.prompt = prompt
        self.last_waypoints: list[Waypoint] = []
        self._last_masks: dict[int, np.ndarray] = {}
        self._check_config()
        self.arm.set_tool_offset(config.tool_offset_m)

    # --- configuration checks ---------------------------------------------------------------
    def _check_config(self) -> None:
        """Fail at start-up, not in the middle of a grasp, when the configuration is unsafe."""
        c = self.config
        for name in ("travel_speed_m_s", "approach_speed_m_s", "push_speed_m_s"):
            value = getattr(c, name)
            if not 0 < value <= c.max_speed_m_s:
                raise UserError(f"{name} = {value} m/s must be in (0, max_speed_m_s = {c.max_speed_m_s}]")
        if not 0 < c.acceleration_m_s2 <= c.max_acceleration_m_s2:
            raise UserError(f"acceleration {c.acceleration_m_s2} m/s^2 must be in (0, {c.max_acceleration_m_s2}]")
        if not 0.0 <= c.tool_offset_m <= 0.4:
            raise UserError(f"tool offset {c.tool_offset_m} m must be in [0, 0.4] m")
        self.envelope.check_reach(np.asarray(c.bin_position_m, dtype=float), "bin")
        if c.home_position_m is not None:
            self.envelope.check_reach(np.asarray(c.home_position_m, dtype=float), "home")

    # --- Backend: camera -----------------------------------------------------------------------
    @property
    def intrinsics(self) -> np.ndarray:
        return self.camera.intrinsics

    @property
    def camera_pose(self) -> np.ndarray:
        return self._camera_pose

    @property
    def depth_scale(self) -> float:
        return self._depth_scale

    def get_camera_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.camera.get_frames()

    # --- motion plans ----------------------------------------------------------------------------
    def _waypoint(self, point_m: np.ndarray, yaw_rad: float, speed_m_s: float, label: str,
                  transit: bool = False) -> Waypoint:
        return Waypoint(tcp_pose(point_m, yaw_rad, self.config.gripper_yaw_offset_rad), speed_m_s,
                        self.config.acceleration_m_s2, label, transit)

    def _above(self, point_m: np.ndarray, height_m: float) -> np.ndarray:
        """Approach point: height_m above, capped at the box's z max (never leaves the box)."""
        above = np.asarray(point_m, dtype=float).copy()
        above[2] = min(above[2] + height_m, self.config.workspace_limits_m[2][1])
        return above

    def _home(self) -> list[Waypoint]:
        c = self.config
        if c.home_position_m is None:
            return []
        return [self._waypoint(np.asarray(c.home_position_m, dtype=float), c.home_yaw_rad, c.travel_speed_m_s,
                               "home", transit=True)]

    def push_waypoints(self, plan: PushPlan) -> list[Waypoint]:
        """approach above start, descend, push to end, rise above end, then home."""
        c = self.config
        start, end = np.asarray(plan.start_m, dtype=float), np.asarray(plan.end_m, dtype=float)
        return [self._waypoint(self._above(start, robot.PUSH_APPROACH_HEIGHT_M), plan.yaw_rad, c.travel_speed_m_s, "approach"),
                self._waypoint(start, plan.yaw_rad, c.approach_speed_m_s, "descend"),
                self._waypoint(end, plan.yaw_rad, c.push_speed_m_s, "push"),
                self._waypoint(self._above(end, robot.PUSH_APPROACH_HEIGHT_M), plan.yaw_rad, c.travel_speed_m_s, "rise"),
                *self._home()]

    def grasp_waypoints(self, plan: GraspPlan) -> tuple[list[Waypoint], list[Waypoint], list[Waypoint]]:
        """(approach + descend, rise, drop at the bin): the gripper closes between 1 and 2."""
        c = self.config
        point = np.asarray(plan.position_m, dtype=float)
        above = self._above(point, robot.GRASP_APPROACH_HEIGHT_M)
        down = [self._waypoint(above, plan.yaw_rad, c.travel_speed_m_s, "approach"),
                self._waypoint(point, plan.yaw_rad, c.approach_speed_m_s, "descend")]
        up = [self._waypoint(above, plan.yaw_rad, c.travel_speed_m_s, "rise")]
        drop = [self._waypoint(np.asarray(c.bin_position_m, dtype=float), c.bin_yaw_rad, c.travel_speed_m_s,
                               "bin", transit=True)]
        return down, up, drop

    # --- Backend: primitives ---------------------------------------------------------------------
    def push(self, plan: PushPlan) -> None:
        """Validate every waypoint, then: close fingers, approach, descend, push, rise, home."""
        waypoints = self.push_waypoints(plan)
        self.envelope.check(waypoints)  # all or nothing: a bad plan moves nothing
        self.last_waypoints = waypoints
        self.gripper.close()  # pushes are made with closed fingers
        for waypoint in waypoints:
            self.arm.move_linear(waypoint)

    def grasp(self, plan: GraspPlan) -> GraspResult:
        """Validate every waypoint (bin included), then: open, approach, descend, close, rise;
        on success (the gripper stopped on an object) drop it at the bin; open; home."""
        down, up, drop = self.grasp_waypoints(plan)
        home = self._home()
        self.envelope.check(down + up + drop + home)
        self.last_waypoints = down + up
        self.gripper.open()
        for waypoint in down:
            self.arm.move_linear(waypoint)
        state = self.gripper.close()
        for waypoint in up:
            self.arm.move_linear(waypoint)
        if state.object_detected:
            # Drop outside the workspace so the object leaves the scene (SPEC section 6).
            for waypoint in drop:
                self.arm.move_linear(waypoint)
            self.gripper.open()
            self.last_waypoints += drop
        else:
            # Open again: a failed grasp should not leave the fingers closed on a corner.
            self.gripper.open()
        for waypoint in home:
            self.arm.move_linear(waypoint)
        self.last_waypoints += home
        return GraspResult(bool(state.object_detected),
                           self._object_at(plan.position_m) if state.object_detected else -1)

    def _object_at(self, point_m: np.ndarray) -> int:
        """The object whose last-seen footprint holds the grasp point, -1 if none (or unknown).

        The robot cannot tell what it holds; the object under the fingers' centre in the masks
        of the scene it acted on is the best evidence (goal relabelling needs an index).
        """
        row, col = utils.base_xy_to_pixel(point_m[0], point_m[1], self.config.workspace_limits_m,
                                          self.config.heightmap_resolution_m)
        hits = [index for index, mask in self._last_masks.items()
                if 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and mask[row, col] > 0]
        return hits[0] if len(hits) == 1 else -1

    def object_masks(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> dict[int, np.ndarray]:
        self._last_masks = self.segmenter.masks(color_heightmap, depth_heightmap)
        return {index: mask.copy() for index, mask in self._last_masks.items()}

    def reset_scene(self, rng: np.random.Generator) -> None:
        """Ask the operator to spread new objects (a real robot cannot do it itself)."""
        prompt = self.prompt
        if prompt is None:
            if not sys.stdin.isatty():
                raise UserError("the real robot needs an operator to reset the scene; run interactively")
            prompt = input
        prompt("Place new objects in the workspace, step back, then press Enter: ")

    def close(self) -> None:
        try:
            self.gripper.disconnect()
        finally:
            try:
                self.arm.disconnect()
            finally:
                close_camera = getattr(self.camera, "close", None)
                if close_camera is not None:
                    close_camera()


def open_ur5_backend(config: UR5Config, dry_run: bool = False, camera=None, camera_pose: np.ndarray | None = None,
                     depth_scale: float | None = None, calibration_dir: str | Path | None = None,
                     segmenter=None, gripper: Gripper | None = None) -> UR5Robot:
    """Build a UR5Robot the way main wants it.

    dry_run: DryRunArm + NullGripper (unless a gripper is given), connects to nothing; it needs
    a camera (a FileCamera / SyntheticTableCamera for a run without hardware). Otherwise
    RTDEArm + RobotiqGripper at config.host + RealSenseCamera, unless given. camera_pose and
    depth_scale default to the files in calibration_dir (default real/), validated on load.
    """
    from real import calibration, segmentation
    from real.camera import RealSenseCamera

    directory = Path(calibration_dir) if calibration_dir is not None else calibration.DEFAULT_CALIBRATION_DIR
    if camera_pose is None:
        camera_pose = calibration.load_camera_pose(directory / calibration.CAMERA_POSE_FILE)
    else:
        camera_pose = calibration.validate_pose(camera_pose, "(given)")
    if depth_scale is None:
        scale_file = directory / calibration.DEPTH_SCALE_FILE
        depth_scale = calibration.load_depth_scale(scale_file) if scale_file.exists() else 1.0
    envelope = SafetyEnvelope(config.workspace_limits_m, config.max_speed_m_s, config.max_acceleration_m_s2)
    if segmenter is None:
        segmenter = segmentation.ColorSegmenter()
    if dry_run:
        if camera is None:
            raise UserError("a dry run connects to nothing: give it a camera (e.g. real.camera.FileCamera)")
        return UR5Robot(config, DryRunArm(envelope), gripper if gripper is not None else NullGripper(), camera,
                        camera_pose, segmenter, depth_scale)
    # The camera opens first (without it nothing should move); whatever opened is closed on failure.
    opened: list[Callable[[], None]] = []
    try:
        if camera is None:
            camera = RealSenseCamera()
            opened.append(camera.close)
        arm = RTDEArm(config.host, envelope, config.connect_timeout_s, config.rtde_port)
        opened.append(arm.disconnect)
        if gripper is None:
            from real.gripper import RobotiqGripper
            gripper = RobotiqGripper(config.host, timeout_s=config.connect_timeout_s)
            opened.append(gripper.disconnect)
        return UR5Robot(config, arm, gripper, camera, camera_pose, segmenter, depth_scale)
    except BaseException:
        for close in reversed(opened):
            close()
        raise
