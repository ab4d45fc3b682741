"""CoppeliaSim backend through the ZMQ remote API (`--sim coppeliasim`, SPEC section 8).

The backend builds its whole scene through the API, in whatever scene CoppeliaSim has open
(start CoppeliaSim 4.6 or newer with its default new scene, which has lights, and the ZMQ remote
API add-on, which listens on port 23000 by default):
- a static table whose top is at z = TABLE_TOP_Z_M (1 mm above CoppeliaSim's default floor, so
  the two never z-fight in the images);
- one perspective vision sensor giving RGB and depth, with SPEC section 2's intrinsics
  (640 x 480, fx = fy = 618.62 px: perspective angle 2 atan(320 / 618.62) = 54.70 deg, which
  CoppeliaSim applies to the larger image side), placed like the MuJoCo backend's camera:
  0.75 m straight above the workspace centre, image right = base -y, image up = base +x;
- the objects, from the same meshes and the same convex parts as the MuJoCo backend
  (simulation.objects): each part is sent as a vertex list (so CoppeliaSim may run on another
  machine: sim.importShape would read the path on the simulator's disk) and the parts are
  grouped into one dynamic compound shape (density 500 kg/m^3, like SPEC section 11);
- a kinematic parallel-jaw gripper: two respondable, non-dynamic finger boxes and a visual palm,
  moved by setObjectPose in small steps while physics runs (a moving static shape is a kinematic
  body for the engine, so it pushes dynamic objects). Geometry is simulation.scene's.

The primitive sequences, the random drop, the masks and the scene API are simulation.base's,
shared with simulation.mujoco_sim.MujocoSim; this module supplies the low-level moves. Frames:
world = robot base frame, metres. The grasp check is contact-based: the fingers close
symmetrically in 1 mm steps and stop when both touch something; success means both touch the same
object before the gap falls under twice base.FINGER_CLOSED_OPENING_M (SPEC section 6: fingers
stopped before fully closing). A kinematic finger cannot hold by friction, so a grasped object is
then frozen, carried up with the gripper and removed.

What was NOT run against a live CoppeliaSim (none is available where this was written): every
remote call. Written against the CoppeliaSim 4.6-4.9 API reference (argument order
`setObjectPose(handle, pose, relativeTo)`, `getVisionSensorImg/Depth`, `createMeshShape` /
`createShape`, `groupShapes`, `checkCollision`, `computeMassAndInertia`, `setStepping`/`step`).
Unverified assumptions: the vision sensor's buffers start at the image's bottom row (OpenGL
order; `rgb_buffer_to_image` flips them), its depth buffer is linear between the near and far
clipping planes (`depth_buffer_to_metres`), its x axis points to the image's left
(`SENSOR_FROM_OPENCV`), a static respondable shape moved by setObjectPose pushes dynamic shapes,
and shapes made through the API are collidable and renderable (`_name` sets it where the API
allows). Objects keep CoppeliaSim's default material (not SPEC section 11's friction), and the
grasp heights were not re-calibrated against CoppeliaSim's physics. Tested here: the
unreachable and silent-host paths, the pure helpers, and the backend's control flow against a
kinematic test double of `sim` (tests/test_coppeliasim.py).
"""
from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from simulation import scene
from simulation.base import FINGER_CLOSED_OPENING_M, TRAVEL_SPEED_M_S, SimulatorBackend
from simulation.objects import ObjectShape, load_object_shape
from simulation.test_cases import PresetCase, SceneObject
from utils import HEIGHTMAP_RESOLUTION_M, WORKSPACE_LIMITS_M, UserError

LOG = logging.getLogger(__name__)

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 23000
PROBE_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 10.0  # the first request (require 'sim') must answer within this
CALL_TIMEOUT_S = 30.0  # any later request; a modal dialog in CoppeliaSim's window stalls it
CLOSE_TIMEOUT_S = 5.0  # closing must not hang the end of a run on a dead simulator
TIME_STEP_S = 0.005
VISION_NEAR_M, VISION_FAR_M = 0.01, 10.0
TABLE_TOP_Z_M = 0.001
TABLE_X_RANGE_M, TABLE_Y_RANGE_M = scene.TABLE_X_RANGE_M, scene.TABLE_Y_RANGE_M  # as large as MujocoSim's
TABLE_GRAY = scene.TABLE_RGBA[0]
# Kinematic motion: the shared speeds (simulation.base) become a distance per physics step.
FINGER_STEP_M = 0.001  # per finger per step while closing
CANDIDATE_RADIUS_M = 0.25  # objects farther than this from a motion cannot touch the fingers
OBJECT_DENSITY_KG_M3 = scene.OBJECT_DENSITY_KG_M3
ALIAS_PREFIX = "gopg_"  # every object this backend creates; close() removes them


# ---------------------------------------------------------------------------- pure helpers
def probe_port(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when something accepts TCP connections at host:port within timeout_s, else why not.

    Needed because the ZMQ client never fails on a closed port: its first request blocks forever.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return str(error) or type(error).__name__


def pose7_to_matrix(pose7: Sequence[float]) -> np.ndarray:
    """CoppeliaSim pose [x, y, z, qx, qy, qz, qw] -> (4, 4) transform."""
    pose7 = np.asarray(pose7, dtype=float)
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(pose7[3:7]).as_matrix()  # scipy's order is also x, y, z, w
    matrix[:3, 3] = pose7[:3]
    return matrix


def matrix_to_pose7(matrix: np.ndarray) -> list[float]:
    """(4, 4) transform -> CoppeliaSim pose [x, y, z, qx, qy, qz, qw] (plain floats for CBOR)."""
    matrix = np.asarray(matrix, dtype=float)
    return [float(v) for v in (*matrix[:3, 3], *Rotation.from_matrix(matrix[:3, :3]).as_quat())]


# A CoppeliaSim vision sensor looks along its +z with +y up in the image, so +x points left;
# robot.py's camera (OpenCV) has x right, y down: the two differ by a half turn about z.
SENSOR_FROM_OPENCV = np.diag([-1.0, -1.0, 1.0, 1.0])


def sensor_pose_from_camera_pose(camera_pose: np.ndarray) -> np.ndarray:
    """OpenCV-convention camera-to-base pose -> the vision sensor's pose (and back: an involution)."""
    return np.asarray(camera_pose, dtype=float) @ SENSOR_FROM_OPENCV


def perspective_angle_rad(width_px: int, height_px: int, focal_px: float) -> float:
    """CoppeliaSim's perspective angle for square pixels: it spans the larger image side."""
    return 2.0 * math.atan(max(width_px, height_px) / 2.0 / focal_px)


def top_down_camera_pose(workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                         height_m: float = scene.CAMERA_HEIGHT_M) -> np.ndarray:
    """MujocoSim's camera as an OpenCV pose: above the workspace centre, x = base -y, y = base -x, z down."""
    pose = np.eye(4)
    pose[:3, :3] = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    pose[:3, 3] = [*np.asarray(workspace_limits_m)[:2].mean(axis=1), height_m]
    return pose


def rgb_buffer_to_image(buffer: bytes, resolution: Sequence[int]) -> np.ndarray:
    """getVisionSensorImg's RGB bytes (bottom row first) -> (H, W, 3) uint8, top row first."""
    width, height = int(resolution[0]), int(resolution[1])
    image = np.frombuffer(buffer, dtype=np.uint8)
    if image.size != width * height * 3:
        raise UserError(f"CoppeliaSim sent {image.size} colour bytes for a {width}x{height} RGB image")
    return np.flipud(image.reshape(height, width, 3)).copy()


def depth_buffer_to_metres(buffer: bytes | Sequence[float], resolution: Sequence[int], near_m: float,
                           far_m: float) -> np.ndarray:
    """getVisionSensorDepth's normalised float32 buffer -> (H, W) float32 metres (camera z).

    Values are linear in [near, far]; 1.0 (nothing within the far plane) becomes NaN.
    """
    width, height = int(resolution[0]), int(resolution[1])
    if isinstance(buffer, (bytes, bytearray)):
        values = np.frombuffer(buffer, dtype=np.float32)
    else:
        values = np.asarray(buffer, dtype=np.float32)
    if values.size != width * height:
        raise UserError(f"CoppeliaSim sent {values.size} depth values for a {width}x{height} image")
    normalised = np.flipud(values.reshape(height, width))
    depth = (near_m + normalised * (far_m - near_m)).astype(np.float32)
    depth[normalised >= 0.9999] = np.nan
    return depth


def finger_and_palm_poses(position_m: np.ndarray, yaw_rad: float, gap_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World poses (4, 4) of the two finger boxes and the palm for a gripper state.

    position_m: the point between the fingertips' lowest points (robot.py's fingertip z).
    At yaw 0 the fingers close along base +y (robot.py), so they sit at +-(gap/2 + half
    thickness) along Rz(yaw) y. Box frames are Rz(yaw) at the boxes' centres.
    """
    rotation = Rotation.from_euler("z", yaw_rad).as_matrix()
    closing_axis = rotation[:, 1]
    finger_z = scene.FINGER_HALF_LENGTH_M
    poses = []
    for sign in (1.0, -1.0):
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:3, 3] = (np.asarray(position_m, dtype=float) + sign * (gap_m / 2 + scene.FINGER_HALF_THICKNESS_M) * closing_axis
                       + [0.0, 0.0, finger_z])
        poses.append(pose)
    palm = np.eye(4)
    palm[:3, :3] = rotation
    palm[:3, 3] = np.asarray(position_m, dtype=float) + [0.0, 0.0, 2 * scene.FINGER_HALF_LENGTH_M + scene.PALM_HALF_SIZE_M[2]]
    return poses[0], poses[1], palm


def _first(value: Any) -> Any:
    """The first return value of a remote call that may return one value or a tuple."""
    return value[0] if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------- the backend
class CoppeliaSimBackend(SimulatorBackend):
    """robot.Backend driving CoppeliaSim through coppeliasim-zmqremoteapi-client.

    host, port: where CoppeliaSim's ZMQ remote API listens (default localhost:23000).
    obj_mesh_dir, num_obj, workspace_limits_m, heightmap_resolution_m, rng, objects, test_case:
    as MujocoSim's (no generator of its own: without rng, objects or a case the table starts
    empty). probe_timeout_s bounds the TCP probe of the port, connect_timeout_s the first
    request, call_timeout_s every later one and CLOSE_TIMEOUT_S the clean-up, so a stalled
    simulator (a modal dialog) gives a UserError instead of hanging. sim: an already-connected
    `sim` object (tests pass a double; nothing is probed then).
    """

    SETTLE_CHECK_STEPS = 10  # 50 ms between at-rest checks
    TABLE_TOP_Z_M = TABLE_TOP_Z_M

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, obj_mesh_dir: Path | str | None = None,
                 num_obj: int = 10, workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                 heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M, rng: np.random.Generator | int | None = None,
                 objects: Sequence[SceneObject] | None = None, probe_timeout_s: float = PROBE_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, call_timeout_s: float = CALL_TIMEOUT_S,
                 sim: Any = None, test_case: PresetCase | Path | str | None = None) -> None:
        self._setup(obj_mesh_dir, num_obj, workspace_limits_m, heightmap_resolution_m)
        self.host, self.port = host, port
        self.where = f"{host}:{port}"
        self.call_timeout_s = call_timeout_s
        self._client = None
        self._handles: list[int] = []  # objects of this backend's scene (table, sensor, gripper)
        self._object_handles: list[int | None] = []
        self._frame_offsets: list[np.ndarray] = []  # shape frame expressed in the mesh frame
        self._gripper_xyz = np.array(scene.PARK_POSITION_M, dtype=float)
        self._gripper_yaw = 0.0
        self._gap_m = 0.0
        self._caught = -1
        self._time_step_s = TIME_STEP_S
        self._steps_per_second = 1.0 / TIME_STEP_S
        if sim is None:
            sim = self._connect(probe_timeout_s, connect_timeout_s)
        self.sim = sim
        with self._remote("building the scene"):
            self._build_static_scene()
        self._first_scene(rng, objects, test_case)

    # ------------------------------------------------------------------ connection
    def _connect(self, probe_timeout_s: float, connect_timeout_s: float) -> Any:
        reason = probe_port(self.host, self.port, probe_timeout_s)
        if reason is not None:
            raise UserError(f"cannot reach CoppeliaSim at {self.where} ({reason}): start CoppeliaSim 4.6+ with its "
                            "ZMQ remote API add-on, check the host and port options, or use the default embedded "
                            "simulator")
        try:
            import zmq
            from coppeliasim_zmqremoteapi_client import RemoteAPIClient
        except ImportError as error:
            raise UserError(f"the CoppeliaSim client is not installed ({error}): "
                            "pip install coppeliasim-zmqremoteapi-client") from None
        self._client = RemoteAPIClient(self.host, self.port)
        # Without a receive timeout a dead or stalled simulator blocks the client forever, and
        # without LINGER 0 the interpreter would hang at exit on an unsent request.
        self._client.socket.setsockopt(zmq.LINGER, 0)
        self._set_receive_timeout(self.call_timeout_s)
        with self._remote("connecting", connect_timeout_s):
            return self._client.require("sim")

    def _set_receive_timeout(self, seconds: float) -> float | None:
        """Set the client socket's receive timeout; the previous one (s), None without a client."""
        if self._client is None:
            return None
        import zmq

        previous_ms = self._client.socket.getsockopt(zmq.RCVTIMEO)
        self._client.socket.setsockopt(zmq.RCVTIMEO, int(seconds * 1000))
        return previous_ms / 1000.0

    @contextlib.contextmanager
    def _remote(self, doing: str, timeout_s: float | None = None) -> Iterator[None]:
        """Turn the client's timeout / broken-socket errors into one-line UserErrors.

        timeout_s: the receive timeout for the calls inside (default call_timeout_s), so the
        message's number is the one the socket really waited.
        """
        seconds = self.call_timeout_s if timeout_s is None else timeout_s
        previous = self._set_receive_timeout(seconds) if timeout_s is not None else None
        try:
            yield
        except UserError:
            raise
        except Exception as error:
            if type(error).__module__.startswith("zmq"):
                raise UserError(f"CoppeliaSim at {self.where} did not answer within {seconds:g} s while {doing} "
                                "(a dialog open in its window stalls it; restart it if it persists)") from None
            raise
        finally:
            if previous is not None:
                self._set_receive_timeout(previous)

    def _calls(self, doing: str):
        return self._remote(doing)

    # ------------------------------------------------------------------ scene construction
    def _build_static_scene(self) -> None:
        sim = self.sim
        if sim.getSimulationState() != sim.simulation_stopped:
            sim.stopSimulation()
            deadline = time.monotonic() + 10.0
            while sim.getSimulationState() != sim.simulation_stopped:
                if time.monotonic() > deadline:
                    raise UserError(f"CoppeliaSim at {self.where} did not stop its running simulation within 10 s")
                time.sleep(0.05)
        self._remove_leftovers()
        try:
            sim.setFloatParam(sim.floatparam_simulation_time_step, TIME_STEP_S)
        except Exception as error:  # older versions fix dt in the GUI: work with theirs
            LOG.warning("CoppeliaSim refused a %.3f s time step (%s); using its own", TIME_STEP_S, error)
        # Table: a static respondable slab, top at TABLE_TOP_Z_M.
        size = [TABLE_X_RANGE_M[1] - TABLE_X_RANGE_M[0], TABLE_Y_RANGE_M[1] - TABLE_Y_RANGE_M[0], scene.TABLE_THICKNESS_M]
        self._table = self._cuboid("table", size, [TABLE_GRAY] * 3, respondable=True)
        table_pose = np.eye(4)
        table_pose[:3, 3] = [sum(TABLE_X_RANGE_M) / 2, sum(TABLE_Y_RANGE_M) / 2, TABLE_TOP_Z_M - scene.TABLE_THICKNESS_M / 2]
        self._set_pose(self._table, table_pose)
        # Camera: explicit handling (1) + perspective (2) + volume hidden (4 + 8).
        angle = perspective_angle_rad(scene.IMAGE_WIDTH_PX, scene.IMAGE_HEIGHT_PX, scene.FOCAL_LENGTH_PX)
        self._sensor = sim.createVisionSensor(1 | 2 | 4 | 8, [scene.IMAGE_WIDTH_PX, scene.IMAGE_HEIGHT_PX, 0, 0],
                                              [VISION_NEAR_M, VISION_FAR_M, angle, 0.01, 0.01, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0])
        self._own(self._sensor, "camera")
        self._camera_pose = top_down_camera_pose(self.workspace_limits_m)
        self._set_pose(self._sensor, sensor_pose_from_camera_pose(self._camera_pose))
        # Gripper: two respondable static finger boxes (kinematic when moved) and a visual palm.
        finger_size = [2 * scene.FINGER_HALF_WIDTH_M, 2 * scene.FINGER_HALF_THICKNESS_M, 2 * scene.FINGER_HALF_LENGTH_M]
        self._fingers = [self._cuboid(f"finger_{side}", finger_size, [0.2, 0.2, 0.2], respondable=True)
                         for side in ("left", "right")]
        self._palm = self._cuboid("palm", [2 * s for s in scene.PALM_HALF_SIZE_M], [0.3, 0.3, 0.35], respondable=False)
        self._set_gripper(np.array(scene.PARK_POSITION_M, dtype=float), 0.0, 0.0)
        if hasattr(sim, "setStepping"):
            sim.setStepping(True)
        else:  # clients before CoppeliaSim 4.6 kept stepping on the client
            self._client.setStepping(True)
        sim.startSimulation()
        # The step actually used (a version that refused ours keeps its own): motion speeds and
        # settle times are counted in steps of this length.
        self._time_step_s = float(sim.getSimulationTimeStep()) if hasattr(sim, "getSimulationTimeStep") else TIME_STEP_S
        self._steps_per_second = 1.0 / self._time_step_s

    def _remove_leftovers(self) -> None:
        """Objects a previous run of this backend left (it crashed before close())."""
        sim = self.sim
        try:
            handles = sim.getObjectsInTree(sim.handle_scene, sim.handle_all, 0)
        except Exception:
            return
        stale = [h for h in handles if str(sim.getObjectAlias(h)).startswith(ALIAS_PREFIX)]
        if stale:
            sim.removeObjects(stale)

    def _own(self, handle: int, name: str) -> int:
        """Name a scene part this backend created and remember it for close()."""
        self._name(handle, name)
        self._handles.append(handle)
        return handle

    def _name(self, handle: int, name: str) -> None:
        """Alias with our prefix, and make sure collision checks and the camera see the object."""
        sim = self.sim
        sim.setObjectAlias(handle, ALIAS_PREFIX + name)
        flags = 0
        for constant in ("objectspecialproperty_collidable", "objectspecialproperty_measurable",
                         "objectspecialproperty_detectable", "objectspecialproperty_renderable"):
            flags |= int(getattr(sim, constant, 0))
        try:  # new shapes usually have these already; the call moved to properties in 4.8
            if hasattr(sim, "setObjectSpecialProperty") and flags:
                sim.setObjectSpecialProperty(handle, flags)
            elif hasattr(sim, "setBoolProperty"):
                sim.setBoolProperty(handle, "collidable", True)
        except Exception as error:
            LOG.debug("could not set special properties of %s: %s", name, error)

    def _cuboid(self, name: str, size_m: list[float], rgb: list[float], respondable: bool) -> int:
        sim = self.sim
        if hasattr(sim, "createPrimitiveShape"):
            handle = sim.createPrimitiveShape(sim.primitiveshape_cuboid, size_m, 0)
        else:
            handle = sim.createPureShape(0, 0, size_m, 0.0, None)
        self._own(handle, name)
        self._set_dynamics(handle, static=True, respondable=respondable)
        sim.setShapeColor(handle, None, sim.colorcomponent_ambient_diffuse, rgb)
        return handle

    def _set_dynamics(self, handle: int, static: bool, respondable: bool) -> None:
        sim = self.sim
        sim.setObjectInt32Param(handle, sim.shapeintparam_static, 1 if static else 0)
        sim.setObjectInt32Param(handle, sim.shapeintparam_respondable, 1 if respondable else 0)

    def _mesh_shape(self, vertices: np.ndarray, faces: np.ndarray) -> int:
        sim = self.sim
        flat_vertices = [float(v) for v in np.asarray(vertices, dtype=float).ravel()]
        flat_faces = [int(i) for i in np.asarray(faces).ravel()]
        if hasattr(sim, "createMeshShape"):
            return sim.createMeshShape(0, math.radians(20.0), flat_vertices, flat_faces)
        return sim.createShape(0, math.radians(20.0), flat_vertices, flat_faces)  # normals etc. optional

    def _create_object(self, index: int, obj: SceneObject, shape: ObjectShape) -> tuple[int, np.ndarray]:
        """One dynamic compound shape from the object's convex parts; returns (handle, frame offset).

        CoppeliaSim puts a new shape's frame where it likes (e.g. the mesh's bounding-box
        centre); parts are created with the mesh frame at the world origin, so the new shape's
        world pose at that moment is its frame expressed in the mesh frame.
        """
        sim = self.sim
        parts = [self._mesh_shape(v, f) for v, f in shape.convex_parts]
        handle = parts[0] if len(parts) == 1 else sim.groupShapes(parts, False)
        self._name(handle, f"object_{index}")  # tracked in _object_handles, not _handles
        offset = pose7_to_matrix(sim.getObjectPose(handle, sim.handle_world))
        sim.setShapeColor(handle, None, sim.colorcomponent_ambient_diffuse, [float(c) for c in obj.color_rgb])
        self._set_dynamics(handle, static=False, respondable=True)
        sim.computeMassAndInertia(handle, OBJECT_DENSITY_KG_M3)
        return handle, offset

    # ------------------------------------------------------------------ Backend: camera
    @property
    def camera_pose(self) -> np.ndarray:
        return self._camera_pose.copy()

    def get_camera_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Colour (480, 640, 3) uint8 RGB and depth (480, 640) float32 metres (NaN: nothing seen)."""
        sim = self.sim
        with self._remote("rendering"):
            sim.handleVisionSensor(self._sensor)
            image, resolution = sim.getVisionSensorImg(self._sensor)
            depth, depth_resolution = sim.getVisionSensorDepth(self._sensor, 0)
        return (rgb_buffer_to_image(image, resolution),
                depth_buffer_to_metres(depth, depth_resolution, VISION_NEAR_M, VISION_FAR_M))

    def close(self) -> None:
        """Stop the simulation and remove everything this backend created (idempotent)."""
        sim, self.sim = getattr(self, "sim", None), None
        if sim is None:
            return
        try:
            with self._remote("closing", CLOSE_TIMEOUT_S):
                sim.stopSimulation()
                handles = [h for h in self._object_handles if h is not None] + self._handles
                if handles:
                    sim.removeObjects(handles)
                if hasattr(sim, "setStepping"):
                    sim.setStepping(False)
        except UserError as error:
            LOG.warning("%s", error)
        self._handles, self._object_handles = [], []

    # ------------------------------------------------------------------ objects (SimulatorBackend)
    def _new_scene(self, objects: Sequence[SceneObject]) -> None:
        handles = [h for h in self._object_handles if h is not None]
        if handles:
            self.sim.removeObjects(handles)
        self._objects = list(objects)
        self._shapes = [load_object_shape(self.obj_mesh_dir / obj.mesh_file) for obj in self._objects]
        self._object_handles = [None] * len(self._objects)
        self._frame_offsets = [np.eye(4) for _ in self._objects]
        self._removed = np.ones(len(self._objects), dtype=bool)

    def _place_object(self, index: int, position_m: np.ndarray, quat_wxyz: np.ndarray) -> None:
        """Create the object's compound shape (the first time) and put it at this mesh-frame pose."""
        if self._object_handles[index] is None:
            handle, offset = self._create_object(index, self._objects[index], self._shapes[index])
            self._object_handles[index], self._frame_offsets[index] = handle, offset
        handle = self._object_handles[index]
        self._set_pose(handle, _pose_matrix(position_m, quat_wxyz) @ self._frame_offsets[index])
        self.sim.resetDynamicObject(handle)  # forget the creation pose's (zero) velocity history
        self._removed[index] = False

    def _remove_object(self, index: int) -> None:
        handle = self._object_handles[index]
        if handle is not None:
            self.sim.removeObjects([handle])
            self._object_handles[index] = None
        self._removed[index] = True

    def _mesh_pose(self, index: int) -> np.ndarray:
        """Mesh-frame world pose (4, 4) of an object in the scene."""
        shape_pose = pose7_to_matrix(self.sim.getObjectPose(self._object_handles[index], self.sim.handle_world))
        return shape_pose @ np.linalg.inv(self._frame_offsets[index])

    def _object_positions(self) -> np.ndarray:
        positions = np.full((len(self._objects), 3), np.nan)  # NaN: removed, never inside anything
        for index, handle in enumerate(self._object_handles):
            if handle is not None:
                positions[index] = self._mesh_pose(index)[:3, 3]
        return positions

    def _object_speeds(self) -> tuple[np.ndarray, np.ndarray]:
        linear, angular = np.zeros(len(self._objects)), np.zeros(len(self._objects))
        for index, handle in enumerate(self._object_handles):
            if handle is not None:
                v, w = self.sim.getObjectVelocity(handle)
                linear[index], angular[index] = np.linalg.norm(v), np.linalg.norm(w)
        return linear, angular

    def _world_parts(self, index: int, position_m: np.ndarray | None = None,
                     quat_wxyz: np.ndarray | None = None) -> list[np.ndarray]:
        pose = self._mesh_pose(index) if position_m is None else _pose_matrix(position_m, quat_wxyz)
        return [vertices @ pose[:3, :3].T + pose[:3, 3] for vertices, _ in self._shapes[index].convex_parts]

    # ------------------------------------------------------------------ gripper (SimulatorBackend)
    def _set_pose(self, handle: int, matrix: np.ndarray) -> None:
        self.sim.setObjectPose(handle, matrix_to_pose7(matrix), self.sim.handle_world)

    def _set_gripper(self, position_m: np.ndarray, yaw_rad: float, gap_m: float) -> None:
        left, right, palm = finger_and_palm_poses(position_m, yaw_rad, gap_m)
        self._set_pose(self._fingers[0], left)
        self._set_pose(self._fingers[1], right)
        self._set_pose(self._palm, palm)
        self._gripper_xyz = np.asarray(position_m, dtype=float).copy()
        self._gripper_yaw, self._gap_m = float(yaw_rad), float(gap_m)

    def _teleport_gripper(self, position_m: np.ndarray, yaw_rad: float, open_fingers: bool) -> None:
        self._set_gripper(position_m, yaw_rad, 2 * scene.FINGER_TRAVEL_M if open_fingers else 0.0)

    def _command_fingers(self, open_fingers: bool) -> None:
        """Kinematic fingers keep their gap by themselves."""

    def _gripper_position(self) -> np.ndarray:
        return self._gripper_xyz.copy()

    def _touching(self, finger: int, candidates: list[int]) -> list[int]:
        """Indices of candidate objects colliding with finger 0 or 1."""
        sim = self.sim
        hits = []
        for index in candidates:
            handle = self._object_handles[index]
            if handle is not None and _first(sim.checkCollision(self._fingers[finger], handle)):
                hits.append(index)
        return hits

    def _candidates(self, *points_m: np.ndarray) -> list[int]:
        """Objects whose origin lies within CANDIDATE_RADIUS_M (xy) of any of the points."""
        positions = self._object_positions()
        return [i for i in np.flatnonzero(~self._removed)
                if min(np.linalg.norm(positions[i, :2] - np.asarray(p)[:2]) for p in points_m) < CANDIDATE_RADIUS_M]

    def _gripper_touches_objects(self) -> bool:
        candidates = self._candidates(self._gripper_xyz)
        return bool(self._touching(0, candidates) or self._touching(1, candidates))

    def _move(self, target_m: np.ndarray, speed_m_s: float, guarded: bool = False) -> bool:
        """Straight-line kinematic motion, one physics step per increment; False if contact stopped it."""
        start = self._gripper_xyz.copy()
        target_m = np.asarray(target_m, dtype=float)
        step_m = speed_m_s * self._time_step_s
        count = max(int(math.ceil(np.linalg.norm(target_m - start) / step_m)), 1)
        candidates = self._candidates(start, target_m) if guarded else []
        for tick in range(1, count + 1):
            position = start + (target_m - start) * (tick / count)
            self._set_gripper(position, self._gripper_yaw, self._gap_m)
            self.sim.step()
            if guarded and (self._touching(0, candidates) or self._touching(1, candidates)):
                # Back off the last increment: resting on the object, not inside it.
                self._set_gripper(start + (target_m - start) * ((tick - 1) / count), self._gripper_yaw, self._gap_m)
                return False
        return True

    def _descend(self, target_m: np.ndarray) -> bool:
        return self._move(target_m, TRAVEL_SPEED_M_S, guarded=True)

    def _close_fingers(self) -> None:
        """Close symmetrically until both fingers touch; remember the object both touch, or -1.

        Success needs both to touch the same object before the gap falls under twice the shared
        fully-closed opening (SPEC section 6: fingers stopped before fully closing).
        """
        candidates = self._candidates(self._gripper_xyz)
        touched: list[set[int]] = [set(), set()]
        gap = self._gap_m
        self._caught = -1
        while gap > 2 * FINGER_CLOSED_OPENING_M:
            gap = max(gap - 2 * FINGER_STEP_M, 0.0)
            self._set_gripper(self._gripper_xyz, self._gripper_yaw, gap)
            self.sim.step()
            for finger in (0, 1):
                touched[finger].update(self._touching(finger, candidates))
            if touched[0] and touched[1]:
                both = touched[0] & touched[1]
                self._caught = min(both) if both else -1
                return

    def _lift(self, above_m: np.ndarray, speed_m_s: float) -> None:
        """Rise; a caught object is frozen and carried with the fingers (they cannot hold by friction)."""
        if self._caught < 0:
            self._move(above_m, speed_m_s)
            return
        handle = self._object_handles[self._caught]
        self._set_dynamics(handle, static=True, respondable=False)
        self.sim.resetDynamicObject(handle)  # dynamic-property changes apply after a reset
        object_start = pose7_to_matrix(self.sim.getObjectPose(handle, self.sim.handle_world))
        start = self._gripper_xyz.copy()
        count = max(int(math.ceil(np.linalg.norm(above_m - start) / (speed_m_s * self._time_step_s))), 1)
        for tick in range(1, count + 1):
            position = start + (above_m - start) * (tick / count)
            self._set_gripper(position, self._gripper_yaw, self._gap_m)
            carried = object_start.copy()
            carried[:3, 3] += position - start
            self._set_pose(handle, carried)
            self.sim.step()

    def _held_object(self) -> int:
        return self._caught

    def _open_fingers(self) -> None:
        self._set_gripper(self._gripper_xyz, self._gripper_yaw, 2 * scene.FINGER_TRAVEL_M)

    def _park(self) -> None:
        self._set_gripper(np.array(scene.PARK_POSITION_M, dtype=float), 0.0, self._gap_m)

    def _step(self, steps: int) -> None:
        for _ in range(steps):
            self.sim.step()


def _pose_matrix(position_m: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
    """(4, 4) pose from a position and a MuJoCo-order (w, x, y, z) quaternion."""
    quat = np.asarray(quat_wxyz, dtype=float)
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat([quat[1], quat[2], quat[3], quat[0]]).as_matrix()  # scipy: x, y, z, w
    pose[:3, 3] = position_m
    return pose
