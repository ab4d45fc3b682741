"""Real UR5 backend (CB3 or e-Series): a parallel gripper, an RGB-D camera, one cell file.

Frames and units: the robot base frame, metres, radians (robot.py's conventions). The cell
(workspace box, table, bin, home, tool offset, gripper yaw offset) comes from one file
(real.cell); motion plans and the local safety envelope are real.motion's; the arms are
real.arm's.

Safety (SPEC section 8):
- Before the first image the arm goes home with a joint move (out of the camera's view, a known
  pose for the first Cartesian move); every primitive ends there too.
- Before the first command of a primitive, its whole waypoint list (bin, retreat and home
  included) passes the local envelope and the controller's own limits; a failure sends nothing
  and names the waypoint and the reason.
- Descents are guarded: they stop on contact. A push whose descent meets something is not made
  (the fingers go straight back up); a grasp closes where its descent stopped.
- A grasp counts only if the gripper still holds the object after the rise.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import utils
from robot import Backend, GraspPlan, GraspResult, PushPlan
from utils import HEIGHTMAP_RESOLUTION_M, UserError

from real import calibration
from real.arm import RTDE_PORT, Arm, DryRunArm, RTDEArm
from real.cell import CELL_FILE, Cell, load_cell
from real.gripper import Gripper, NullGripper
from real.motion import Waypoint, MotionConfig, bin_waypoint, describe, grasp_motions, home_waypoint, push_motions

LOG = logging.getLogger(__name__)


@dataclass
class UR5Config(MotionConfig):
    """A cell (real.cell.Cell), its speeds (real.motion.MotionConfig) and how to reach the robot."""

    host: str = "192.168.1.10"
    heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M
    connect_timeout_s: float = 2.0
    rtde_port: int = RTDE_PORT  # only used to probe the controller before ur-rtde connects


class UR5Robot(Backend):
    """robot.Backend for a real UR5 + parallel gripper + RGB-D camera.

    arm: RTDEArm or DryRunArm; gripper: RobotiqGripper or NullGripper; camera: an object with
    `intrinsics` (3, 3) and `get_frames() -> (colour uint8 RGB (H, W, 3), depth float32 m, NaN
    invalid)` (real.camera); camera_pose: (4, 4) camera-to-base from real.calibration;
    depth_scale: the calibrated depth correction factor (metres per camera metre, ~1.0);
    segmenter: turns the colour heightmap into object masks (real.segmentation).
    The scene cannot reset itself: reset_scene asks the operator (`prompt`, default input()).
    log: where the checked plan of every primitive goes (default: this module's logger at INFO).
    """

    def __init__(self, config: UR5Config, arm: Arm, gripper: Gripper, camera, camera_pose: np.ndarray,
                 segmenter, depth_scale: float = 1.0, prompt: Callable[[str], str] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.cell: Cell = config.cell
        self.arm, self.gripper, self.camera = arm, gripper, camera
        self._camera_pose = np.asarray(camera_pose, dtype=float)
        self._depth_scale = float(depth_scale)
        self.segmenter = segmenter
        self.prompt = prompt
        self.log = log or LOG.info
        self._last_masks: dict[int, np.ndarray] = {}
        self._at_home = False
        config.check()
        self.envelope = config.envelope()
        self.arm.set_tool_offset(self.cell.tool_offset_m)
        # Fail at start-up, not with an object in the fingers: home and bin as the controller sees them.
        home = home_waypoint(config)
        self._checked("start-up", [home, bin_waypoint(config)])
        check_home = getattr(self.arm, "check_home", None)
        if check_home is not None:
            check_home(home)

    @property
    def workspace_limits_m(self) -> np.ndarray:
        """The cell's box: robot.Robot plans and maps heightmaps in it."""
        return self.cell.workspace_limits_m

    # --- checks and home -------------------------------------------------------------------
    def _checked(self, what: str, waypoints: Sequence[Waypoint]) -> None:
        """Every waypoint through the arm's checks (local and controller) before any command."""
        try:
            lines = self.arm.check(waypoints)
        except UserError as error:
            raise UserError(f"{what} refused before anything was sent: {error}") from None
        self.log(f"{what}: {len(waypoints)} waypoint(s) checked before the first command")
        for waypoint, line in zip(waypoints, lines):
            self.log(f"  {describe(waypoint)}")
            self.log(f"      checks: {line}")

    def go_home(self) -> None:
        """Joint move to the cell's home: out of the camera's view, a known start for moveL."""
        home = home_waypoint(self.config)
        self._checked("home", [home])
        self.arm.move_joints(home)
        self._at_home = True

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
        """The camera's frames, taken with the arm at home (it goes there first if it is not)."""
        if not self._at_home:
            self.go_home()
        return self.camera.get_frames()

    # --- Backend: primitives ---------------------------------------------------------------------
    def push(self, plan: PushPlan) -> None:
        """Check every waypoint, then: close fingers, approach, guarded descent, push, rise, home.

        A descent stopped by a contact means something stands where the fingers should skim
        past: the push is skipped and the fingers go straight back up (pushing from on top of an
        object drags it down and sideways).
        """
        m = push_motions(plan, self.config)
        self._checked("push", list(m))
        self._at_home = False
        self.gripper.close()  # pushes are made with closed fingers
        self.arm.move_linear(m.approach)
        if self.arm.move_until_contact(m.descend, self.config.contact_force_n):
            self.log("push: the descent met something above the push height; push skipped")
            self.arm.move_linear(m.retreat)
        else:
            self.arm.move_linear(m.push)
            self.arm.move_linear(m.rise)
        self.arm.move_joints(m.home)
        self._at_home = True

    def grasp(self, plan: GraspPlan) -> GraspResult:
        """Check every waypoint (bin and home included), then: open, approach, guarded descent,
        close, rise, and only if the gripper still holds something after the rise: bin, open;
        then home. An object that slipped during the rise is a failed grasp."""
        m = grasp_motions(plan, self.config)
        self._checked("grasp", list(m))
        self._at_home = False
        self.gripper.open()
        self.arm.move_linear(m.approach)
        self.arm.move_until_contact(m.descend, self.config.contact_force_n)
        closed = self.gripper.close()
        self.arm.move_linear(m.rise)
        held = self.gripper.holding() if closed.object_detected else closed  # re-checked after the lift
        if held.object_detected:
            # Drop outside the workspace so the object leaves the scene (SPEC section 6).
            self.arm.move_linear(m.bin)
        elif closed.object_detected:
            self.log("grasp: the object slipped out during the rise; a failed grasp")
        # Open in every case: a failed grasp should not leave the fingers closed on a corner.
        self.gripper.open()
        self.arm.move_joints(m.home)
        self._at_home = True
        return GraspResult(bool(held.object_detected), self._object_at(plan.position_m) if held.object_detected else -1)

    def _object_at(self, point_m: np.ndarray) -> int:
        """The object whose last-seen footprint holds the grasp point, -1 if none (or unknown).

        The robot cannot tell what it holds; the object under the fingers' centre in the masks
        of the scene it acted on is the best evidence (goal relabelling needs an index).
        """
        row, col = utils.base_xy_to_pixel(point_m[0], point_m[1], self.cell.workspace_limits_m,
                                          self.config.heightmap_resolution_m)
        hits = [index for index, mask in self._last_masks.items()
                if 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and mask[row, col] > 0]
        return hits[0] if len(hits) == 1 else -1

    def object_masks(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> dict[int, np.ndarray]:
        self._last_masks = self.segmenter.masks(color_heightmap, depth_heightmap)
        return {index: mask.copy() for index, mask in self._last_masks.items()}

    def reset_scene(self, rng: np.random.Generator, cluster_around: int | None = None) -> None:
        """Ask the operator to spread new objects (a real robot cannot do it itself)."""
        if cluster_around is not None:
            raise UserError(f"{type(self).__name__} cannot build crowded scenes; use --train_scene random")
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
                     segmenter=None, gripper: Gripper | None = None,
                     log: Callable[[str], None] | None = None, go_home: bool = True) -> UR5Robot:
    """Build a UR5Robot the way main wants it, and send the arm home before anything else.

    dry_run: DryRunArm + NullGripper (unless a gripper is given), connects to nothing; it needs
    a camera (a FileCamera / SyntheticTableCamera for a run without hardware) and logs its plan
    and every command to `log`. Otherwise RTDEArm + RobotiqGripper at config.host +
    RealSenseCamera, unless given. camera_pose and depth_scale default to the files in
    calibration_dir (default real/), validated on load.
    """
    from real import segmentation
    from real.camera import RealSenseCamera

    directory = Path(calibration_dir) if calibration_dir is not None else calibration.DEFAULT_CALIBRATION_DIR
    if camera_pose is None:
        camera_pose = calibration.load_camera_pose(directory / calibration.CAMERA_POSE_FILE)
    else:
        camera_pose = calibration.validate_pose(camera_pose, "(given)")
    if depth_scale is None:
        scale_file = directory / calibration.DEPTH_SCALE_FILE
        depth_scale = calibration.load_depth_scale(scale_file) if scale_file.exists() else 1.0
    config.check()
    envelope = config.envelope()
    if segmenter is None:
        segmenter = segmentation.ColorSegmenter()
    if dry_run:
        if camera is None:
            raise UserError("a dry run connects to nothing: give it a camera (e.g. real.camera.FileCamera)")
        say = log or LOG.info

        def tell_operator(text: str) -> str:
            say(f"dry run: the operator would be asked: {text}")
            return ""

        backend = UR5Robot(config, DryRunArm(envelope, log=say), gripper if gripper is not None else NullGripper(log=say),
                           camera, camera_pose, segmenter, depth_scale, prompt=tell_operator, log=say)
        if go_home:
            backend.go_home()
        return backend
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
        backend = UR5Robot(config, arm, gripper, camera, camera_pose, segmenter, depth_scale, log=log)
        if go_home:
            backend.go_home()
        return backend
    except BaseException:
        for close in reversed(opened):
            close()
        raise


def dry_run_blocks(cell: Cell) -> list:
    """A few palette-coloured 5 cm blocks packed at the workspace centre (object i = colour i),
    so a dry run's policy has something to push and grasp."""
    from real.camera import Box
    from real.segmentation import PALETTE_RGB_U8

    x, y = cell.workspace_limits_m[:2].mean(axis=1)
    z = cell.table_z_m + 0.025
    offsets = [(0.0, 0.0), (0.055, 0.0), (-0.055, 0.0), (0.0, 0.055), (0.0, -0.055)]
    return [Box((x + dx, y + dy, z), (0.05, 0.05, 0.05), tuple(int(v) for v in PALETTE_RGB_U8[i]))
            for i, (dx, dy) in enumerate(offsets)]


def open_real_cell(host: str, calibration_dir: str | Path, cell_file: str | Path | None = None,
                   dry_run: bool = False, replay_camera_dir: str | Path | None = None,
                   heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> UR5Robot:
    """main.py --real: the cell file (default <calibration_dir>/cell.json) and the calibration
    describe the cell; a dry run replays a session's frames with that session's own intrinsics,
    or renders a synthetic table with a few blocks, and prints its whole plan."""
    from real.camera import FileCamera, SyntheticTableCamera, nominal_intrinsics

    directory = Path(calibration_dir)
    cell = load_cell(Path(cell_file) if cell_file else directory / CELL_FILE, heightmap_resolution_m)
    config = UR5Config(cell=cell, host=host, heightmap_resolution_m=heightmap_resolution_m)
    if not dry_run:
        return open_ur5_backend(config, calibration_dir=directory)
    if replay_camera_dir:
        camera = FileCamera(replay_camera_dir)  # the replayed session's info/camera-intrinsics.txt
    else:
        pose = calibration.load_camera_pose(directory / calibration.CAMERA_POSE_FILE)
        camera = SyntheticTableCamera(nominal_intrinsics(640, 480), pose, table_z_m=cell.table_z_m,
                                      boxes=dry_run_blocks(cell))
    return open_ur5_backend(config, dry_run=True, camera=camera, calibration_dir=directory, log=print)
