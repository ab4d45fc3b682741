"""Geometry and image rules of SPEC sections 2, 3, 5 and 6, on small synthetic maps."""
import numpy as np
import pytest

import robot
import utils
from utils import WORKSPACE_LIMITS_M


def test_heightmap_is_224_square_and_pixels_map_to_metres():
    assert utils.heightmap_shape() == (224, 224)
    x, y = utils.pixel_to_base_xy(0, 0)
    assert (x, y) == pytest.approx((-0.724, -0.224))
    x, y = utils.pixel_to_base_xy(row=10, col=100)
    assert x == pytest.approx(-0.724 + 100 * 0.002) and y == pytest.approx(-0.224 + 10 * 0.002)
    row, col = utils.base_xy_to_pixel(x + 0.001, y + 0.001)  # inside the same cell
    assert (int(row), int(col)) == (10, 100)


def _box_heightmap(rows, cols, height_m):
    depth = np.zeros((224, 224), dtype=np.float32)
    depth[rows[0]:rows[1], cols[0]:cols[1]] = height_m
    return depth


def _mask(rows, cols):
    mask = np.zeros((224, 224), dtype=np.uint8)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = 255
    return mask


def test_occupancy_ratio_counts_the_ring_around_the_goal():
    goal = _mask((100, 120), (100, 120))
    depth = _box_heightmap((100, 120), (100, 120), 0.05)
    assert utils.occupancy_ratio(goal, depth) == 0.0
    # A neighbour covering the whole left side of the ring (10 px wide).
    depth[90:130, 88:100] = 0.05
    ratio = utils.occupancy_ratio(goal, depth)
    assert 0.15 < ratio < 0.35
    # Too tall (> 0.3 m) is not an object: it is noise.
    depth[90:130, 88:100] = 0.5
    assert utils.occupancy_ratio(goal, depth) == 0.0


def test_goal_change_needs_more_than_50_dropped_pixels_near_the_goal():
    goal = _mask((100, 120), (100, 120))
    before = _box_heightmap((100, 120), (100, 130), 0.05)
    after = before.copy()
    # The region is the goal's hull dilated by 5 px: columns 120..124 beside this goal.
    after[100:110, 120:130] = 0.0  # 10 rows x 5 columns = 50 pixels dropped: not yet a change
    assert utils.goal_change_detected(before, after, goal) == (False, 50)
    after[100:111, 120:130] = 0.0  # 55 pixels
    assert utils.goal_change_detected(before, after, goal)[0]
    # Far from the goal nothing counts.
    far_after = before.copy()
    far_before = before.copy()
    far_before[0:50, 0:50] = 0.05
    assert not utils.goal_change_detected(far_before, far_after, goal)[0]
    # Heights that rose are not drops.
    assert not utils.goal_change_detected(after, before, goal)[0]


def test_agnostic_change_threshold_300_or_grasp():
    before = np.zeros((224, 224), dtype=np.float32)
    after = before.copy()
    after[0:10, 0:30] = 0.05  # exactly 300
    assert not utils.agnostic_change_detected(before, after)[0]
    after[0:10, 0:31] = 0.05
    assert utils.agnostic_change_detected(before, after)[0]
    assert utils.agnostic_change_detected(before, before, grasp_succeeded=True)[0]


def test_grasp_heuristic_closes_across_the_narrow_side_of_a_bar():
    # A bar long along x (cols), 16 px (3.2 cm) wide along y (rows): close along y = rotation 4 or 12.
    depth = _box_heightmap((100, 116), (60, 160), 0.04)
    rotation, row, col = utils.grasp_heuristic(depth)
    assert rotation in (4, 12)
    assert 100 <= row < 116 and 60 <= col < 160


def test_push_heuristic_starts_free_and_pushes_into_an_object():
    depth = _box_heightmap((100, 124), (100, 124), 0.05)
    rotation, row, col = utils.push_heuristic(depth)
    assert depth[row, col] == 0.0
    theta = rotation * utils.ROTATION_STEP_RAD
    ahead_row = int(round(row + 25 * np.sin(theta)))
    ahead_col = int(round(col + 25 * np.cos(theta)))
    assert depth[ahead_row, ahead_col] > 0.02


def test_push_plan_direction_height_and_clamping():
    depth = np.zeros((224, 224), dtype=np.float32)
    plan = robot.plan_push((0, 112, 112), depth)  # theta 0: along +x
    x, y = utils.pixel_to_base_xy(112, 112)
    assert plan.start_m == pytest.approx([x, y, WORKSPACE_LIMITS_M[2][0] + 0.01])
    assert plan.end_m == pytest.approx([x + 0.13, y, plan.start_m[2]])
    assert plan.yaw_rad == pytest.approx(-np.pi / 2)
    # Rotation 4 (90 deg) pushes along +y; near the edge the end is clipped to the box.
    plan = robot.plan_push((4, 220, 112), depth)
    assert plan.end_m[1] == pytest.approx(WORKSPACE_LIMITS_M[1][1])
    # Starting on an object edge raises the fingers to 2 cm below the local maximum.
    depth[110:115, 110:115] = 0.05
    plan = robot.plan_push((0, 112, 108), depth)
    assert plan.start_m[2] == pytest.approx(WORKSPACE_LIMITS_M[2][0] + 0.03)


def test_grasp_plan_height_and_yaw():
    depth = np.zeros((224, 224), dtype=np.float32)
    depth[100, 100] = 0.10
    plan = robot.plan_grasp((8, 100, 100), depth)
    assert plan.position_m[2] == pytest.approx(WORKSPACE_LIMITS_M[2][0] + 0.06)
    assert plan.yaw_rad == pytest.approx(-np.pi / 2)  # 180 deg is the same jaw as 0 deg
    plan = robot.plan_grasp((4, 50, 50), depth)
    assert plan.position_m[2] == pytest.approx(WORKSPACE_LIMITS_M[2][0] + 0.02)
    assert plan.yaw_rad == pytest.approx(0.0)
    # At yaw 0 the fingers close along +y, i.e. along (cos 90deg, sin 90deg): rotation 4.
    yaw = plan.yaw_rad
    closing = np.array([-np.sin(yaw), np.cos(yaw)])
    assert closing == pytest.approx([np.cos(np.pi / 2), np.sin(np.pi / 2)], abs=1e-9)


def test_synthetic_top_down_camera_heightmap():
    """A pinhole camera 1 m above the workspace centre looking straight down sees a 5 cm box."""
    fx = fy = 618.62
    intrinsics = np.array([[fx, 0, 320], [0, fy, 240], [0, 0, 1.0]])
    center = WORKSPACE_LIMITS_M[:2].mean(axis=1)
    # Camera +z points down (-z base), x right (+x base), y down (-y base).
    pose = np.eye(4)
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = [center[0], center[1], 1.0]
    u, v = np.meshgrid(np.arange(640), np.arange(480))
    x = center[0] + (u - 320) / fx
    y = center[1] - (v - 240) / fy  # at depth 1 m
    depth = np.ones((480, 640), dtype=np.float32)
    # The box's top face at z = 0.05: depth 0.95. Box spans x in [-0.52, -0.48], y in [0, 0.04].
    on_box = (x > -0.52 * 1.0) & (x < -0.48) & (y > 0.0) & (y < 0.04)
    depth[on_box] = 0.95
    color = np.zeros((480, 640, 3), dtype=np.uint8)
    color[on_box] = (255, 0, 0)
    color_hm, depth_hm = utils.get_heightmap(color, depth, intrinsics, pose)
    row, col = utils.base_xy_to_pixel(-0.50, 0.02)
    assert depth_hm[row, col] == pytest.approx(0.05, abs=0.003)
    assert tuple(color_hm[row, col]) == (255, 0, 0)
    table = utils.valid_depth(depth_hm)[5, 5]
    assert table == pytest.approx(0.0, abs=0.003)
    box_pixels = np.argwhere(utils.valid_depth(depth_hm) > 0.03)
    # The box's footprint is 20 x 20 px (4 cm) give or take the perspective of a 1 m camera.
    assert 15 <= np.ptp(box_pixels[:, 0]) + 1 <= 25 and 15 <= np.ptp(box_pixels[:, 1]) + 1 <= 25


def test_push_end_inside_keeps_pushes_away_from_the_near_border():
    """A push ends push_length_px along (cos theta, sin theta) = (+col, +row); pushes whose end
    would lie outside the margin are not allowed (the robot would stop the finger at the border
    and leave the object ahead of it outside)."""
    inside = utils.push_end_inside(224, 65, 15)
    assert inside.shape == (16, 224, 224) and not inside.flags.writeable
    row, col = 112, 20                        # near the left border (col = x)
    assert inside[0, row, col]                # rot 0 pushes to +x, away from it
    assert not inside[8, row, col]            # rot 8 pushes to -x, out of the workspace
    assert inside[4, 112, 112] and not inside[4, 160, 112]    # rot 4 to +row: 160 + 65 > 208
    assert inside[12, 112, 112] and not inside[12, 60, 112]   # rot 12 to -row: 60 - 65 < 15
    everything = utils.push_end_inside(224, 65, -200)        # a negative margin allows all
    assert everything.all()


def test_best_pixel_takes_a_mask_per_rotation():
    from rules import best_pixel

    q = np.zeros((16, 8, 8), np.float32)
    q[3, 2, 2], q[5, 4, 4] = 2.0, 1.0
    allowed = np.ones((16, 8, 8), bool)
    assert best_pixel(q, allowed)[0] == (3, 2, 2)
    allowed[3] = False
    assert best_pixel(q, allowed)[0] == (5, 4, 4)
    assert best_pixel(q, np.ones((8, 8), bool))[0] == (3, 2, 2)
