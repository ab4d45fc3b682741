"""One Robot facade over every backend (embedded MuJoCo, CoppeliaSim, real UR5, test doubles).

The facade owns the primitive semantics of SPEC section 6 (heights, yaw, push direction,
workspace clamping), so every backend executes exactly the same motion plan. Backends only
move a gripper between given points and report what the camera sees.

Conventions shared by all backends (robot base frame, metres, radians):
- Heightmap rotation i has angle theta = i * 22.5 deg. A push moves along (cos theta, sin theta).
- Gripper yaw = (theta mod pi) - pi/2. At yaw 0 the fingers close along the base +y axis, so at
  rotation theta they close along (cos theta, sin theta): across the object the grasp net saw
  lying horizontally in its rotated input.
- A position's z is the height of the fingertips' lowest point.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

import utils
from utils import HEIGHTMAP_RESOLUTION_M, NUM_ROTATIONS, ROTATION_STEP_RAD, WORKSPACE_LIMITS_M, UserError

# SPEC section 6 constants, defined once.
PUSH_LENGTH_M = 0.13
PUSH_APPROACH_HEIGHT_M = 0.10
PUSH_DEPTH_BELOW_LOCAL_MAX_M = 0.02
PUSH_MIN_HEIGHT_M = 0.01
FINGER_WIDTH_M = 0.02
GRASP_APPROACH_HEIGHT_M = 0.15
GRASP_DEPTH_BELOW_SURFACE_M = 0.04
GRASP_MIN_HEIGHT_M = 0.02


@dataclass(frozen=True)
class PushPlan:
    start_m: np.ndarray  # (3,) fingertip start, base frame
    end_m: np.ndarray  # (3,) fingertip end, same z as start
    yaw_rad: float


@dataclass(frozen=True)
class GraspPlan:
    position_m: np.ndarray  # (3,) fingertip target between the open fingers
    yaw_rad: float


@dataclass(frozen=True)
class GraspResult:
    success: bool
    object_index: int  # index of the grasped object in the scene's list, -1 if none or unknown


class Backend(abc.ABC):
    """What every backend provides. All motions are already clamped to the workspace box."""

    @property
    @abc.abstractmethod
    def intrinsics(self) -> np.ndarray:
        """(3, 3) pinhole camera matrix, pixels."""

    @property
    @abc.abstractmethod
    def camera_pose(self) -> np.ndarray:
        """(4, 4) camera-to-base transform (camera looks along its +z, x right, y down)."""

    @property
    def depth_scale(self) -> float:
        """Metres per depth unit of get_camera_data's depth (1.0: already metres)."""
        return 1.0

    @abc.abstractmethod
    def get_camera_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Colour (H, W, 3) uint8 RGB and depth (H, W) float32 metres (NaN or 0 where invalid)."""

    @abc.abstractmethod
    def push(self, plan: PushPlan) -> None:
        """Close fingers, go PUSH_APPROACH_HEIGHT_M above start, descend, move to end, rise."""

    @abc.abstractmethod
    def grasp(self, plan: GraspPlan) -> GraspResult:
        """Open, go GRASP_APPROACH_HEIGHT_M above, descend, close (force-limited), rise.

        Success means the fingers stopped before fully closing. A simulator removes the
        grasped object from the scene; a real robot drops it outside the workspace.
        """

    @abc.abstractmethod
    def object_masks(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> dict[int, np.ndarray]:
        """Footprint mask (224, 224) uint8 0/255 of each object still in the workspace, by index.

        Simulators compute them from poses and shapes (occluded parts included); a real robot
        from colour segmentation of the given heightmaps or a user-given mask.
        """

    def reset_scene(self, rng: np.random.Generator, cluster_around: int | None = None) -> None:
        """Start a new training scene (random drop); real robots ask the operator.
        cluster_around=k: object k drops first and the others land packed around it (a crowded
        goal), where the backend can build such a scene."""
        raise UserError(f"{type(self).__name__} cannot reset its scene by itself")

    def num_objects_in_workspace(self) -> int | None:
        """Objects still on the table, or None where the backend cannot tell (real robot)."""
        return None

    def load_test_case(self, case) -> object:
        """Build a preset scene (simulators only)."""
        raise UserError(f"{type(self).__name__} cannot build preset test cases; arrange the objects by hand")

    def flown_off_objects(self) -> list[int]:
        """Indices of objects thrown far from the workspace (a physics blow-up); [] if unknown."""
        return []

    def take_faults(self) -> list:
        """Simulator faults seen since the last call (simulation.base.SimFault: NaN state, object
        thrown off, gripper stuck, finger wedged, scene not settling); [] where none are detected."""
        return []

    def close(self) -> None:
        """Release connections and renderers."""


def plan_push(action: tuple[int, int, int], valid_depth_heightmap: np.ndarray,
              workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
              heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> PushPlan:
    """Push plan for heightmap action (rotation index, row, col); heights relative to the table.

    The start height is the local maximum of a finger-width window minus 2 cm, so the closed
    fingers skim over an object edge they start on instead of crashing into it (VPG).
    """
    rotation, row, col = action
    theta = rotation * ROTATION_STEP_RAD
    x, y = utils.pixel_to_base_xy(row, col, workspace_limits_m, heightmap_resolution_m)
    half = int(round(FINGER_WIDTH_M / 2 / heightmap_resolution_m))
    window = valid_depth_heightmap[max(row - half, 0):row + half + 1, max(col - half, 0):col + half + 1]
    local_max_m = float(np.max(window)) if window.size else 0.0
    z = workspace_limits_m[2][0] + max(local_max_m - PUSH_DEPTH_BELOW_LOCAL_MAX_M, PUSH_MIN_HEIGHT_M)
    start = clamp_to_workspace(np.array([x, y, z]), workspace_limits_m)
    direction = np.array([np.cos(theta), np.sin(theta), 0.0])
    end = clamp_to_workspace(start + PUSH_LENGTH_M * direction, workspace_limits_m)
    return PushPlan(start, end, gripper_yaw_rad(theta))


def plan_grasp(action: tuple[int, int, int], valid_depth_heightmap: np.ndarray,
               workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
               heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> GraspPlan:
    """Grasp plan: fingertips 4 cm below the surface at the pixel, never below 2 cm (VPG)."""
    rotation, row, col = action
    theta = rotation * ROTATION_STEP_RAD
    x, y = utils.pixel_to_base_xy(row, col, workspace_limits_m, heightmap_resolution_m)
    surface_m = float(valid_depth_heightmap[row, col])
    z = workspace_limits_m[2][0] + max(surface_m - GRASP_DEPTH_BELOW_SURFACE_M, GRASP_MIN_HEIGHT_M)
    return GraspPlan(clamp_to_workspace(np.array([x, y, z]), workspace_limits_m), gripper_yaw_rad(theta))


def gripper_yaw_rad(theta_rad: float) -> float:
    """SPEC section 6: the jaw is symmetric, so yaw only needs a half turn."""
    return float((theta_rad % np.pi) - np.pi / 2)


def clamp_to_workspace(point_m: np.ndarray, workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M) -> np.ndarray:
    """Safety rule of SPEC section 6: no target ever leaves the workspace box."""
    return np.clip(point_m, workspace_limits_m[:, 0], workspace_limits_m[:, 1])


class Robot:
    """The facade the training loop talks to. It never knows which backend is behind it."""

    def __init__(self, backend: Backend, workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                 heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> None:
        self.backend = backend
        # A backend with a box of its own (a real cell's, from its cell file) decides where plans
        # and heightmaps are: planning in another box would only send poses its checks refuse.
        own = getattr(backend, "workspace_limits_m", None)
        self.workspace_limits_m = np.asarray(own if own is not None else workspace_limits_m, dtype=float)
        self.heightmap_resolution_m = heightmap_resolution_m

    @property
    def intrinsics(self) -> np.ndarray:
        return self.backend.intrinsics

    @property
    def camera_pose(self) -> np.ndarray:
        return self.backend.camera_pose

    @property
    def depth_scale(self) -> float:
        return self.backend.depth_scale

    def get_camera_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Colour uint8 (H, W, 3) and depth in metres; bad depth is a UserError, not a crash."""
        color, depth = self.backend.get_camera_data()
        depth = np.asarray(depth, dtype=np.float32) * self.backend.depth_scale
        if not np.isfinite(depth).any() or not (depth[np.isfinite(depth)] > 0).any():
            raise UserError("the camera returned no valid depth (all NaN or zero): check the camera")
        return color, depth

    def get_heightmaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(colour image, depth image, colour heightmap (224,224,3) uint8, depth heightmap m, NaN empty)."""
        color, depth = self.get_camera_data()
        color_hm, depth_hm = utils.get_heightmap(color, depth, self.intrinsics, self.camera_pose,
                                                 self.workspace_limits_m, self.heightmap_resolution_m)
        return color, depth, color_hm, depth_hm

    def push(self, action: tuple[int, int, int], valid_depth_heightmap: np.ndarray) -> PushPlan:
        check_action(action, valid_depth_heightmap.shape)
        # A NaN height would survive np.clip and reach the arm as a NaN target.
        valid_depth_heightmap = np.nan_to_num(valid_depth_heightmap, nan=0.0)
        plan = plan_push(action, valid_depth_heightmap, self.workspace_limits_m, self.heightmap_resolution_m)
        self.backend.push(plan)
        return plan

    def grasp(self, action: tuple[int, int, int], valid_depth_heightmap: np.ndarray) -> GraspResult:
        check_action(action, valid_depth_heightmap.shape)
        valid_depth_heightmap = np.nan_to_num(valid_depth_heightmap, nan=0.0)
        plan = plan_grasp(action, valid_depth_heightmap, self.workspace_limits_m, self.heightmap_resolution_m)
        return self.backend.grasp(plan)

    def object_masks(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> dict[int, np.ndarray]:
        return self.backend.object_masks(color_heightmap, depth_heightmap)

    def reset_scene(self, rng: np.random.Generator, cluster_around: int | None = None) -> None:
        self.backend.reset_scene(rng, cluster_around=cluster_around)

    def num_objects_in_workspace(self) -> int | None:
        return self.backend.num_objects_in_workspace()

    def load_test_case(self, case) -> object:
        return self.backend.load_test_case(case)

    def flown_off_objects(self) -> list[int]:
        return self.backend.flown_off_objects()

    def take_faults(self) -> list:
        return self.backend.take_faults()

    def close(self) -> None:
        self.backend.close()


def check_action(action: tuple[int, int, int], heightmap_shape: tuple[int, ...]) -> None:
    rotation, row, col = action
    if not (0 <= rotation < NUM_ROTATIONS and 0 <= row < heightmap_shape[0] and 0 <= col < heightmap_shape[1]):
        raise ValueError(f"action {action} is outside {NUM_ROTATIONS} rotations x {heightmap_shape[:2]}")
