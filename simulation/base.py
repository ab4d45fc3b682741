"""What every simulator backend shares, written once: primitives, random drop, masks, constants.

`SimulatorBackend` executes robot.py's motion plans as one sequence of low-level moves for every
simulator (SPEC sections 6 and 8). A simulator (simulation.mujoco_sim, simulation.coppeliasim)
supplies only those moves and its state:

- gripper: `_teleport_gripper` (appear somewhere, fingers open or closed), `_command_fingers`
  (hold them open or closed), `_gripper_touches_objects`, `_gripper_position`, `_move` (straight
  line at a speed; a guarded move stops on contact), `_descend` (down until contact or target),
  `_close_fingers`, `_lift`, `_held_object`, `_open_fingers`, `_park`;
- objects: `_new_scene` (register objects, all out of the scene), `_place_object`,
  `_remove_object`, `_object_positions`, `_object_speeds`, `_world_parts`;
- time: `_step` (physics steps), `_steps_per_second`, `SETTLE_CHECK_STEPS`, `_refresh`.

Randomness: every draw comes from the generator the caller passes (the run's seeded generator
in main.py); no simulator seeds its own. Object indices are positions in the scene's object list
(random spawn order or test-case lines) and are kept when an object is removed.
"""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Sequence

import cv2
import numpy as np

import utils
from robot import GRASP_APPROACH_HEIGHT_M, PUSH_APPROACH_HEIGHT_M, Backend, GraspPlan, GraspResult, PushPlan, \
    clamp_to_workspace
from simulation import scene
from simulation.objects import ObjectShape, ensure_blocks, list_mesh_files, palette_color
from simulation.test_cases import BELOW_TABLE_Z_M, PresetCase, SceneObject, read_test_case
from utils import HEIGHTMAP_RESOLUTION_M, WORKSPACE_LIMITS_M, UserError

# --- motion (SPEC 11 measured 0.10-0.16 s wall per MuJoCo action with these)
TRAVEL_SPEED_M_S = 0.5  # descents and rises in free space
PUSH_SPEED_M_S = 0.2  # slow enough that pushed blocks slide instead of flying
LIFT_SPEED_M_S = 0.3
ENTER_RAISE_STEP_M = 0.05  # an occupied approach point is retried this much higher
# Each finger counts as fully closed below this opening (gap 3 mm): nothing was caught.
FINGER_CLOSED_OPENING_M = 0.0015
# --- scene settling and the random drop
SETTLE_MAX_TIME_S = 2.0
RESET_SETTLE_MAX_TIME_S = 3.0
DROP_INTERVAL_S = 0.15  # VPG dropped objects one by one; each gets this long to land
DROP_CLEARANCE_M = 0.01  # a dropped object starts this far above the highest point of the pile
DROP_MARGIN_M = 0.1  # SPEC 2: objects are dropped over the central workspace, 10 cm margin
CLUSTER_MIN_DISTANCE_M = 0.03  # clustered drops land no closer than this to the centre object
# Crowded training scenes: the cluster radius of the project's challenging cases
# (simulation/create.py), so that the goal needs pushes as it does there.
CROWDED_CLUSTER_RADIUS_M = 0.07
AT_REST_LINEAR_M_S = 0.01
AT_REST_ANGULAR_RAD_S = 0.2
STABLE_LINEAR_M_S = 0.05  # is_stable(): nothing faster than this ...
STABLE_ANGULAR_RAD_S = 1.0
FLOWN_OFF_DISTANCE_M = 0.5  # ... and nothing further than this from the workspace box
MASK_DILATION_PX = 2  # SPEC 3: goal mask with a ~2 px border
# --- simulator faults (take_faults): what a primitive or a new scene can leave behind
STUCK_DISTANCE_M = 0.02  # a rise that ends this far short of its target: the gripper is stuck
FINGERS_OPEN_FRACTION = 0.8  # fingers told to open that stay below this share of their travel: wedged
FAULT_KINDS = ("nan_state", "thrown_off", "gripper_stuck", "finger_wedged", "not_settled")


@dataclass(frozen=True)
class SimFault:
    """A simulator fault: kind (one of FAULT_KINDS) and what was seen, while doing what."""
    kind: str
    detail: str


def footprint_mask(parts_world_m: Sequence[np.ndarray], heightmap_shape: tuple[int, int],
                   workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                   resolution_m: float = HEIGHTMAP_RESOLUTION_M, border_px: int = MASK_DILATION_PX) -> np.ndarray:
    """(rows, cols) uint8 0/255: the filled top view of convex parts (world vertices), dilated.

    Every simulator's object masks come from here, so they all rasterise the same way.
    """
    mask = np.zeros(tuple(heightmap_shape), dtype=np.uint8)
    xmin, ymin = workspace_limits_m[0][0], workspace_limits_m[1][0]
    for world in parts_world_m:
        # Cell (row, col) spans [col, col+1) x [row, row+1) in these units; OpenCV pixel
        # centres are integers, hence -0.5. Fixed point with 4 fractional bits.
        points = np.stack([(world[:, 0] - xmin) / resolution_m - 0.5,
                           (world[:, 1] - ymin) / resolution_m - 0.5], axis=1)
        hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8, shift=4)
    if border_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border_px + 1,) * 2)
        mask = cv2.dilate(mask, kernel)
    return mask


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """The caller's generator, or one from the caller's own integer seed."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class SimulatorBackend(Backend):
    """robot.Backend for a simulator: SPEC 6 primitives and scene management over low-level moves."""

    SETTLE_CHECK_STEPS = 25  # physics steps between two at-rest checks
    TABLE_TOP_Z_M = 0.0  # the table top in the base frame (the lowest a pile can be)

    obj_mesh_dir: Path
    mesh_files: list[str]
    num_obj: int
    workspace_limits_m: np.ndarray
    heightmap_resolution_m: float
    heightmap_shape: tuple[int, int]
    _objects: list[SceneObject]
    _shapes: list[ObjectShape]
    _removed: np.ndarray
    _steps_per_second: float

    # ------------------------------------------------------------------ set-up
    def _setup(self, obj_mesh_dir: Path | str | None, num_obj: int, workspace_limits_m: np.ndarray,
               heightmap_resolution_m: float) -> None:
        if num_obj < 1:
            raise UserError(f"--num_obj must be at least 1, got {num_obj}")
        self.obj_mesh_dir = Path(obj_mesh_dir) if obj_mesh_dir is not None else ensure_blocks()
        self.mesh_files = list_mesh_files(self.obj_mesh_dir)
        self.num_obj = num_obj
        self.workspace_limits_m = np.asarray(workspace_limits_m, dtype=float)
        self.heightmap_resolution_m = heightmap_resolution_m
        self.heightmap_shape = utils.heightmap_shape(self.workspace_limits_m, heightmap_resolution_m)
        self._objects, self._shapes, self._removed = [], [], np.zeros(0, dtype=bool)
        self._faults: list[SimFault] = []

    def _first_scene(self, rng: np.random.Generator | int | None, objects: Sequence[SceneObject] | None,
                     test_case: PresetCase | Path | str | None) -> None:
        """A preset case, given objects, a random drop from the caller's generator, or an empty table.

        Without any of them the table stays empty until reset_scene(rng) or load_test_case:
        a simulator has no generator of its own.
        """
        if test_case is not None:
            self.load_test_case(test_case)
        elif objects is not None:
            self.load_objects(objects)
        elif rng is not None:
            self.reset_scene(as_generator(rng))
        else:
            self._new_scene([])
            self._refresh()

    def _calls(self, doing: str) -> ContextManager[None]:
        """Context of a burst of simulator calls (a remote simulator turns its errors into UserErrors)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ Backend: camera
    @property
    def intrinsics(self) -> np.ndarray:
        """SPEC 2's pinhole camera: 640 x 480, fx = fy = 618.62 px, centred."""
        return np.array([[scene.FOCAL_LENGTH_PX, 0.0, scene.IMAGE_WIDTH_PX / 2],
                         [0.0, scene.FOCAL_LENGTH_PX, scene.IMAGE_HEIGHT_PX / 2],
                         [0.0, 0.0, 1.0]])

    # ------------------------------------------------------------------ Backend: primitives
    def push(self, plan: PushPlan) -> None:
        """Closed fingers: approach above the start, descend (stop on contact), push at the reached
        height, rise, park, settle."""
        with self._calls("pushing"):
            start, end = np.asarray(plan.start_m, float), np.asarray(plan.end_m, float)
            self._enter(clamp_to_workspace(start + [0, 0, PUSH_APPROACH_HEIGHT_M], self.workspace_limits_m),
                        plan.yaw_rad, open_fingers=False)
            self._descend(start)
            # From wherever the descent stopped (on an object, if one was in the way), push at that height.
            here = self._gripper_position()
            self._move(np.array([end[0], end[1], here[2]]), PUSH_SPEED_M_S)
            here = self._gripper_position()
            rise = clamp_to_workspace(here + [0, 0, PUSH_APPROACH_HEIGHT_M], self.workspace_limits_m)
            self._move(rise, TRAVEL_SPEED_M_S)
            self._check_reached(rise, "rising after the push")
            self._park()
            self._settle_or_fault(SETTLE_MAX_TIME_S, "after the push")
            self._check_scene("after the push")

    def grasp(self, plan: GraspPlan) -> GraspResult:
        """Open fingers: approach above, descend (stop on contact), close (force-limited), lift;
        success = an object is held after the lift. It is removed before the fingers open again."""
        with self._calls("grasping"):
            target = np.asarray(plan.position_m, float)
            above = clamp_to_workspace(target + [0, 0, GRASP_APPROACH_HEIGHT_M], self.workspace_limits_m)
            self._enter(above, plan.yaw_rad, open_fingers=True)
            self._descend(target)
            self._close_fingers()
            self._lift(above, LIFT_SPEED_M_S)
            self._check_reached(above, "lifting")
            caught = self._held_object()
            if caught >= 0:
                self._remove_object(caught)
            self._open_fingers()
            if self._fingers_open() is False:
                self._faults.append(SimFault("finger_wedged", "the fingers did not open after the grasp"))
            self._park()
            self._settle_or_fault(SETTLE_MAX_TIME_S, "after the grasp")
            self._check_scene("after the grasp")
        return GraspResult(caught >= 0, caught)

    def _enter(self, approach_m: np.ndarray, yaw_rad: float, open_fingers: bool) -> None:
        """Leave the park: appear at the approach point, or higher (up to the workspace top) while
        it is occupied, then come down to it; the fingers are held open or closed from then on."""
        ceiling = self.workspace_limits_m[2][1]
        position = np.asarray(approach_m, dtype=float).copy()
        while True:
            self._teleport_gripper(position, yaw_rad, open_fingers)
            if position[2] >= ceiling or not self._gripper_touches_objects():
                break
            position[2] = min(position[2] + ENTER_RAISE_STEP_M, ceiling)
        if position[2] > approach_m[2]:
            self._move(approach_m, TRAVEL_SPEED_M_S, guarded=True)
        self._command_fingers(open_fingers)

    # ------------------------------------------------------------------ Backend: scene
    def object_masks(self, color_heightmap: np.ndarray | None = None,
                     depth_heightmap: np.ndarray | None = None) -> dict[int, np.ndarray]:
        """Footprint (rows, cols) uint8 0/255 of each object whose origin is in the workspace.

        From poses and collision shapes, not from the images (the heightmap arguments are unused):
        the whole object seen from above, occluded parts included, filled, dilated by 2 px.
        """
        with self._calls("reading object poses"):
            return {index: footprint_mask(self._world_parts(index), self.heightmap_shape, self.workspace_limits_m,
                                          self.heightmap_resolution_m, MASK_DILATION_PX)
                    for index in self._objects_in_workspace()}

    def reset_scene(self, rng: np.random.Generator, cluster_around: int | None = None) -> None:
        """Drop num_obj random meshes (with replacement, as VPG) one by one over the central workspace, settle.
        cluster_around=k: object k first, the others packed around it as in the challenging cases."""
        names = [str(n) for n in rng.choice(self.mesh_files, size=self.num_obj)]
        if cluster_around is None:
            self.drop_objects(names, rng)
        else:
            self.drop_objects(names, rng, cluster_around=cluster_around, cluster_radius_m=CROWDED_CLUSTER_RADIUS_M)

    def num_objects_in_workspace(self) -> int:
        with self._calls("reading object poses"):
            return len(self._objects_in_workspace())

    def drop_objects(self, mesh_files: Sequence[str], rng: np.random.Generator,
                     cluster_around: int | None = None, cluster_radius_m: float = 0.08) -> None:
        """New scene: drop these meshes (object i gets palette colour i) at random poses, settle.

        Each object falls from just above the current pile at a uniformly random orientation and
        a random (x, y) over the workspace less a 10 cm margin (SPEC 2). With `cluster_around=k`,
        object k drops first and the others land around it, their origins 3 cm to
        `cluster_radius_m` from its origin: a cluttered, goal-oriented scene.
        """
        objects = [SceneObject(name, tuple(palette_color(i)), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
                   for i, name in enumerate(mesh_files)]
        if cluster_around is not None and not 0 <= cluster_around < len(objects):
            raise UserError(f"cluster centre {cluster_around} is not an object index (0..{len(objects) - 1})")
        with self._calls("dropping objects"):
            self._new_scene(objects)  # everything waits outside the scene until its turn
            low = self.workspace_limits_m[:2, 0] + DROP_MARGIN_M
            high = self.workspace_limits_m[:2, 1] - DROP_MARGIN_M
            order = list(range(len(objects)))
            if cluster_around is not None:
                order.remove(cluster_around)
                order.insert(0, cluster_around)
            # The order of the draws is part of a seed's meaning: runs are compared by seed.
            centre_xy = rng.uniform(low, high)  # where the first object lands
            for n, index in enumerate(order):
                if n == 0:
                    xy = centre_xy
                elif cluster_around is None:
                    xy = rng.uniform(low, high)
                else:
                    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(CLUSTER_MIN_DISTANCE_M, cluster_radius_m)
                    xy = np.clip(centre_xy + distance * np.array([np.cos(angle), np.sin(angle)]), low, high)
                quat = rng.normal(size=4)  # a normalised 4-D Gaussian is a uniformly random rotation
                quat /= np.linalg.norm(quat)
                z = self._pile_top_m() + DROP_CLEARANCE_M - self._lowest_point_m(index, quat, np.zeros(3))
                self._place_object(index, np.array([xy[0], xy[1], z]), quat)
                self._step_for(DROP_INTERVAL_S)
            self._settle_or_fault(RESET_SETTLE_MAX_TIME_S, "dropping a new scene")
            self._check_scene("dropping a new scene")

    def load_test_case(self, case: PresetCase | Path | str) -> PresetCase:
        """Load a preset scene (a parsed case or a file path); objects below the table start removed."""
        if not isinstance(case, PresetCase):
            case = read_test_case(case, obj_mesh_dir=self.obj_mesh_dir, workspace_limits_m=self.workspace_limits_m)
        self.load_objects(case.objects)
        return case

    def load_objects(self, objects: Sequence[SceneObject], settle: bool = True) -> None:
        """Replace the scene by these objects at their poses (colours from the list), then settle.

        Poses are kept as given, except that an object reaching into the table is lifted just out
        of it; an object more than 5 cm below the table top had fallen off the table where its
        pose came from, so it starts removed.
        """
        objects = list(objects)
        if not objects:
            raise UserError("a scene needs at least one object")
        for obj in objects:
            if not (self.obj_mesh_dir / obj.mesh_file).is_file():
                raise UserError(f"mesh {obj.mesh_file} not found in {self.obj_mesh_dir}")
        with self._calls("loading objects"):
            self._new_scene(objects)
            table_z = self.workspace_limits_m[2][0]
            for index, obj in enumerate(objects):
                if obj.position_m[2] < table_z + BELOW_TABLE_Z_M:
                    continue
                position = np.asarray(obj.position_m, float)
                # Never start inside the table (the paper's poses are for CoppeliaSim's own mesh frames).
                position[2] += max(table_z - self._lowest_point_m(index, obj.quat_wxyz, position), 0.0)
                self._place_object(index, position, obj.quat_wxyz)
            self._refresh()
            if settle:
                self._settle_or_fault(SETTLE_MAX_TIME_S, "loading a scene")
                self._check_scene("loading a scene")

    @property
    def removed(self) -> np.ndarray:
        """(N,) bool: objects taken out of the scene (grasped, or below the table at load)."""
        return self._removed.copy()

    def objects_outside_workspace(self) -> list[int]:
        """Indices of objects still in the scene whose origin is outside the workspace box."""
        with self._calls("reading object poses"):
            inside = set(self._objects_in_workspace())
        return [i for i in range(len(self._objects)) if not self._removed[i] and i not in inside]

    def is_stable(self) -> bool:
        """Nothing moves faster than 5 cm/s or 1 rad/s and nothing lies > 0.5 m from the workspace box."""
        with self._calls("reading object velocities"):
            linear, angular = self._object_speeds()
        if np.any(linear > STABLE_LINEAR_M_S) or np.any(angular > STABLE_ANGULAR_RAD_S):
            return False
        return not self.flown_off_objects()

    def flown_off_objects(self) -> list[int]:
        """Indices of objects (not removed) more than 0.5 m from the workspace box (or NaN)."""
        with self._calls("reading object poses"):
            positions = np.nan_to_num(self._object_positions(), nan=np.inf)
        outside_by = np.maximum(self.workspace_limits_m[:, 0] - positions, positions - self.workspace_limits_m[:, 1])
        distance = np.linalg.norm(np.maximum(outside_by, 0.0), axis=1)
        return [int(i) for i in np.flatnonzero(distance > FLOWN_OFF_DISTANCE_M) if not self._removed[i]]

    # ------------------------------------------------------------------ shared geometry
    def _objects_in_workspace(self) -> list[int]:
        positions = self._object_positions()
        limits = self.workspace_limits_m
        inside = np.all((positions >= limits[:, 0]) & (positions <= limits[:, 1]), axis=1) & ~self._removed
        return [int(i) for i in np.flatnonzero(inside)]

    def _footprint(self, index: int) -> np.ndarray:
        """(rows, cols) uint8 0/255: cells under object `index`'s collision shape, seen from above."""
        return footprint_mask(self._world_parts(index), self.heightmap_shape, self.workspace_limits_m,
                              self.heightmap_resolution_m, border_px=0)

    def _lowest_point_m(self, index: int, quat_wxyz: np.ndarray, position_m: np.ndarray) -> float:
        """Lowest z of object `index`'s collision shape at this pose."""
        return min(float(part[:, 2].min()) for part in self._world_parts(index, position_m, quat_wxyz))

    def _pile_top_m(self) -> float:
        """Highest collision-vertex z of the objects in the scene (the table top when it is empty)."""
        return self._top_near_m(np.zeros(2), np.inf)

    def _top_near_m(self, xy_m: np.ndarray, radius_m: float) -> float:
        """Highest collision-vertex z of the objects that may reach within radius_m of (x, y)."""
        top = self.TABLE_TOP_Z_M
        positions = self._object_positions()
        for index in np.flatnonzero(~self._removed):
            if np.hypot(*(positions[index, :2] - xy_m)) <= radius_m + self._shapes[index].bounding_radius_m:
                top = max(top, max(float(part[:, 2].max()) for part in self._world_parts(index)))
        return top

    # ------------------------------------------------------------------ shared stepping
    def _step_for(self, seconds: float) -> None:
        self._step(max(int(round(seconds * self._steps_per_second)), 1))

    def _settle(self, max_time_s: float) -> bool:
        """Step until every object is at rest (or max_time_s), then refresh the state for rendering.
        True if everything came to rest."""
        settled = False
        for _ in range(max(int(max_time_s * self._steps_per_second / self.SETTLE_CHECK_STEPS), 1)):
            self._step(self.SETTLE_CHECK_STEPS)
            linear, angular = self._object_speeds()
            if np.all(linear < AT_REST_LINEAR_M_S) and np.all(angular < AT_REST_ANGULAR_RAD_S):
                settled = True
                break
        self._refresh()
        return settled

    # ------------------------------------------------------------------ faults
    def take_faults(self) -> list[SimFault]:
        """The faults seen since the last call (and forget them): after each primitive and each
        new scene, main.py records them in the session and resets the scene."""
        faults, self._faults = self._faults, []
        return faults

    def _settle_or_fault(self, max_time_s: float, doing: str) -> None:
        """Settle; a scene still moving after twice max_time_s faster than is_stable() allows is
        a fault (a slow roll past max_time_s is not)."""
        if self._settle(max_time_s) or self._settle(max_time_s):
            return
        linear, angular = self._object_speeds()
        moving = np.flatnonzero((linear > STABLE_LINEAR_M_S) | (angular > STABLE_ANGULAR_RAD_S))
        if moving.size:
            self._faults.append(SimFault("not_settled", f"{doing}: object(s) {[int(i) for i in moving]} still moving "
                                                        f"after {2 * max_time_s:.0f} s (up to "
                                                        f"{float(np.max(linear)):.2f} m/s)"))

    def _check_scene(self, doing: str) -> None:
        """A state the physics cannot go on from (NaN, a MuJoCo reset), or objects thrown off."""
        broken = self._physics_faults()
        for detail in broken:
            self._faults.append(SimFault("nan_state", f"{doing}: {detail}"))
        if broken:
            return  # positions are meaningless now
        flown = self.flown_off_objects()
        if flown:
            self._faults.append(SimFault("thrown_off", f"{doing}: object(s) {flown} more than "
                                                       f"{FLOWN_OFF_DISTANCE_M} m from the workspace"))

    def _check_reached(self, target_m: np.ndarray, doing: str) -> None:
        here = self._gripper_position()
        short = float(np.linalg.norm(here - np.asarray(target_m, float))) if np.all(np.isfinite(here)) else np.inf
        if short > STUCK_DISTANCE_M:
            self._faults.append(SimFault("gripper_stuck", f"{doing}: the gripper stopped {short * 100:.1f} cm short"))

    def _physics_faults(self) -> list[str]:
        """What is wrong with the physics state (NaN, the engine's own resets); [] when sound."""
        positions = self._object_positions()
        return [] if np.all(np.isfinite(positions)) else ["NaN in the object positions"]

    def _fingers_open(self) -> bool | None:
        """Whether the fingers are open now (None: this simulator cannot tell)."""
        return None

    def _refresh(self) -> None:
        """Bring derived state (kinematics for rendering) up to date after direct state changes."""

    # ------------------------------------------------------------------ what a simulator supplies
    @abc.abstractmethod
    def _new_scene(self, objects: Sequence[SceneObject]) -> None:
        """Make `objects` the scene's object list (shapes loaded), every one of them removed."""

    @abc.abstractmethod
    def _place_object(self, index: int, position_m: np.ndarray, quat_wxyz: np.ndarray) -> None:
        """Put object `index` into the scene at this pose (mesh frame), at rest."""

    @abc.abstractmethod
    def _remove_object(self, index: int) -> None:
        """Take object `index` out of the scene (it keeps its index)."""

    @abc.abstractmethod
    def _object_positions(self) -> np.ndarray:
        """(N, 3) mesh-frame origins of every object (any value for removed ones)."""

    @abc.abstractmethod
    def _object_speeds(self) -> tuple[np.ndarray, np.ndarray]:
        """Linear (N,) m/s and angular (N,) rad/s speeds (0 for removed objects)."""

    @abc.abstractmethod
    def _world_parts(self, index: int, position_m: np.ndarray | None = None,
                     quat_wxyz: np.ndarray | None = None) -> list[np.ndarray]:
        """Vertices (n, 3) of each convex part of object `index`, base frame, at a pose (default: current)."""

    @abc.abstractmethod
    def _teleport_gripper(self, position_m: np.ndarray, yaw_rad: float, open_fingers: bool) -> None:
        """Put the gripper at rest at a fingertip position and yaw, fingers fully open or closed."""

    @abc.abstractmethod
    def _command_fingers(self, open_fingers: bool) -> None:
        """Keep the fingers open or closed during the motions that follow."""

    @abc.abstractmethod
    def _gripper_touches_objects(self) -> bool:
        """Whether the gripper, where it is now, overlaps any object."""

    @abc.abstractmethod
    def _gripper_position(self) -> np.ndarray:
        """(3,) the fingertip point now."""

    @abc.abstractmethod
    def _move(self, target_m: np.ndarray, speed_m_s: float, guarded: bool = False) -> bool:
        """Straight line to target_m; a guarded move stops on contact. False if it stopped short."""

    @abc.abstractmethod
    def _descend(self, target_m: np.ndarray) -> bool:
        """Go down to target_m, stopping on contact. False if it stopped short."""

    @abc.abstractmethod
    def _close_fingers(self) -> None:
        """Close with the force limit until the fingers stop."""

    @abc.abstractmethod
    def _lift(self, above_m: np.ndarray, speed_m_s: float) -> None:
        """Rise to above_m with whatever the fingers hold."""

    @abc.abstractmethod
    def _held_object(self) -> int:
        """Index of the object held between the fingers now, -1 if none."""

    @abc.abstractmethod
    def _open_fingers(self) -> None:
        """Open fully and wait for the fingers."""

    @abc.abstractmethod
    def _park(self) -> None:
        """Put the gripper outside the workspace and the camera's view."""

    @abc.abstractmethod
    def _step(self, steps: int) -> None:
        """Advance the physics by `steps` steps."""
