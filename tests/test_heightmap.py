"""Heightmaps (SPEC section 3): utils.get_heightmap on a synthetic pinhole camera, and on MuJoCo renders."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

import utils
from utils import HEIGHTMAP_RESOLUTION_M, WORKSPACE_LIMITS_M

# ---------------------------------------------------------------------------- pure numpy


def _look_down_pose(x: float, y: float, height: float) -> np.ndarray:
    """Camera-to-base pose of a camera at (x, y, height) looking down (+z cam = -z base), x cam = -y base."""
    pose = np.eye(4)
    pose[:3, :3] = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    pose[:3, 3] = (x, y, height)
    return pose


def _render_plate(intrinsics: np.ndarray, pose: np.ndarray, shape: tuple[int, int],
                  plate_xy: tuple[tuple[float, float], tuple[float, float]], plate_height_m: float):
    """Ray-cast a synthetic scene: a table at z = 0 and a horizontal plate floating at plate_height_m.

    Returns colour (H, W, 3) uint8 (plate red, table grey) and depth (H, W) metres along camera z.
    """
    height, width = shape
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays_cam = np.stack([(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1],
                         np.ones_like(u, dtype=float)], axis=-1)
    rays = rays_cam @ pose[:3, :3].T
    origin = pose[:3, 3]
    t_plate = (plate_height_m - origin[2]) / rays[..., 2]  # depth along camera z = t (ray z_cam = 1)
    hit = origin + t_plate[..., None] * rays
    (x0, x1), (y0, y1) = plate_xy
    on_plate = (hit[..., 0] >= x0) & (hit[..., 0] <= x1) & (hit[..., 1] >= y0) & (hit[..., 1] <= y1)
    t_table = (0.0 - origin[2]) / rays[..., 2]
    depth = np.where(on_plate, t_plate, t_table).astype(np.float32)
    color = np.where(on_plate[..., None], np.array([200, 0, 0], np.uint8), np.array([90, 90, 90], np.uint8))
    return color.astype(np.uint8), depth


def test_get_heightmap_synthetic_pinhole_camera():
    intrinsics = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    pose = _look_down_pose(-0.5, 0.0, 0.8)
    plate = ((-0.55, -0.45), (0.02, 0.08))  # x range, y range, metres
    color, depth = _render_plate(intrinsics, pose, (480, 640), plate, 0.04)
    depth[0, 0] = np.nan  # invalid pixels are skipped, not crashes
    depth[0, 1] = 0.0
    color_hm, depth_hm = utils.get_heightmap(color, depth, intrinsics, pose)
    assert depth_hm.shape == (224, 224) and color_hm.shape == (224, 224, 3)
    row0, col0 = utils.base_xy_to_pixel(plate[0][0], plate[1][0])
    row1, col1 = utils.base_xy_to_pixel(plate[0][1], plate[1][1])
    inner = (slice(int(row0) + 1, int(row1) - 1), slice(int(col0) + 1, int(col1) - 1))
    # Heights are relative to the workspace floor (z - zmin) and the highest point of a cell wins.
    np.testing.assert_allclose(depth_hm[inner], 0.04 - WORKSPACE_LIMITS_M[2][0], atol=1e-4)
    assert (color_hm[inner] == (200, 0, 0)).all()
    table = np.ones(depth_hm.shape, bool)
    table[int(row0) - 12:int(row1) + 12, int(col0) - 12:int(col1) + 12] = False  # plate plus its shadow
    table &= ~np.isnan(depth_hm)
    assert table.sum() > 0.9 * depth_hm.size
    np.testing.assert_allclose(depth_hm[table], -WORKSPACE_LIMITS_M[2][0], atol=1e-5)
    assert (color_hm[table] == 90).all()
    # The table under the plate is hidden from the camera: no point there, NaN in the raw map.
    assert np.isnan(depth_hm).any()
    assert not np.isnan(utils.valid_depth(depth_hm)).any()


def test_get_heightmap_drops_points_outside_the_workspace():
    intrinsics = np.array([[300.0, 0.0, 320.0], [0.0, 300.0, 240.0], [0.0, 0.0, 1.0]])
    pose = _look_down_pose(-0.5, 0.0, 1.5)  # sees far more than the workspace
    color, depth = _render_plate(intrinsics, pose, (480, 640), ((-0.9, -0.8), (-0.4, -0.3)), 0.05)
    _, depth_hm = utils.get_heightmap(color, depth, intrinsics, pose)
    assert np.nanmax(depth_hm) < 0.001  # the plate lies outside the workspace: not in the map


# ---------------------------------------------------------------------------- MuJoCo


@pytest.fixture(scope="module")
def sim():
    from simulation.mujoco_sim import MujocoSim
    from simulation.test_cases import SceneObject

    backend = MujocoSim(objects=[SceneObject("4.obj", (1.0, 0.0, 0.0), (-0.45, 0.07, 0.025), (0.0, 0.0, 0.0))])
    yield backend
    backend.close()


def test_cube_heightmap_has_the_cube_at_the_right_pixels_and_height(sim):
    from robot import Robot
    from simulation.test_cases import SceneObject

    sim.load_objects([SceneObject("4.obj", (1.0, 0.0, 0.0), (-0.45, 0.07, 0.025), (0.0, 0.0, 0.0))])
    x, y, z = sim.object_poses()[0, :3]
    assert abs(x + 0.45) < 1e-3 and abs(y - 0.07) < 1e-3  # settling did not move it
    _, depth_image, _, depth_hm = Robot(sim).get_heightmaps()
    assert depth_image.shape == (480, 640)
    top_m = z + 0.025 - WORKSPACE_LIMITS_M[2][0]
    cube = np.argwhere(np.nan_to_num(depth_hm) > 0.025)
    expected_rows = [(y - 0.025 - WORKSPACE_LIMITS_M[1][0]) / HEIGHTMAP_RESOLUTION_M,
                     (y + 0.025 - WORKSPACE_LIMITS_M[1][0]) / HEIGHTMAP_RESOLUTION_M - 1]
    expected_cols = [(x - 0.025 - WORKSPACE_LIMITS_M[0][0]) / HEIGHTMAP_RESOLUTION_M,
                     (x + 0.025 - WORKSPACE_LIMITS_M[0][0]) / HEIGHTMAP_RESOLUTION_M - 1]
    np.testing.assert_allclose([cube[:, 0].min(), cube[:, 0].max()], expected_rows, atol=2)
    np.testing.assert_allclose([cube[:, 1].min(), cube[:, 1].max()], expected_cols, atol=2)
    row, col = utils.base_xy_to_pixel(x, y)
    np.testing.assert_allclose(depth_hm[row - 8:row + 8, col - 8:col + 8], top_m, atol=0.003)
    # Every valid cell away from the cube is table: 0 m (give or take the 0.1 mm of zmin).
    table = ~np.isnan(depth_hm)
    table[int(row) - 20:int(row) + 20, int(col) - 20:int(col) + 20] = False
    assert table.sum() > 0.95 * depth_hm.size - 40 * 40
    assert np.abs(depth_hm[table]).max() < 0.001


def test_rendered_depth_matches_ray_casting(sim):
    """Each pixel's depth is what a ray cast through it with the reported intrinsics and pose hits."""
    import mujoco

    from simulation.test_cases import SceneObject

    sim.load_objects([SceneObject("8.obj", (0.0, 1.0, 0.0), (-0.43, 0.11, 0.025), (0.0, 0.0, 0.3)),
                      SceneObject("6.obj", (0.0, 0.0, 1.0), (-0.6, -0.1, 0.05), (0.0, 0.0, 0.5))])
    _, depth = sim.get_camera_data()
    intrinsics, pose = sim.intrinsics, sim.camera_pose
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3)) and np.linalg.det(pose[:3, :3]) > 0
    assert pose[2, 2] < -0.99  # looks down
    errors = []
    geom = np.zeros(1, dtype=np.int32)
    for v in range(100, 440, 4):
        for u in range(100, 540, 4):
            ray = np.array([(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1], 1.0])
            direction = pose[:3, :3] @ ray
            distance = mujoco.mj_ray(sim.model, sim.data, pose[:3, 3], direction / np.linalg.norm(direction),
                                     None, 1, -1, geom)
            errors.append(abs(distance / np.linalg.norm(ray) - depth[v, u]))
    errors = np.array(errors)
    assert np.median(errors) < 1e-4
    # Only pixels straddling an object edge may disagree (a half-pixel shift would double them).
    assert np.mean(errors > 0.005) < 0.003


# ---------------------------------------------------------------------------- the fast path


def _tilted_pose(x: float, y: float, height: float, tilt_rad: float, yaw_rad: float) -> np.ndarray:
    """A look-down camera turned about base z by yaw and tilted about its own x axis."""
    pose = _look_down_pose(x, y, height)
    c, s = np.cos(tilt_rad), np.sin(tilt_rad)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    yaw = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    pose[:3, :3] = yaw @ pose[:3, :3] @ tilt
    return pose


def _assert_same_heightmaps(color, depth, intrinsics, pose, workspace=WORKSPACE_LIMITS_M,
                            resolution=HEIGHTMAP_RESOLUTION_M):
    fast_color, fast_depth = utils.get_heightmap(color, depth, intrinsics, pose, workspace, resolution)
    ref_color, ref_depth = utils.get_heightmap_reference(color, depth, intrinsics, pose, workspace, resolution)
    assert fast_depth.dtype == ref_depth.dtype and fast_color.dtype == ref_color.dtype
    np.testing.assert_array_equal(np.isnan(fast_depth), np.isnan(ref_depth))
    np.testing.assert_array_equal(fast_depth, ref_depth)  # bit for bit (NaN where NaN)
    np.testing.assert_array_equal(fast_color, ref_color)
    assert np.isfinite(ref_depth).sum() > 1000  # the scene is in view: the comparison means something


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference, on inf depth
@pytest.mark.parametrize("tilt_deg, yaw_deg", [(0.0, 0.0), (0.0, 90.0), (12.0, 0.0), (20.0, 35.0), (-8.0, 170.0)])
def test_fast_heightmap_is_the_reference_for_any_camera(tilt_deg, yaw_deg):
    """Same maps as the plain definition, also where pixels project exactly onto cell edges (tilt 0)."""
    rng = np.random.default_rng(int(tilt_deg * 10 + yaw_deg))
    intrinsics = np.array([[618.62, 0.0, 320.0], [0.0, 618.62, 240.0], [0.0, 0.0, 1.0]])
    pose = _tilted_pose(-0.5, 0.0, 0.75, np.radians(tilt_deg), np.radians(yaw_deg))
    color, depth = _render_plate(intrinsics, pose, (480, 640), ((-0.55, -0.45), (0.02, 0.08)), 0.04)
    color = rng.integers(0, 256, color.shape, dtype=np.uint8)  # every pixel its own colour: ties show
    depth[rng.random(depth.shape) < 0.01] = np.nan
    depth[rng.random(depth.shape) < 0.01] = 0.0
    depth[rng.random(depth.shape) < 0.001] = np.inf
    depth[:5] = 0.3  # points above the workspace, and a few out of it to the sides
    _assert_same_heightmaps(color, depth, intrinsics, pose)
    # Quantised depth, as a RealSense reports it: many equal heights in a cell.
    _assert_same_heightmaps(color, np.round(depth * 1000) / 1000, intrinsics, pose)
    noisy = (depth + rng.normal(0.0, 0.003, depth.shape)).astype(np.float32)
    _assert_same_heightmaps(color, noisy, intrinsics, pose)


def test_fast_heightmap_other_workspaces_and_image_sizes():
    """A workspace whose upper bounds are not cell edges, a coarser grid, a 320x240 camera."""
    intrinsics = np.array([[309.31, 0.0, 160.0], [0.0, 309.31, 120.0], [0.0, 0.0, 1.0]])
    pose = _tilted_pose(-0.5, 0.01, 0.7, np.radians(5.0), np.radians(3.0))
    color, depth = _render_plate(intrinsics, pose, (240, 320), ((-0.6, -0.5), (-0.1, 0.0)), 0.06)
    color = np.random.default_rng(3).integers(0, 256, color.shape, dtype=np.uint8)
    workspace = np.array([[-0.7, -0.3013], [-0.2, 0.2007], [-0.0001, 0.05]])
    for resolution in (0.002, 0.0035):
        _assert_same_heightmaps(color, depth, intrinsics, pose, workspace, resolution)
    # One projector per camera, workspace and image size, built once.
    first = utils.heightmap_projector(intrinsics, pose, (240, 320), workspace, 0.002)
    assert utils.heightmap_projector(intrinsics.copy(), pose.copy(), (240, 320), workspace.copy(), 0.002) is first
    assert utils.heightmap_projector(intrinsics, pose, (240, 320), workspace, 0.0035) is not first
    with pytest.raises(ValueError):
        first(color[:100], depth[:100])


def test_fast_heightmap_is_the_reference_on_mujoco_renders(sim):
    from simulation.test_cases import SceneObject

    sim.load_objects([SceneObject("8.obj", (0.0, 1.0, 0.0), (-0.43, 0.11, 0.025), (0.0, 0.0, 0.3)),
                      SceneObject("6.obj", (0.0, 0.0, 1.0), (-0.6, -0.1, 0.05), (0.0, 0.0, 0.5)),
                      SceneObject("4.obj", (1.0, 0.0, 0.0), (-0.5, 0.0, 0.025), (0.0, 0.0, 0.0))])
    color, depth = sim.get_camera_data()
    depth = np.asarray(depth, dtype=np.float32) * sim.depth_scale
    _assert_same_heightmaps(color, depth, sim.intrinsics, sim.camera_pose)
