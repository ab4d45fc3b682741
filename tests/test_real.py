"""Tests of the real-robot backend without hardware: dry-run arm, fake gripper server, synthetic camera."""
from __future__ import annotations

import socket
import time

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import robot
import utils
from real import calibrate, calibration, segmentation
from real.arm import DryRunArm, RTDEArm, probe_tcp
from real.camera import ArrayCamera, Box, FileCamera, RealSenseCamera, SyntheticTableCamera, nominal_intrinsics
from real.cell import Cell
from real.gripper import NullGripper
from real.motion import SafetyEnvelope, Waypoint, tcp_pose
from real.ur5 import UR5Config, UR5Robot, open_ur5_backend
from utils import WORKSPACE_LIMITS_M, UserError

INTRINSICS = np.array([[618.62, 0, 320], [0, 618.62, 240], [0, 0, 1.0]])


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CELL_FIELDS = {"bin_position_m", "home_joints_rad", "home_tcp_pose", "tool_offset_m", "table_z_m", "workspace_xy_m"}


def make_robot(close_results=None, hold_results=None, **overrides) -> tuple[UR5Robot, DryRunArm, NullGripper]:
    cell = Cell(**{k: v for k, v in overrides.items() if k in CELL_FIELDS})
    config = UR5Config(cell=cell, **{k: v for k, v in overrides.items() if k not in CELL_FIELDS})
    arm, gripper = DryRunArm(config.envelope()), NullGripper(close_results, hold_results=hold_results)
    frame = (np.zeros((480, 640, 3), np.uint8), np.full((480, 640), 0.7, np.float32))
    backend = UR5Robot(config, arm, gripper, ArrayCamera([frame], INTRINSICS), np.eye(4),
                       segmentation.ColorSegmenter(), prompt=lambda text: "")
    return backend, arm, gripper


def block_heightmap(row: int, col: int, height_m: float = 0.05, half_px: int = 12) -> np.ndarray:
    heightmap = np.zeros(utils.heightmap_shape(), np.float32)
    heightmap[row - half_px:row + half_px, col - half_px:col + half_px] = height_m
    return heightmap


def yaw_of(pose: np.ndarray) -> float:
    x_axis = Rotation.from_rotvec(pose[3:]).as_matrix()[:, 0]
    return float(np.arctan2(x_axis[1], x_axis[0]))


def assert_tool_down(pose: np.ndarray) -> None:
    np.testing.assert_allclose(Rotation.from_rotvec(pose[3:]).as_matrix()[:, 2], [0, 0, -1], atol=1e-9)


# ------------------------------------------------------------------ dry-run motions
def test_dry_run_push_waypoints_follow_the_plan_and_clip_the_end():
    backend, arm, gripper = make_robot()
    heightmap = block_heightmap(112, 200)
    plan = robot.plan_push((0, 112, 215), heightmap)  # rotation 0: push along +x, from near the x max edge
    backend.push(plan)
    assert [w.label for w in arm.motions] == ["approach", "descend", "push", "rise", "home"]
    assert arm.motions[1].guarded and not any(w.guarded for w in arm.motions[2:])
    assert arm.motions[4].is_joint_move  # home is a joint move
    assert gripper.commands == ["close"]
    poses = np.array([w.pose for w in arm.motions])
    np.testing.assert_allclose(poses[0, :3], plan.start_m + [0, 0, robot.PUSH_APPROACH_HEIGHT_M])
    np.testing.assert_allclose(poses[1, :3], plan.start_m)
    np.testing.assert_allclose(poses[2, :3], plan.end_m)
    np.testing.assert_allclose(poses[3, :3], plan.end_m + [0, 0, robot.PUSH_APPROACH_HEIGHT_M])
    assert poses[2, 0] == pytest.approx(WORKSPACE_LIMITS_M[0][1])  # 0.13 m push clipped at the box edge
    # push height: local max (0.05) - 0.02 above the table
    assert poses[1, 2] == pytest.approx(WORKSPACE_LIMITS_M[2][0] + 0.03)
    for pose in poses[:4]:
        assert_tool_down(pose)
        assert yaw_of(pose) == pytest.approx(plan.yaw_rad)
    assert arm.motions[2].speed == backend.config.push_speed_m_s
    assert arm.motions[4].transit and not any(w.transit for w in arm.motions[:4])


def test_dry_run_grasp_success_drops_at_the_bin():
    backend, arm, gripper = make_robot(close_results=[True])
    plan = robot.plan_grasp((5, 100, 60), block_heightmap(100, 60, 0.05))
    result = backend.grasp(plan)
    assert result == robot.GraspResult(True, -1)
    assert [w.label for w in arm.motions] == ["approach", "descend", "rise", "bin", "home"]
    assert gripper.commands == ["open", "close", "holding", "open"]  # held again after the rise
    poses = np.array([w.pose for w in arm.motions])
    np.testing.assert_allclose(poses[1, :3], plan.position_m)
    assert poses[1, 2] == pytest.approx(WORKSPACE_LIMITS_M[2][0] + 0.02)  # max(0.05 - 0.04, 0.02)
    np.testing.assert_allclose(poses[0, :3], plan.position_m + [0, 0, robot.GRASP_APPROACH_HEIGHT_M])
    np.testing.assert_allclose(poses[2, :3], poses[0, :3])
    np.testing.assert_allclose(poses[3, :3], backend.cell.bin_position_m)
    assert yaw_of(poses[1]) == pytest.approx(robot.gripper_yaw_rad(5 * utils.ROTATION_STEP_RAD))


def test_grasped_object_is_the_one_under_the_fingers():
    backend, _, _ = make_robot(close_results=[True, True])
    color = np.full(utils.heightmap_shape() + (3,), 110, np.uint8)
    depth = block_heightmap(100, 60, 0.05)
    color[88:112, 48:72] = segmentation.PALETTE_RGB_U8[3]  # orange block under the grasp point
    assert set(backend.object_masks(color, depth)) == {3}
    assert backend.grasp(robot.plan_grasp((0, 100, 60), depth)) == robot.GraspResult(True, 3)
    assert backend.grasp(robot.plan_grasp((0, 20, 200), depth)) == robot.GraspResult(True, -1)


def test_dry_run_grasp_failure_skips_the_bin():
    backend, arm, gripper = make_robot(close_results=[False])
    result = backend.grasp(robot.plan_grasp((0, 100, 60), block_heightmap(100, 60)))
    assert not result.success
    assert [w.label for w in arm.motions] == ["approach", "descend", "rise", "home"]
    assert gripper.commands == ["open", "close", "open"]


def test_an_object_that_slips_during_the_rise_is_a_failed_grasp():
    backend, arm, gripper = make_robot(close_results=[True], hold_results=[False])
    result = backend.grasp(robot.plan_grasp((0, 100, 60), block_heightmap(100, 60)))
    assert result == robot.GraspResult(False, -1)
    assert [w.label for w in arm.motions] == ["approach", "descend", "rise", "home"]  # not carried to the bin
    assert gripper.commands == ["open", "close", "holding", "open"]


def test_approach_height_is_capped_at_the_box_top():
    backend, arm, _ = make_robot()
    top = WORKSPACE_LIMITS_M[2][1]
    backend.grasp(robot.GraspPlan(np.array([-0.5, 0.0, top - 0.05]), 0.0))
    assert arm.motions[0].pose[2] == pytest.approx(top)


def test_plan_outside_the_workspace_moves_nothing():
    backend, arm, gripper = make_robot()
    bad = robot.PushPlan(np.array([-0.9, 0.0, 0.02]), np.array([-0.77, 0.0, 0.02]), 0.0)
    with pytest.raises(UserError, match="outside the workspace"):
        backend.push(bad)
    with pytest.raises(UserError, match="outside the workspace"):
        backend.grasp(robot.GraspPlan(np.array([-0.5, 0.0, -0.05]), 0.0))
    with pytest.raises(UserError, match="finite"):
        backend.grasp(robot.GraspPlan(np.array([-0.5, np.nan, 0.05]), 0.0))
    assert arm.motions == [] and gripper.commands == []


def test_speed_over_the_limit_moves_nothing():
    backend, arm, gripper = make_robot()
    backend.config.push_speed_m_s = 1.0  # changed after start-up: still caught before sending
    plan = robot.plan_push((0, 112, 100), block_heightmap(112, 100))
    with pytest.raises(UserError, match="speed"):
        backend.push(plan)
    assert arm.motions == [] and gripper.commands == []
    with pytest.raises(UserError, match="travel_speed_m_s"):
        make_robot(travel_speed_m_s=0.4)
    with pytest.raises(UserError, match="max speed"):
        make_robot(max_speed_m_s=2.0)


def test_bad_bin_pose_is_refused_at_start_up():
    with pytest.raises(UserError, match="start-up refused before anything was sent: .*'bin'.* above the table"):
        make_robot(bin_position_m=(-0.5, 0.4, -0.1))
    with pytest.raises(UserError, match="'bin'.*reach"):
        make_robot(bin_position_m=(-1.5, 0.4, 0.2))


def test_reach_is_measured_from_the_flange_not_the_fingertip():
    """A fingertip 0.84 m from the base whose flange, 0.175 m above it, is 0.87 m from the shoulder."""
    envelope = SafetyEnvelope(WORKSPACE_LIMITS_M, 0.25, 1.2, tool_offset_m=0.175)
    fingertip = np.array([-0.78, 0.0, 0.30])
    assert np.linalg.norm(fingertip) < 0.85  # the old check, from the fingertip, let it pass
    with pytest.raises(UserError, match="flange .* beyond the UR5's 0.85 m reach"):
        envelope.check_one(Waypoint(tcp_pose(fingertip, 0.0), 0.1, 0.5, "bin", transit=True))
    assert "flange reach" in envelope.check_one(Waypoint(tcp_pose([-0.6, 0.0, 0.2], 0.0), 0.1, 0.5, "bin", transit=True))
    short_tool = SafetyEnvelope(WORKSPACE_LIMITS_M, 0.25, 1.2, tool_offset_m=0.0)
    short_tool.check_one(Waypoint(tcp_pose(fingertip, 0.0), 0.1, 0.5, "bin", transit=True))  # the flange is there


def test_tcp_pose_convention():
    pose = tcp_pose(np.array([-0.5, 0.1, 0.2]), 0.0)
    rotation = Rotation.from_rotvec(pose[3:]).as_matrix()
    np.testing.assert_allclose(rotation, np.diag([1.0, -1.0, -1.0]), atol=1e-12)  # fingers close along base y
    rotated = Rotation.from_rotvec(tcp_pose(np.zeros(3), np.pi / 2)[3:]).as_matrix()
    np.testing.assert_allclose(rotated[:, 1], [1.0, 0.0, 0.0], atol=1e-12)  # tool y (closing axis) along -/+x


def test_reset_scene_asks_the_operator():
    asked = []
    backend, _, _ = make_robot()
    backend.prompt = asked.append
    backend.reset_scene(np.random.default_rng(0))
    assert asked and "Enter" in asked[0]
    with pytest.raises(UserError, match="crowded"):  # --train_scene crowded_goal needs a simulator
        backend.reset_scene(np.random.default_rng(0), cluster_around=0)


# ------------------------------------------------------------------ connections
def test_unreachable_ur_host_fails_fast():
    port = closed_port()
    envelope = SafetyEnvelope(WORKSPACE_LIMITS_M, 0.25, 1.2)
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot reach UR5 at 127.0.0.1") as info:
        RTDEArm("127.0.0.1", envelope, connect_timeout_s=0.5, rtde_port=port)
    assert time.monotonic() - start < 5.0
    assert "\n" not in str(info.value)
    config = UR5Config(host="127.0.0.1", rtde_port=port, connect_timeout_s=0.5)
    with pytest.raises(UserError, match="cannot reach UR5"):
        open_ur5_backend(config, camera=ArrayCamera([(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4)))], INTRINSICS),
                         camera_pose=np.eye(4))
    assert time.monotonic() - start < 5.0


def test_ur_rtde_connection_error_becomes_one_line(monkeypatch):
    """ur-rtde's own failure (RuntimeError at construction) when the probe is skipped."""
    if probe_tcp("127.0.0.1", 30004, 0.2) is None:
        pytest.skip("something listens on 127.0.0.1:30004")
    monkeypatch.setattr("real.arm.probe_tcp", lambda *args: None)
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot reach UR5 at 127.0.0.1: ") as info:
        RTDEArm("127.0.0.1", SafetyEnvelope(WORKSPACE_LIMITS_M, 0.25, 1.2))
    assert time.monotonic() - start < 5.0 and "\n" not in str(info.value)


def test_dry_run_backend_connects_to_nothing(tmp_path):
    pose = calibration.look_at_pose([-1.0, 0.0, 0.6], [-0.5, 0.0, 0.0])
    np.savetxt(tmp_path / calibration.CAMERA_POSE_FILE, pose)
    np.savetxt(tmp_path / calibration.DEPTH_SCALE_FILE, [1.005])
    camera = SyntheticTableCamera(INTRINSICS, pose)
    backend = open_ur5_backend(UR5Config(host="203.0.113.1"), dry_run=True, camera=camera, calibration_dir=tmp_path)
    assert [w.label for w in backend.arm.motions] == ["home"]  # before anything else, and before any image
    assert backend.arm.motions[0].is_joint_move
    assert backend.depth_scale == pytest.approx(1.005)
    np.testing.assert_allclose(backend.camera_pose, pose)
    rob = robot.Robot(backend)
    _, _, _, depth_heightmap = rob.get_heightmaps()
    assert np.nanmax(np.abs(depth_heightmap)) < 0.01  # the empty table is flat at 0 (depth scale ~1)
    backend.close()


def test_realsense_without_camera_is_a_user_error():
    # Here pyrealsense2 lacks libusb (apt-get hint); with libusb but no camera it fails to start.
    with pytest.raises(UserError, match="libusb-1.0-0|RealSense|pyrealsense2"):
        RealSenseCamera(640, 480, warmup_frames=0, timeout_ms=500)
    with pytest.raises(UserError, match="resolution"):
        RealSenseCamera(800, 600)


# ------------------------------------------------------------------ calibration
def true_pose() -> np.ndarray:
    pose = calibration.look_at_pose([-1.0, 0.1, 0.6], [-0.5, 0.0, 0.0])
    pose[:3, :3] = pose[:3, :3] @ Rotation.from_rotvec([0.01, -0.02, 0.015]).as_matrix()
    return pose


def test_solver_recovers_a_known_pose_from_noisy_pairs():
    truth = true_pose()
    points = calibration.calibration_grid(WORKSPACE_LIMITS_M)
    camera_points, base_points = calibration.synthetic_pairs(truth, points, depth_scale=1.01, noise_m=0.001, seed=1)
    result = calibration.solve_camera_pose(camera_points, base_points)
    rotation_deg, translation_m = calibration.pose_error(result.camera_pose, truth)
    assert rotation_deg < 0.5 and translation_m < 0.002
    assert result.depth_scale == pytest.approx(1.01, abs=0.005)
    assert result.rms_m < 0.003


def test_solver_survives_one_outlier():
    truth = true_pose()
    points = calibration.calibration_grid(WORKSPACE_LIMITS_M)
    camera_points, base_points = calibration.synthetic_pairs(truth, points, noise_m=0.0005, seed=2)
    camera_points[5] += [0.05, 0.0, 0.0]  # one wrong detection
    rotation_deg, translation_m = calibration.pose_error(
        calibration.solve_camera_pose(camera_points, base_points).camera_pose, truth)
    assert rotation_deg < 0.5 and translation_m < 0.002


def test_solver_rejects_too_few_or_collinear_points():
    with pytest.raises(UserError, match="at least 4"):
        calibration.solve_camera_pose(np.zeros((3, 3)), np.zeros((3, 3)))
    line = np.stack([np.linspace(-0.6, -0.4, 6), np.zeros(6), np.full(6, 0.1)], axis=1)
    with pytest.raises(UserError, match="collinear"):
        calibration.solve_camera_pose(line, line)


def test_calibrate_cli_dry_run_detects_the_marker_and_writes_loadable_files(tmp_path, capsys):
    assert calibrate.main(["--dry_run", "--output_dir", str(tmp_path), "--grid", "3", "3", "2"]) == 0
    assert "recovered" in capsys.readouterr().out
    pose = calibration.load_camera_pose(tmp_path / calibration.CAMERA_POSE_FILE)
    rotation_deg, translation_m = calibration.pose_error(pose, calibrate.dry_run_truth(0))
    assert rotation_deg < 0.5 and translation_m < 0.002
    assert calibration.load_depth_scale(tmp_path / calibration.DEPTH_SCALE_FILE) == pytest.approx(
        calibrate.DRY_RUN_DEPTH_SCALE, abs=0.005)


def test_aruco_detection_on_a_synthetic_view():
    arm = DryRunArm(start_pose=tcp_pose(np.array([-0.5, 0.0, 0.1]), 0.3))
    pose = calibrate.dry_run_truth(0)
    camera = calibration.SyntheticMarkerCamera(arm, INTRINSICS, pose, 640, 480, marker="aruco", depth_noise_m=0.0)
    color, depth = camera.get_frames()
    pixel = calibration.detect_aruco_center(color)
    point = calibration.pixel_to_camera_point(pixel, depth, INTRINSICS)
    base = point @ pose[:3, :3].T + pose[:3, 3]
    np.testing.assert_allclose(base, [-0.5, 0.0, 0.1], atol=0.002)


def test_table_plane_check_flags_a_wrong_pose():
    pose = true_pose()
    _, depth = SyntheticTableCamera(INTRINSICS, pose).get_frames()
    height_m, tilt_deg, _ = calibration.table_plane_check(depth, INTRINSICS, pose, 1.0, WORKSPACE_LIMITS_M)
    assert abs(height_m) < 0.001 and tilt_deg < 0.1
    tilted = pose.copy()
    tilted[:3, :3] = Rotation.from_rotvec([0.0, 0.03, 0.0]).as_matrix() @ pose[:3, :3]
    _, tilt_deg, _ = calibration.table_plane_check(depth, INTRINSICS, tilted, 1.0, WORKSPACE_LIMITS_M)
    assert tilt_deg > 1.0


@pytest.mark.parametrize("content, message", [
    ("1 0 0 0\n0 1 0 0\n0 0 1 0\n", "4x4"),
    ("1 0 0 0\n0 1 0 0\n0 0 1 nan\n0 0 0 1\n", "NaN"),
    ("1.1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "orthonormal"),
    ("1 0 0 0\n0 1 0 0\n0 0 -1 0\n0 0 0 1\n", "orthonormal"),  # a reflection
    ("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n", "last row"),
    ("1 0 0 0\n0 1 zero 0\n0 0 1 0\n0 0 0 1\n", "cannot read"),
])
def test_bad_calibration_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "camera_pose.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        calibration.load_camera_pose(path)
    assert "\n" not in str(info.value)


def test_missing_and_bad_depth_scale_files(tmp_path):
    with pytest.raises(UserError, match="calibrate"):
        calibration.load_camera_pose(tmp_path / "nothing.txt")
    (tmp_path / "scale.txt").write_text("3.0\n")
    with pytest.raises(UserError, match="depth scale"):
        calibration.load_depth_scale(tmp_path / "scale.txt")
    (tmp_path / "scale.txt").write_text("0.998\n")
    assert calibration.load_depth_scale(tmp_path / "scale.txt") == pytest.approx(0.998)
    good = np.eye(4)
    np.savetxt(tmp_path / "pose.txt", good)
    np.testing.assert_array_equal(calibration.load_camera_pose(tmp_path / "pose.txt"), good)


# ------------------------------------------------------------------ segmentation, cameras
def palette_u8(index: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in segmentation.PALETTE_RGB_U8[index])


def test_colour_segmentation_finds_a_coloured_square():
    rows, cols = utils.heightmap_shape()
    color = np.full((rows, cols, 3), 110, np.uint8)
    depth = np.zeros((rows, cols), np.float32)
    color[50:70, 100:120] = palette_u8(6)  # red block
    depth[50:70, 100:120] = 0.05
    color[150:180, 30:50] = palette_u8(0)  # blue block
    depth[150:180, 30:50] = 0.025
    color[10:30, 10:30] = palette_u8(4)  # a yellow sticker on the table: no height, not an object
    masks = segmentation.ColorSegmenter().masks(color, depth)
    assert set(masks) == {0, 6}
    red = masks[6] > 0
    assert red[50:70, 100:120].all()
    assert red.sum() == pytest.approx(24 * 24, rel=0.15)  # 20 x 20 dilated by 2 px
    assert masks[6].dtype == np.uint8 and set(np.unique(masks[6])) == {0, 255}


def test_segmentation_end_to_end_through_the_heightmap():
    pose = calibration.look_at_pose([-0.5, 0.0, 0.75], [-0.5, 0.0, 0.0], up=np.array([1.0, 0.0, 0.0]))
    box = Box((-0.45, 0.05, 0.025), (0.05, 0.05, 0.05), palette_u8(1))
    camera = SyntheticTableCamera(INTRINSICS, pose, boxes=[box])
    color, depth = camera.get_frames()
    color_hm, depth_hm = utils.get_heightmap(color, depth, INTRINSICS, pose)
    masks = segmentation.ColorSegmenter().masks(color_hm, depth_hm)
    assert list(masks) == [1]
    rows, cols = np.nonzero(masks[1])
    row, col = utils.base_xy_to_pixel(-0.45, 0.05)
    assert abs(rows.mean() - row) < 2 and abs(cols.mean() - col) < 2


def test_colour_thresholds_file(tmp_path):
    (tmp_path / "t.json").write_text('{"red": {"hsv": [2, 200, 200], "tol": [5, 40, 60]}}')
    windows = segmentation.load_windows(tmp_path / "t.json")
    assert windows[6].hsv == (2, 200, 200) and windows[0].name == "blue"
    (tmp_path / "bad.json").write_text('{"mauve": {"hsv": [1, 2, 3]}}')
    with pytest.raises(UserError, match="unknown colour"):
        segmentation.load_windows(tmp_path / "bad.json")


def test_mask_file_segmenter(tmp_path):
    shape = utils.heightmap_shape()
    binary = np.zeros(shape, np.uint8)
    binary[10:20, 10:20] = 255
    cv2.imwrite(str(tmp_path / "goal.png"), binary)
    masks = segmentation.MaskFileSegmenter(tmp_path / "goal.png", object_index=4).masks(None, None)
    assert list(masks) == [4] and masks[4].sum() == 100 * 255
    labels = np.zeros(shape, np.uint8)
    labels[0:5, 0:5], labels[50:60, 50:60] = 1, 3
    np.save(tmp_path / "labels.npy", labels)
    assert set(segmentation.MaskFileSegmenter(tmp_path / "labels.npy").masks(None, None)) == {0, 2}
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(UserError, match="heightmap is 224x224"):
        segmentation.MaskFileSegmenter(tmp_path / "small.png")


def test_file_camera_replays_saved_frames(tmp_path):
    color = np.zeros((48, 64, 3), np.uint8)
    color[..., 0] = 200  # red in RGB
    raw_depth = np.full((48, 64), 7000, np.uint16)  # 0.7 m in 1e-4 m units (SPEC section 7)
    raw_depth[0, 0] = 0
    cv2.imwrite(str(tmp_path / "000000.0.color.png"), cv2.cvtColor(color, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "000000.0.depth.png"), raw_depth)
    intrinsics = nominal_intrinsics(64, 48)
    np.savetxt(tmp_path / "intrinsics.txt", intrinsics)
    camera = FileCamera(tmp_path, tmp_path / "intrinsics.txt", loop=False)
    rgb, depth = camera.get_frames()
    assert rgb[0, 0].tolist() == [200, 0, 0]
    assert np.isnan(depth[0, 0]) and depth[1, 1] == pytest.approx(0.7)
    np.testing.assert_allclose(camera.intrinsics, intrinsics)
    with pytest.raises(UserError, match="replayed all"):
        camera.get_frames()
    with pytest.raises(UserError, match="no matching"):
        FileCamera(tmp_path / "empty", INTRINSICS)


def test_replay_reads_the_sessions_own_intrinsics(tmp_path):
    """Frames recorded at 1280x720 are replayed with the session's intrinsics, never 640x480 ones."""
    session = tmp_path / "session"
    (session / "data" / "color-images").mkdir(parents=True)
    (session / "data" / "depth-images").mkdir(parents=True)
    (session / "info").mkdir()
    cv2.imwrite(str(session / "data" / "color-images" / "000000.0.color.png"), np.zeros((720, 1280, 3), np.uint8))
    cv2.imwrite(str(session / "data" / "depth-images" / "000000.0.depth.png"), np.full((720, 1280), 7000, np.uint16))
    recorded = nominal_intrinsics(1280, 720)
    np.savetxt(session / "info" / "camera-intrinsics.txt", recorded)
    for folder in (session, session / "data"):  # the session folder or its data/ folder
        camera = FileCamera(folder)
        np.testing.assert_allclose(camera.intrinsics, recorded)
        assert camera.get_frames()[1].shape == (720, 1280)
    with pytest.raises(UserError, match=r"do not belong to the 1280x720 frame"):
        FileCamera(session / "data", INTRINSICS).get_frames()  # 640x480 intrinsics on 1280x720 frames
    (session / "info" / "camera-intrinsics.txt").unlink()
    with pytest.raises(UserError, match="no camera-intrinsics.txt"):
        FileCamera(session / "data")
