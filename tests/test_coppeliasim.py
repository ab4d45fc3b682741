"""Tests of the CoppeliaSim backend without CoppeliaSim: unreachable / silent hosts, pure helpers,
and the backend's control flow against a kinematic test double of the `sim` API object."""
from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import robot
import utils
from simulation import base
from simulation import coppeliasim as cs
from simulation import scene
from simulation.test_cases import SceneObject
from utils import WORKSPACE_LIMITS_M, UserError

INTRINSICS = np.array([[scene.FOCAL_LENGTH_PX, 0, 320], [0, scene.FOCAL_LENGTH_PX, 240], [0, 0, 1.0]])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ connection failures
def test_unreachable_port_is_a_quick_user_error():
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(UserError, match=f"cannot reach CoppeliaSim at 127.0.0.1:{port}") as info:
        cs.CoppeliaSimBackend("127.0.0.1", port, probe_timeout_s=0.5)
    assert time.monotonic() - start < 3.0
    assert "\n" not in str(info.value)


def test_silent_server_times_out_instead_of_blocking():
    """Something accepts TCP on the port but never answers: the first request must time out."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5.0)
    port = server.getsockname()[1]
    accepted = []

    def accept() -> None:
        try:
            accepted.append(server.accept()[0])  # hold the connections open, never reply
            accepted.append(server.accept()[0])
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    start = time.monotonic()
    try:
        with pytest.raises(UserError, match="did not answer within"):
            cs.CoppeliaSimBackend("127.0.0.1", port, probe_timeout_s=0.5, connect_timeout_s=0.5)
        assert time.monotonic() - start < 3.0
    finally:
        server.close()
        for connection in accepted:
            connection.close()
        thread.join(timeout=5.0)


# ------------------------------------------------------------------ pure helpers
def test_pose7_round_trip():
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("XYZ", [0.3, -1.1, 2.0]).as_matrix()
    matrix[:3, 3] = [-0.5, 0.1, 0.2]
    pose7 = cs.matrix_to_pose7(matrix)
    assert len(pose7) == 7 and all(type(v) is float for v in pose7)
    np.testing.assert_allclose(cs.pose7_to_matrix(pose7), matrix, atol=1e-12)
    np.testing.assert_allclose(cs.pose7_to_matrix([1, 2, 3, 0, 0, 0, 1]), [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])


def test_sensor_pose_is_a_half_turn_about_the_view_axis():
    camera = cs.top_down_camera_pose()
    sensor = cs.sensor_pose_from_camera_pose(camera)
    np.testing.assert_allclose(sensor[:3, 2], camera[:3, 2])  # same viewing direction
    np.testing.assert_allclose(sensor[:3, 0], -camera[:3, 0])  # sensor x points to the image's left
    np.testing.assert_allclose(cs.sensor_pose_from_camera_pose(sensor), camera)
    assert np.linalg.det(sensor[:3, :3]) == pytest.approx(1.0)


def test_perspective_angle_matches_spec_intrinsics():
    angle = cs.perspective_angle_rad(640, 480, 618.62)
    assert math.degrees(angle) == pytest.approx(54.70, abs=0.01)
    assert 320 / math.tan(angle / 2) == pytest.approx(618.62)


def test_top_down_camera_sees_the_whole_workspace():
    pose = cs.top_down_camera_pose()
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-12)
    corners = np.array([[x, y, z] for x in WORKSPACE_LIMITS_M[0] for y in WORKSPACE_LIMITS_M[1] for z in (0.0, 0.1)])
    in_camera = (corners - pose[:3, 3]) @ pose[:3, :3]
    pixels = in_camera @ INTRINSICS.T
    pixels = pixels[:, :2] / pixels[:, 2:]
    assert np.all(in_camera[:, 2] > 0)
    assert np.all((pixels >= 0) & (pixels < [640, 480]))
    # image right = base -y, image up = base +x (like MujocoSim's camera)
    np.testing.assert_allclose(pose[:3, 0], [0, -1, 0])
    np.testing.assert_allclose(pose[:3, 1], [-1, 0, 0])


def test_vision_buffers_are_flipped_and_scaled():
    width, height = 4, 3
    image = np.zeros((height, width, 3), np.uint8)
    image[0] = 255  # the buffer's first row is the image's bottom row
    rgb = cs.rgb_buffer_to_image(image.tobytes(), [width, height])
    assert rgb.shape == (3, 4, 3) and rgb[-1].min() == 255 and rgb[0].max() == 0
    values = np.array([[0.0, 0.5, 1.0, 0.25]] * height, np.float32)
    depth = cs.depth_buffer_to_metres(values.tobytes(), [width, height], 0.01, 10.0)
    np.testing.assert_allclose(depth[0, :2], [0.01, 0.01 + 0.5 * 9.99], rtol=1e-6)
    assert np.isnan(depth[0, 2])
    assert depth.dtype == np.float32
    with pytest.raises(UserError, match="depth values"):
        cs.depth_buffer_to_metres(values.tobytes()[:-4], [width, height], 0.01, 10.0)


def test_finger_poses_follow_robot_conventions():
    left, right, palm = cs.finger_and_palm_poses(np.array([-0.5, 0.0, 0.02]), 0.0, 0.09)
    np.testing.assert_allclose(left[:3, 3], [-0.5, 0.05, 0.02 + scene.FINGER_HALF_LENGTH_M])
    np.testing.assert_allclose(right[:3, 3], [-0.5, -0.05, 0.02 + scene.FINGER_HALF_LENGTH_M])
    assert palm[2, 3] > left[2, 3]
    left, right, _ = cs.finger_and_palm_poses(np.zeros(3), np.pi / 2, 0.0)
    # at yaw pi/2 the fingers close along base x (robot.py: closing axis = Rz(yaw) y)
    np.testing.assert_allclose(left[:2, 3], [-scene.FINGER_HALF_THICKNESS_M, 0.0], atol=1e-12)
    np.testing.assert_allclose(right[:2, 3], [scene.FINGER_HALF_THICKNESS_M, 0.0], atol=1e-12)


def test_footprint_mask_of_a_square():
    half = 0.02
    square = np.array([[-0.5 + sx * half, sy * half, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0, 0.05)])
    mask = base.footprint_mask([square], utils.heightmap_shape(), border_px=0)
    assert mask.sum() / 255 == pytest.approx(20 * 20, rel=0.15)  # 4 cm at 2 mm per pixel (edges included)
    row, col = utils.base_xy_to_pixel(-0.5, 0.0)
    assert mask[row, col] == 255
    assert base.footprint_mask([square], utils.heightmap_shape()).sum() > mask.sum()


# ------------------------------------------------------------------ kinematic test double
class FakeSim:
    """The part of CoppeliaSim's `sim` API the backend uses, kinematic only (no physics).

    Shapes remember their local vertices (boxes: corners) and poses; checkCollision tests the
    overlap of axis-aligned bounds in the first shape's frame. Argument types are checked so
    an argument-order slip in the backend fails here.
    """

    simulation_stopped, simulation_advancing_running = 0, 17
    handle_world, handle_scene, handle_all = -1, -12, -2
    floatparam_simulation_time_step = 1
    primitiveshape_cuboid = 3
    shapeintparam_static, shapeintparam_respondable = 3003, 3004
    colorcomponent_ambient_diffuse = 0

    def __init__(self) -> None:
        self.state = self.simulation_stopped
        self.next_handle = 1
        self.vertices: dict[int, np.ndarray] = {}
        self.poses: dict[int, np.ndarray] = {}
        self.aliases: dict[int, str] = {}
        self.steps = 0
        self.calls = 0
        self.stepping = False

    def _new(self, vertices: np.ndarray) -> int:
        handle = self.next_handle
        self.next_handle += 1
        centre = (vertices.min(0) + vertices.max(0)) / 2  # like CoppeliaSim: frame at the bounds' centre
        self.vertices[handle] = vertices - centre
        self.poses[handle] = np.eye(4)
        self.poses[handle][:3, 3] = centre
        return handle

    def __getattribute__(self, name):
        if not name.startswith("_") and callable(object.__getattribute__(self, name)):
            object.__setattr__(self, "calls", object.__getattribute__(self, "calls") + 1)
        return object.__getattribute__(self, name)

    # simulation
    def getSimulationState(self): return self.state
    def stopSimulation(self): self.state = self.simulation_stopped
    def startSimulation(self): self.state = self.simulation_advancing_running
    def setStepping(self, enabled): self.stepping = bool(enabled)
    def setFloatParam(self, parameter, value): assert isinstance(value, float)
    def getSimulationTimeStep(self): return 0.005

    def step(self):
        assert self.stepping and self.state != self.simulation_stopped
        self.steps += 1

    # objects
    def getObjectsInTree(self, base, object_type, options): return list(self.poses)
    def getObjectAlias(self, handle): return self.aliases.get(handle, "Floor")
    def setObjectAlias(self, handle, alias): self.aliases[handle] = alias

    def removeObjects(self, handles):
        assert isinstance(handles, list)
        for handle in handles:
            del self.poses[handle], self.vertices[handle]

    def createPrimitiveShape(self, kind, sizes, options):
        assert kind == self.primitiveshape_cuboid and len(sizes) == 3
        half = np.asarray(sizes) / 2
        return self._new(np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half)

    def createMeshShape(self, options, shading_angle, vertices, indices):
        assert all(isinstance(v, float) for v in vertices) and all(isinstance(i, int) for i in indices)
        return self._new(np.asarray(vertices).reshape(-1, 3))

    def groupShapes(self, handles, merge):
        world = np.concatenate([self.vertices[h] @ self.poses[h][:3, :3].T + self.poses[h][:3, 3] for h in handles])
        self.removeObjects(list(handles))
        return self._new(world)

    def createVisionSensor(self, options, int_params, float_params):
        assert len(int_params) == 4 and len(float_params) == 11 and options & 2
        self.resolution = int_params[:2]
        return self._new(np.zeros((1, 3)))

    def setObjectInt32Param(self, handle, parameter, value): assert handle in self.poses
    def setShapeColor(self, handle, name, component, rgb): assert len(rgb) == 3 and name is None
    def computeMassAndInertia(self, handle, density): assert density > 0
    def resetDynamicObject(self, handle): assert handle in self.poses

    def setObjectPose(self, handle, pose, relative_to):
        assert isinstance(handle, int) and len(pose) == 7 and relative_to == self.handle_world
        self.poses[handle] = cs.pose7_to_matrix(pose)

    def getObjectPose(self, handle, relative_to):
        assert relative_to == self.handle_world
        return cs.matrix_to_pose7(self.poses[handle])

    def getObjectVelocity(self, handle): return [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]

    def checkCollision(self, first, second):
        to_first = np.linalg.inv(self.poses[first])
        def bounds(handle):
            world = self.vertices[handle] @ self.poses[handle][:3, :3].T + self.poses[handle][:3, 3]
            local = world @ to_first[:3, :3].T + to_first[:3, 3]
            return local.min(0), local.max(0)
        (low1, high1), (low2, high2) = bounds(first), bounds(second)
        hit = bool(np.all(low1 < high2) and np.all(low2 < high1))
        return (1 if hit else 0), ([first, second] if hit else [])

    # vision
    def handleVisionSensor(self, handle): return 0, [], []

    def getVisionSensorImg(self, handle):
        width, height = self.resolution
        return bytes(width * height * 3), [width, height]

    def getVisionSensorDepth(self, handle, options):
        width, height = self.resolution
        return np.full(width * height, 0.075, np.float32).tobytes(), [width, height]


def cube_at(x: float, y: float) -> SceneObject:
    return SceneObject("4.obj", (1.0, 0.0, 0.0), (x, y, 0.025 + cs.TABLE_TOP_Z_M), (0.0, 0.0, 0.0))


def test_backend_flow_against_the_double():
    sim = FakeSim()
    backend = cs.CoppeliaSimBackend(sim=sim, objects=[cube_at(-0.5, 0.0), cube_at(-0.4, 0.1),
                                                      SceneObject("4.obj", (0, 1, 0), (-0.5, 0, -0.3), (0, 0, 0))])
    assert sim.state == sim.simulation_advancing_running and sim.stepping
    np.testing.assert_array_equal(backend.removed, [False, False, True])  # below the table: starts removed
    assert backend.num_objects_in_workspace() == 2
    masks = backend.object_masks()
    assert set(masks) == {0, 1}
    row, col = utils.base_xy_to_pixel(-0.5, 0.0)
    assert masks[0][row, col] == 255 and masks[0].sum() / 255 == pytest.approx(29 * 29, rel=0.15)

    color, depth = backend.get_camera_data()
    assert color.shape == (480, 640, 3) and depth.shape == (480, 640)
    assert depth[0, 0] == pytest.approx(0.01 + 0.075 * 9.99, rel=1e-5)

    steps = sim.steps
    backend.push(robot.PushPlan(np.array([-0.6, 0.0, 0.01]), np.array([-0.47, 0.0, 0.01]), 0.0))
    assert sim.steps - steps > 100  # a 13 cm push at 1 mm per step
    left = sim.poses[backend._fingers[0]][:3, 3]
    np.testing.assert_allclose(left[:2], [scene.PARK_POSITION_M[0], scene.PARK_POSITION_M[1] + scene.FINGER_HALF_THICKNESS_M])

    # a grasp centred on cube 1 closes on it: both fingers touch it at a 5 cm gap
    result = backend.grasp(robot.GraspPlan(np.array([-0.4, 0.1, 0.02]), 0.0))
    assert result == robot.GraspResult(True, 1)
    np.testing.assert_array_equal(backend.removed, [False, True, True])
    assert set(backend.object_masks()) == {0}

    # a grasp over empty table closes fully: failure
    assert backend.grasp(robot.GraspPlan(np.array([-0.35, -0.15, 0.02]), 0.3)) == robot.GraspResult(False, -1)

    backend.close()
    assert sim.state == sim.simulation_stopped
    assert all(not alias.startswith(cs.ALIAS_PREFIX) for h, alias in sim.aliases.items() if h in sim.poses)


def test_descent_stops_on_top_of_an_object():
    sim = FakeSim()
    backend = cs.CoppeliaSimBackend(sim=sim, objects=[cube_at(-0.5, 0.0)])
    backend._enter(np.array([-0.5, 0.0, 0.15]), 0.0, open_fingers=False)  # closed fingers right above the cube
    reached = backend._descend(np.array([-0.5, 0.0, 0.01]))
    assert not reached
    step_m = base.TRAVEL_SPEED_M_S * cs.TIME_STEP_S
    assert backend._gripper_position()[2] == pytest.approx(0.05 + cs.TABLE_TOP_Z_M, abs=2 * step_m)
    backend.close()


def test_random_reset_drops_num_obj_objects():
    sim = FakeSim()
    backend = cs.CoppeliaSimBackend(sim=sim, num_obj=4, rng=3)
    assert len(backend.removed) == 4 and not backend.removed.any()
    assert backend.num_objects_in_workspace() == 4  # no physics in the double: they hang where dropped
    # Without physics nothing falls: each object hangs 1 cm above the pile dropped before it.
    pile_top = cs.TABLE_TOP_Z_M
    for index in range(4):
        z = np.concatenate(backend._world_parts(index))[:, 2]
        assert z.min() == pytest.approx(pile_top + base.DROP_CLEARANCE_M)
        pile_top = max(pile_top, z.max())
    backend.reset_scene(np.random.default_rng(4))
    assert len(sim.poses) == 5 + 4  # table, camera, 2 fingers, palm, and only the new objects
    backend.close()


def test_clustered_drop_is_the_shared_one():
    """drop_objects (simulation.base) serves CoppeliaSim too: the centre object first, the others around it."""
    sim = FakeSim()
    backend = cs.CoppeliaSimBackend(sim=sim, num_obj=3)
    assert len(backend.removed) == 0  # no generator given: an empty table, no seed of its own
    backend.drop_objects(["4.obj", "4.obj", "4.obj"], np.random.default_rng(0), cluster_around=2, cluster_radius_m=0.08)
    positions = backend._object_positions()
    distances = np.linalg.norm(positions[:2, :2] - positions[2, :2], axis=1)
    assert np.all((distances >= base.CLUSTER_MIN_DISTANCE_M - 1e-9) & (distances <= 0.08 + 1e-9))
    backend.close()


def test_close_gives_up_after_the_close_timeout_it_names(monkeypatch, caplog):
    """A simulator that stops answering while closing: close() waits CLOSE_TIMEOUT_S, not the 30 s call timeout."""
    from coppeliasim_zmqremoteapi_client import RemoteAPIClient
    import zmq

    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    port = server.getsockname()[1]
    sim = FakeSim()
    backend = cs.CoppeliaSimBackend(sim=sim, objects=[cube_at(-0.5, 0.0)])
    backend._client = RemoteAPIClient("127.0.0.1", port)
    backend._client.socket.setsockopt(zmq.LINGER, 0)
    backend._set_receive_timeout(backend.call_timeout_s)
    sim.stopSimulation = lambda: backend._client.call("sim.stopSimulation", [])
    monkeypatch.setattr(cs, "CLOSE_TIMEOUT_S", 0.3)
    start = time.monotonic()
    try:
        backend.close()
    finally:
        server.close()
    assert time.monotonic() - start < 2.0
    assert "did not answer within 0.3 s while closing" in caplog.text
    assert backend._client.socket.getsockopt(zmq.RCVTIMEO) == int(backend.call_timeout_s * 1000)  # restored
