"""The real backend's code against local fakes that speak the devices' protocols on 127.0.0.1:
a Robotiq URCap socket server (its ASCII protocol: activation, faults, objects detected and
lost) and a fake ur-rtde layer (its two interfaces, with a controller that refuses poses,
reports protective stops and meets contacts; it listens on 127.0.0.1 for the RTDE probe).
Plus the cell file that `real.calibrate` writes and `main.py --real` reads."""
from __future__ import annotations

import json
import socket
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

import main
import robot
import utils
from real import calibrate, calibration, camera as camera_mod, segmentation
from real import arm as arm_mod
from real.arm import RTDEArm
from real.camera import ArrayCamera, SyntheticTableCamera, nominal_intrinsics
from real.cell import CELL_FILE, Cell, load_cell, save_cell
from real.gripper import ACTIVATION_TIMEOUT_S, GripperState, NullGripper, RobotiqGripper
from real.ur5 import UR5Config, UR5Robot, dry_run_blocks, open_ur5_backend
from utils import UserError

INTRINSICS = nominal_intrinsics(640, 480)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def block_heightmap(row: int, col: int, height_m: float = 0.05, half_px: int = 12) -> np.ndarray:
    heightmap = np.zeros(utils.heightmap_shape(), np.float32)
    heightmap[row - half_px:row + half_px, col - half_px:col + half_px] = height_m
    return heightmap


# ------------------------------------------------------------------ a Robotiq URCap on 127.0.0.1
class FakeURCap:
    """The URCap's socket server: 'SET VAR v ...' -> 'ack', 'GET VAR' -> 'VAR v', with the
    2F-85's register behaviour as its manual describes it:
    - ACT 0 resets (STA 0, FLT 0); only a rising edge of ACT starts an activation (STA 1 for
      activation_s, then 3). A fault with ACT already 1 stays until that edge.
    - activation_fault: the activation never completes and reports that fault code.
    - closing stops on an object at object_position (OBJ 2); slip: the object is lost after
      the close (the next OBJ reads 3, POS fully closed).
    """

    CLOSED = 228

    def __init__(self, object_position: int | None = 120, newline: bool = True, active: bool = False,
                 fault: int = 0, activation_s: float = 0.05, activation_fault: int | None = None,
                 slip: bool = False) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(5.0)
        self.port = self.server.getsockname()[1]
        self.vars = {"ACT": 1 if (active or fault) else 0, "STA": 3 if active else 0, "GTO": 0, "PRE": 0, "POS": 0,
                     "OBJ": 3, "FLT": fault, "SPE": 0, "FOR": 0, "ATR": 0}
        self.object_position, self.newline, self.slip = object_position, newline, slip
        self.activation_s, self.activation_fault = activation_s, activation_fault
        self.received: list[str] = []
        self.actual = 0
        self._activation_started: float | None = None
        self._polls, self._target, self._holding = 0, 0, False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _reply(self, text: str) -> bytes:
        return (text + ("\n" if self.newline else "")).encode()

    def _serve(self) -> None:
        try:
            connection, _ = self.server.accept()
        except OSError:
            return
        connection.settimeout(5.0)
        buffer = b""
        with connection:
            while True:
                try:
                    chunk = connection.recv(1024)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    connection.sendall(self._handle(line.decode().strip()))

    def _set(self, name: str, value: int) -> None:
        if name == "ACT":
            if value == 0:
                self.vars.update(ACT=0, STA=0, FLT=0)
                self._activation_started = None
            elif self.vars["ACT"] == 0:  # the rising edge
                self.vars.update(ACT=1, STA=1)
                self._activation_started = time.monotonic()
            return
        self.vars[name] = value

    def _handle(self, command: str) -> bytes:
        self.received.append(command)
        words = command.split()
        if words[0] == "SET":
            for name, value in zip(words[1::2], words[2::2]):
                self._set(name, int(value))
            if "POS" in words:
                self.vars["PRE"] = self.vars["POS"]
                self._target, self._polls, self._holding = self.vars["POS"], 0, False
                self.vars["OBJ"] = 0
            return self._reply("ack")
        name = words[1]
        if self._activation_started is not None and name in ("STA", "FLT"):
            if self.activation_fault is not None:
                self.vars["FLT"] = self.activation_fault
            elif time.monotonic() - self._activation_started >= self.activation_s:
                self.vars["STA"] = 3
        if name == "OBJ" and self._holding and self.slip:
            self.vars["OBJ"], self.actual = 3, self.CLOSED  # lost during the rise
        if name == "OBJ" and self.vars["OBJ"] == 0:
            self._polls += 1
            if self._polls >= 2:  # moving for two polls, then stopped
                closing_on_object = self.object_position is not None and self._target > self.object_position
                self.vars["OBJ"] = 2 if closing_on_object else 3
                self.actual = self.object_position if closing_on_object else min(self._target, self.CLOSED)
                self._holding = closing_on_object
        value = self.actual if name == "POS" else self.vars[name]
        return self._reply(f"{name} {value}")

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5.0)


@pytest.fixture
def urcap(request):
    servers = []

    def start(**kwargs) -> FakeURCap:
        servers.append(FakeURCap(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_robotiq_parses_replies_from_a_fake_urcap(urcap):
    server = urcap(object_position=120)
    gripper = RobotiqGripper("127.0.0.1", server.port, timeout_s=1.0, motion_timeout_s=2.0)
    state = gripper.close()
    assert state == GripperState(True, pytest.approx(0.085 * (228 - 120) / 228), 120)
    assert "SET POS 255 SPE 255 FOR 100 GTO 1" in server.received
    assert gripper.holding().object_detected  # still there
    state = gripper.open()
    assert not state.object_detected and state.raw_position == 0 and state.width_m == pytest.approx(0.085)
    gripper.disconnect()


def test_robotiq_without_object_and_without_newlines(urcap):
    server = urcap(object_position=None, newline=False)
    gripper = RobotiqGripper("127.0.0.1", server.port, timeout_s=1.0, motion_timeout_s=2.0)
    state = gripper.close()
    assert not state.object_detected and state.raw_position == 228 and state.width_m == pytest.approx(0.0)
    gripper.disconnect()


def test_activation_resets_first_and_waits_for_a_slow_activation(urcap):
    """ACT 0 and status 0 before ACT 1; the activation may take longer than any finger motion."""
    server = urcap(activation_s=0.6)
    gripper = RobotiqGripper("127.0.0.1", server.port, timeout_s=1.0, motion_timeout_s=0.2, activation_timeout_s=3.0)
    sent = [c for c in server.received if c.startswith("SET")]
    assert sent[:3] == ["SET ACT 0 ATR 0", "SET ACT 1", "SET GTO 1"]
    reset, activate = server.received.index("SET ACT 0 ATR 0"), server.received.index("SET ACT 1")
    assert "GET STA" in server.received[reset:activate]  # waited for status 0 in between
    assert server.vars["STA"] == 3
    assert ACTIVATION_TIMEOUT_S >= 15.0  # a real 2F-85 activation, not the 5 s motion timeout
    gripper.disconnect()


def test_a_faulted_gripper_with_act_already_set_recovers(urcap):
    """Fault 0x0E with ACT 1: 'SET ACT 1' alone changes nothing; the reset edge clears it."""
    server = urcap(fault=0x0E)
    gripper = RobotiqGripper("127.0.0.1", server.port, timeout_s=1.0, motion_timeout_s=1.0)
    assert server.vars["FLT"] == 0 and server.vars["STA"] == 3
    assert gripper.close().object_detected
    gripper.disconnect()
    active = urcap(active=True)
    RobotiqGripper("127.0.0.1", active.port, timeout_s=1.0).disconnect()
    assert [c for c in active.received if c.startswith("SET")] == []  # active and fault-free: left alone


def test_an_activation_fault_is_one_clear_error(urcap):
    server = urcap(activation_fault=0x0D)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"activation failed: fault 13 \(0x0D: activation fault") as info:
        RobotiqGripper("127.0.0.1", server.port, timeout_s=1.0, motion_timeout_s=1.0)
    assert time.monotonic() - start < 2.0 and "\n" not in str(info.value)


@pytest.mark.parametrize("slip", [False, True])
def test_grasp_success_is_checked_again_after_the_rise(urcap, slip):
    """The URCap reports the object detected on closing; with slip it is lost during the rise."""
    server = urcap(object_position=120, slip=slip)
    gripper = RobotiqGripper("127.0.0.1", server.port, timeout_s=1.0, motion_timeout_s=2.0)
    backend, arm = dry_run_robot(gripper)
    result = backend.grasp(robot.plan_grasp((0, 100, 60), block_heightmap(100, 60)))
    labels = [w.label for w in arm.motions]
    if slip:
        assert result == robot.GraspResult(False, -1) and "bin" not in labels
    else:
        assert result.success and labels == ["approach", "descend", "rise", "bin", "home"]
    closing = server.received.index("SET POS 255 SPE 255 FOR 100 GTO 1")
    opening = max(i for i, c in enumerate(server.received) if c.startswith("SET POS 0 "))
    assert "GET OBJ" in server.received[closing:opening][-3:]  # read again after the rise, before opening
    gripper.disconnect()


def test_robotiq_unreachable_and_garbage():
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot reach Robotiq gripper"):
        RobotiqGripper("127.0.0.1", closed_port(), timeout_s=0.5)
    assert time.monotonic() - start < 3.0
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def garbage() -> None:
        server.settimeout(5.0)
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            connection.recv(1024)
            connection.sendall(b"hello world\n")
            connection.recv(1024)

    thread = threading.Thread(target=garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(UserError, match="unexpected reply"):
            RobotiqGripper("127.0.0.1", port, timeout_s=1.0)
    finally:
        server.close()
        thread.join(timeout=5.0)


def dry_run_robot(gripper, cell: Cell | None = None):
    config = UR5Config(cell=cell or Cell())
    frame = (np.zeros((480, 640, 3), np.uint8), np.full((480, 640), 0.7, np.float32))
    from real.arm import DryRunArm

    arm = DryRunArm(config.envelope())
    backend = UR5Robot(config, arm, gripper, ArrayCamera([frame], INTRINSICS), np.eye(4), segmentation.ColorSegmenter(),
                       prompt=lambda text: "")
    return backend, arm


# ------------------------------------------------------------------ a fake ur-rtde layer
class FakeController:
    """The UR controller behind ur-rtde's interfaces, kinematic: the TCP moves in 1 mm steps
    while an asynchronous moveL runs (one step per progress poll).

    refuse(pose) -> bool: isPoseWithinSafetyLimits says no. surface_z: a guarded descent meets
    something there (toolContact fires). force_at_z: below this z the TCP force rises by 40 N
    (toolContact silent). stop_below_z: a motion that goes below it ends in a protective stop.
    events: every call that checks or moves, in order.
    """

    def __init__(self, cell: Cell) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))  # the RTDE port the probe knocks on
        self.port = self.server.getsockname()[1]
        self.cell = cell
        self.pose = np.array([-0.4, 0.3, 0.3, np.pi, 0.0, 0.0])  # wherever the arm was left
        self.refuse = lambda pose: False
        self.surface_z: float | None = None
        self.force_at_z: float | None = None
        self.stop_below_z: float | None = None
        self.fk_error_m = 0.0
        self.control_fails = False
        self.protective_stop = False
        self.events: list[tuple] = []
        self.receive_disconnected = False
        self._target: np.ndarray | None = None

    def moves(self) -> list[tuple]:
        return [e for e in self.events if e[0] in ("moveL", "moveJ", "stopL", "setTcp")]

    def modules(self) -> tuple[types.ModuleType, types.ModuleType]:
        controller = self

        class RTDEControlInterface:
            def __init__(self, host: str) -> None:
                if controller.control_fails:
                    raise RuntimeError("ur_rtde: Failed to start control script, before timeout of 5 seconds")

            def setTcp(self, offset):
                controller.events.append(("setTcp", list(offset)))
                return True

            def isPoseWithinSafetyLimits(self, pose):
                controller.events.append(("checkPose", list(pose)))
                return not controller.refuse(np.asarray(pose))

            def isJointsWithinSafetyLimits(self, q):
                controller.events.append(("checkJoints", list(q)))
                return True

            def getForwardKinematics(self, q, tcp_offset):
                assert tcp_offset == [0.0, 0.0, controller.cell.tool_offset_m, 0.0, 0.0, 0.0]
                pose = np.array(controller.cell.home_tcp_pose, dtype=float)
                pose[0] += controller.fk_error_m
                return list(pose) if np.allclose(q, controller.cell.home_joints_rad) else [0.0] * 6

            def moveJ(self, q, speed, acceleration):
                controller.events.append(("moveJ", list(q)))
                controller.pose = np.array(controller.cell.home_tcp_pose, dtype=float)
                return True

            def moveL(self, pose, speed, acceleration, asynchronous=False):
                controller.events.append(("moveL", list(pose), asynchronous))
                target = np.asarray(pose, dtype=float)
                if controller.stop_below_z is not None and target[2] < controller.stop_below_z:
                    controller.protective_stop = True
                    return False
                if asynchronous:
                    controller._target = target
                else:
                    controller.pose = target
                return True

            def getAsyncOperationProgress(self):
                if controller._target is None:
                    return -1
                delta = controller._target[:3] - controller.pose[:3]
                step = delta if np.linalg.norm(delta) <= 0.001 else delta / np.linalg.norm(delta) * 0.001
                controller.pose = np.concatenate([controller.pose[:3] + step, controller._target[3:]])
                if np.linalg.norm(controller._target[:3] - controller.pose[:3]) < 1e-9:
                    controller._target = None
                return 0

            def toolContact(self, direction):
                touching = controller.surface_z is not None and controller.pose[2] <= controller.surface_z
                return 3 if (touching and controller._target is not None) else 0

            def stopL(self, deceleration):
                controller.events.append(("stopL",))
                controller._target = None

            def stopScript(self):
                controller.events.append(("stopScript",))

            def disconnect(self):
                pass

        class RTDEReceiveInterface:
            def __init__(self, host: str) -> None:
                pass

            def getActualTCPPose(self):
                return list(controller.pose)

            def getActualQ(self):
                return list(controller.cell.home_joints_rad)

            def getActualTCPForce(self):
                pressing = controller.force_at_z is not None and controller.pose[2] <= controller.force_at_z
                return [0.0, 0.0, 40.0 if pressing else 0.0, 0.0, 0.0, 0.0]

            def isProtectiveStopped(self):
                return controller.protective_stop

            def disconnect(self):
                controller.receive_disconnected = True

        control = types.ModuleType("rtde_control")
        control.RTDEControlInterface = RTDEControlInterface
        receive = types.ModuleType("rtde_receive")
        receive.RTDEReceiveInterface = RTDEReceiveInterface
        return control, receive


@pytest.fixture
def controller(monkeypatch):
    fake = FakeController(Cell())
    control, receive = fake.modules()
    monkeypatch.setitem(sys.modules, "rtde_control", control)
    monkeypatch.setitem(sys.modules, "rtde_receive", receive)
    monkeypatch.setattr(arm_mod, "CONTACT_POLL_S", 0.0)
    yield fake
    fake.server.close()


class RecordingGripper(NullGripper):
    """A NullGripper that notes where the arm was at each command."""

    def __init__(self, controller: FakeController, close_results=None) -> None:
        super().__init__(close_results)
        self.controller, self.where = controller, []

    def close(self) -> GripperState:
        self.where.append(("close", self.controller.pose.copy()))
        return super().close()


class WatchingCamera(ArrayCamera):
    """Notes the arm's motions made before each image."""

    def __init__(self, controller: FakeController) -> None:
        super().__init__([(np.zeros((480, 640, 3), np.uint8), np.full((480, 640), 0.7, np.float32))], INTRINSICS)
        self.controller, self.moves_before = controller, []

    def get_frames(self):
        self.moves_before.append(list(self.controller.moves()))
        return super().get_frames()


def real_robot(controller: FakeController, gripper=None, **config) -> UR5Robot:
    cfg = UR5Config(cell=controller.cell, host="127.0.0.1", rtde_port=controller.port, connect_timeout_s=1.0, **config)
    return open_ur5_backend(cfg, camera=WatchingCamera(controller), camera_pose=np.eye(4), depth_scale=1.0,
                            gripper=gripper or RecordingGripper(controller))


def test_the_arm_goes_home_with_a_joint_move_before_the_first_image(controller):
    backend = real_robot(controller)
    backend.get_camera_data()
    moves = backend.camera.moves_before[0]
    assert [m[0] for m in moves] == ["setTcp", "moveJ"]
    assert moves[1][1] == list(controller.cell.home_joints_rad)
    # The controller checked the home joints and pose before the move.
    first_move = controller.events.index(moves[1])
    assert ("checkJoints", list(controller.cell.home_joints_rad)) in controller.events[:first_move]
    backend.close()


def test_every_waypoint_passes_the_controller_before_the_first_command(controller):
    backend = real_robot(controller)
    start = len(controller.events)
    backend.grasp(robot.plan_grasp((0, 100, 60), block_heightmap(100, 60)))
    events = controller.events[start:]
    first_move = next(i for i, e in enumerate(events) if e[0] in ("moveL", "moveJ"))
    checked = [e for e in events[:first_move] if e[0] == "checkPose"]
    assert len(checked) == 5  # approach, descend, rise, bin, home: all before the first moveL
    backend.close()


def test_a_bin_the_controller_refuses_sends_nothing_and_says_which(controller):
    backend = real_robot(controller)
    gripper = backend.gripper
    bin_xy = np.asarray(controller.cell.bin_position_m[:2])
    controller.refuse = lambda pose: np.linalg.norm(pose[:2] - bin_xy) < 1e-6  # e.g. a new safety plane
    before = list(controller.moves())
    with pytest.raises(UserError, match=r"grasp refused before anything was sent: UR5 controller refuses waypoint "
                                        r"'bin' .*isPoseWithinSafetyLimits") as info:
        backend.grasp(robot.plan_grasp((0, 100, 60), block_heightmap(100, 60)))
    assert controller.moves() == before and gripper.commands == []  # no approach, no close over the clutter
    assert "\n" not in str(info.value)
    backend.close()


def test_a_refused_home_stops_the_start_up(controller):
    controller.refuse = lambda pose: pose[2] > 0.34  # the home pose is above a safety plane
    with pytest.raises(UserError, match="start-up refused before anything was sent: .*'home'"):
        real_robot(controller)
    assert controller.moves() == [("setTcp", [0.0, 0.0, 0.175, 0.0, 0.0, 0.0])]


def test_a_grasp_descent_stops_on_contact_and_closes_there(controller):
    backend = real_robot(controller)
    controller.surface_z = 0.06  # a neighbour's top 4 cm above the grasp height
    backend.grasp(robot.plan_grasp((0, 100, 60), block_heightmap(100, 60)))
    (_, where), = backend.gripper.where
    assert where[2] == pytest.approx(0.06, abs=0.0015)  # stopped on it, not driven 4 cm into it
    assert ("stopL",) in controller.events and not controller.protective_stop
    backend.close()


def test_a_push_descent_that_meets_something_skips_the_push(controller):
    backend = real_robot(controller)
    controller.force_at_z = 0.05  # toolContact silent, but the TCP force jumps by 40 N
    plan = robot.plan_push((0, 112, 100), block_heightmap(112, 100))
    start = len(controller.events)
    backend.push(plan)
    moves = [e for e in controller.events[start:] if e[0] in ("moveL", "moveJ", "stopL")]
    assert [m[0] for m in moves] == ["moveL", "moveL", "stopL", "moveL", "moveJ"]  # approach, descend, stop, retreat
    np.testing.assert_allclose(moves[3][1][:3], plan.start_m + [0, 0, robot.PUSH_APPROACH_HEIGHT_M])
    assert all(not np.allclose(m[1][:2], plan.end_m[:2]) for m in moves if m[0] == "moveL")  # never pushed
    backend.close()


def test_a_protective_stop_is_reported_as_one(controller):
    backend = real_robot(controller)
    controller.stop_below_z = 0.015  # the descent to the push height, 1 cm above the table, trips it
    with pytest.raises(UserError, match="UR5 protective stop during 'descend'.*unlock the protective stop") as info:
        backend.push(robot.plan_push((0, 112, 100), np.zeros(utils.heightmap_shape(), np.float32)))
    assert "\n" not in str(info.value)
    backend.close()


def test_a_home_the_controller_places_elsewhere_is_refused(controller):
    controller.fk_error_m = 0.05
    with pytest.raises(UserError, match="home_tcp_pose .* is not where its home joints put the tool"):
        real_robot(controller)


def test_the_receive_interface_is_closed_when_the_control_interface_fails(controller):
    controller.control_fails = True
    with pytest.raises(UserError, match="cannot reach UR5 at 127.0.0.1: ur_rtde: Failed to start control script"):
        RTDEArm("127.0.0.1", UR5Config().envelope(), connect_timeout_s=1.0, rtde_port=controller.port)
    assert controller.receive_disconnected


# ------------------------------------------------------------------ the RealSense warm-up
def test_a_realsense_that_streams_nothing_is_a_user_error_and_is_stopped(monkeypatch):
    stopped = []

    class Pipeline:
        def start(self, config):
            return types.SimpleNamespace(
                get_device=lambda: types.SimpleNamespace(first_depth_sensor=lambda: types.SimpleNamespace(
                    get_depth_scale=lambda: 0.001)),
                get_stream=lambda stream: types.SimpleNamespace(as_video_stream_profile=lambda: types.SimpleNamespace(
                    get_intrinsics=lambda: types.SimpleNamespace(fx=900.0, fy=900.0, ppx=640.0, ppy=360.0))))

        def wait_for_frames(self, timeout_ms):
            raise RuntimeError("Frame didn't arrive within 5000")

        def stop(self):
            stopped.append(True)

    rs = types.SimpleNamespace(pipeline=Pipeline, config=lambda: types.SimpleNamespace(
        enable_device=lambda s: None, enable_stream=lambda *a: None),
        stream=types.SimpleNamespace(depth=1, color=2), format=types.SimpleNamespace(z16=1, rgb8=2),
        align=lambda stream: None)
    monkeypatch.setattr(camera_mod, "_import_realsense", lambda: rs)
    with pytest.raises(UserError, match="started but sent no frame within 5000 ms"):
        camera_mod.RealSenseCamera()
    assert stopped == [True]


# ------------------------------------------------------------------ the cell file
def test_cell_file_round_trip_and_clear_errors(tmp_path):
    cell = Cell(workspace_xy_m=((0.276, 0.724), (-0.224, 0.224)), table_z_m=-0.2, tool_offset_m=0.19,
                bin_position_m=(0.5, 0.45, 0.0), home_tcp_pose=(0.3, -0.35, 0.1, np.pi, 0.0, 0.0))
    path = save_cell(cell, tmp_path / CELL_FILE)
    loaded = load_cell(path)
    assert loaded == cell
    np.testing.assert_allclose(loaded.workspace_limits_m, [[0.276, 0.724], [-0.224, 0.224], [-0.2001, 0.2]])
    data = json.loads(path.read_text())

    def broken(**changes) -> Path:
        bad = tmp_path / f"bad-{len(list(tmp_path.glob('bad-*')))}.json"
        bad.write_text(json.dumps({**data, **changes}))
        return bad

    cases = [(broken(bin_position_m=[0.5, 0.0, 0.1]), "bin_position_m .* lies over the workspace"),
             (broken(home_tcp_pose=[0.5, 0.0, 0.3, 3.14, 0, 0]), "home_tcp_pose .* camera's view"),
             (broken(workspace_xy_m=[[0.2, 0.8], [-0.2, 0.2]]), "200x300 heightmap .* do not resize it"),
             (broken(tool_offset_m=0.6), "tool_offset_m 0.6 must be in"),
             (broken(home_joints_rad=[0, 0, 0]), "home_joints_rad must be 6 finite numbers"),
             (broken(bin_yaw=0.0), "unknown field"),
             (broken(format="something"), "not a 'push-grasp cell v1' file")]
    for bad, message in cases:
        with pytest.raises(UserError, match=message) as info:
            load_cell(bad)
        assert "\n" not in str(info.value)
    del data["table_z_m"]
    (tmp_path / "missing.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="missing field.*table_z_m"):
        load_cell(tmp_path / "missing.json")
    with pytest.raises(UserError, match="no cell file .*real.calibrate"):
        load_cell(tmp_path / "nowhere.json")


def test_calibrate_writes_the_cell_file_and_updates_it(tmp_path, capsys):
    assert calibrate.main(["--dry_run", "--output_dir", str(tmp_path), "--grid", "2", "2", "2",
                           "--tool_offset_m", "0.19", "--bin_position_m", "-0.45", "0.42", "0.2"]) == 0
    cell = load_cell(tmp_path / CELL_FILE)
    assert cell.tool_offset_m == 0.19 and cell.bin_position_m == (-0.45, 0.42, 0.2)
    assert calibrate.main(["--cell_only", "--cell", str(tmp_path / CELL_FILE), "--table_z_m", "0.01"]) == 0
    updated = load_cell(tmp_path / CELL_FILE)
    assert updated.table_z_m == 0.01 and updated.tool_offset_m == 0.19  # the rest kept
    assert calibrate.main(["--cell_only", "--cell", str(tmp_path / CELL_FILE), "--bin_position_m", "-0.5", "0", "0.2"]) == 2
    assert "lies over the workspace" in capsys.readouterr().err


def test_calibrate_records_the_home_from_the_arm(controller, tmp_path):
    """--record_home: the joints and TCP pose the controller reports (after setTcp) become the home."""
    path = tmp_path / CELL_FILE
    assert calibrate.main(["--cell_only", "--record_home", "--cell", str(path), "--robot_ip", "127.0.0.1",
                           "--rtde_port", str(controller.port), "--tool_offset_m", "0.18"]) == 0
    cell = load_cell(path)
    assert controller.events[0] == ("setTcp", [0.0, 0.0, 0.18, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(cell.home_tcp_pose, controller.pose)
    np.testing.assert_allclose(cell.home_joints_rad, controller.cell.home_joints_rad)
    assert not [e for e in controller.events if e[0] in ("moveL", "moveJ")]  # reading it moves nothing


def write_cell_dir(directory: Path, cell: Cell) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pose = calibration.look_at_pose(np.array([-1.05, 0.08, 0.55]) + [0, 0, cell.table_z_m],
                                    np.array([-0.5, 0.0, cell.table_z_m]))
    np.savetxt(directory / calibration.CAMERA_POSE_FILE, pose)
    save_cell(cell, directory / CELL_FILE)
    return directory


def test_main_real_reads_the_cell_file(tmp_path):
    """The tool offset, the box and the table of the cell file reach the arm and the planner."""
    cell = Cell(table_z_m=0.03, tool_offset_m=0.2, workspace_xy_m=((-0.7, -0.252), (-0.2, 0.248)),
                home_tcp_pose=(-0.30, 0.35, 0.38, np.pi, 0.0, 0.0))
    directory = write_cell_dir(tmp_path / "cell", cell)
    cfg = main.parse_config(["--real", "--dry_run", "--calibration_dir", str(directory)])
    backend = main.make_backend(cfg)
    try:
        assert backend.arm.tool_offset_m == 0.2  # setTcp gets the cell's offset, not 0.175
        facade = robot.Robot(backend, utils.WORKSPACE_LIMITS_M)
        np.testing.assert_allclose(facade.workspace_limits_m, cell.workspace_limits_m)  # plans in the cell's box
        plan = robot.plan_push((0, 112, 112), np.zeros(utils.heightmap_shape(), np.float32), facade.workspace_limits_m)
        assert plan.start_m[2] == pytest.approx(0.03 - 0.0001 + robot.PUSH_MIN_HEIGHT_M)  # 1 cm above this table
        _, _, _, depth_hm = facade.get_heightmaps()
        assert np.nanmedian(depth_hm) < 0.005  # the synthetic table sits at the cell's height
    finally:
        backend.close()
    other = tmp_path / "other-cell.json"
    save_cell(Cell(tool_offset_m=0.16), other)
    cfg = main.parse_config(["--real", "--dry_run", "--calibration_dir", str(directory), "--cell_file", str(other)])
    backend = main.make_backend(cfg)
    assert backend.arm.tool_offset_m == 0.16
    backend.close()
    cfg = main.parse_config(["--real", "--calibration_dir", str(tmp_path / "nothing")])
    with pytest.raises(UserError, match="no cell file"):
        main.make_backend(cfg)


def record_session(directory: Path, cell: Cell, frames_boxes: list[list]) -> Path:
    """A session folder as logger.py writes it: 1280x720 frames and its own intrinsics."""
    intrinsics = nominal_intrinsics(1280, 720)
    pose = np.loadtxt(directory.parent / "cell" / calibration.CAMERA_POSE_FILE)
    (directory / "info").mkdir(parents=True)
    (directory / "data" / "color-images").mkdir(parents=True)
    (directory / "data" / "depth-images").mkdir(parents=True)
    np.savetxt(directory / "info" / "camera-intrinsics.txt", intrinsics)
    for index, boxes in enumerate(frames_boxes):
        color, depth = SyntheticTableCamera(intrinsics, pose, 1280, 720, table_z_m=cell.table_z_m, boxes=boxes).get_frames()
        raw = np.round(np.nan_to_num(depth) * 1e4).astype(np.uint16)
        cv2.imwrite(str(directory / "data" / "color-images" / f"{index:06d}.0.color.png"),
                    cv2.cvtColor(color, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(directory / "data" / "depth-images" / f"{index:06d}.0.depth.png"), raw)
    return directory


def test_main_real_dry_run_prints_the_whole_plan(tmp_path, capsys):
    """One push (the goal packed in) and one grasp (the goal alone), replayed from 1280x720 frames."""
    cell = Cell()
    write_cell_dir(tmp_path / "cell", cell)
    blocks = dry_run_blocks(cell)
    session = record_session(tmp_path / "session", cell, [blocks, blocks[:1]])
    code = main.main(["--real", "--dry_run", "--calibration_dir", str(tmp_path / "cell"), "--replay_camera_dir",
                      str(session), "--policy", "heuristic", "--stage", "push_grasp", "--goal_conditioned",
                      "--goal_obj_idx", "0", "--max_iterations", "2", "--logs_dir", str(tmp_path / "logs")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "iteration 0: push" in out and "iteration 1: grasp" in out
    push = out[out.index("push: 6 waypoint(s) checked"):out.index("iteration 0")]
    grasp = out[out.index("grasp: 5 waypoint(s) checked"):out.index("iteration 1")]
    assert out.index("dry run: home      moveJ") < out.index("push: 6 waypoint(s)")  # home before the first image
    for label in ("approach", "descend", "push", "rise", "retreat", "home"):
        assert f"  {label}" in push
    for label in ("approach", "descend", "rise", "bin", "home"):
        assert f"  {label}" in grasp
    assert push.count("checks: ") == 6 and grasp.count("checks: ") == 5
    assert "guarded moveL (stops on contact)" in push and "guarded moveL (stops on contact)" in grasp
    assert "in the box" in grasp and "flange reach" in grasp and "tool down" in grasp
    assert "dry run: gripper close" in push and "dry run: gripper open" in grasp
    assert "re-check" not in grasp  # nothing was caught: no re-check, no bin
