"""The embedded MuJoCo backend through robot.Robot (SPEC sections 2, 6, 8, 11): real physics, small scenes."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

import utils
from robot import Robot
from simulation.objects import BLOCK_NAMES, BLOCK_SIZES_M, load_object_shape
from simulation.test_cases import SceneObject, euler_to_matrix, matrix_to_euler
from utils import ROTATION_STEP_RAD, WORKSPACE_LIMITS_M, UserError

RED = (1.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def sim():
    from simulation.mujoco_sim import MujocoSim

    backend = MujocoSim(num_obj=10, rng=np.random.default_rng(0))
    yield backend
    backend.close()


def lone_block(name: str, yaw_rad: float, xy=(-0.5, 0.0)) -> SceneObject:
    """Block `name` resting on its largest face (the disc flat), turned by yaw_rad about the vertical."""
    sx, sy, sz = BLOCK_SIZES_M[name]
    rest, half_height = np.eye(3), sz / 2
    if name == "2.obj":  # the disc's axis is x: lay it flat
        rest, half_height = euler_to_matrix((0.0, np.pi / 2, 0.0)), sx / 2
    euler = matrix_to_euler(euler_to_matrix((0.0, 0.0, yaw_rad)) @ rest)
    return SceneObject(name, RED, (xy[0], xy[1], half_height + 0.002), tuple(euler))


def narrow_side_grasp(mask: np.ndarray) -> tuple[int, int, int]:
    """Heuristic action: the mask's centroid, closing along its narrow principal axis."""
    rows, cols = np.nonzero(mask)
    row, col = rows.mean(), cols.mean()
    _, vectors = np.linalg.eigh(np.cov(np.stack([cols - col, rows - row])))
    narrow = vectors[:, 0]  # (x, y): columns run along base x, rows along base y
    theta = np.arctan2(narrow[1], narrow[0]) % np.pi
    return int(round(theta / ROTATION_STEP_RAD)) % 16, int(round(row)), int(round(col))


def heightmaps(robot: Robot):
    _, _, color_hm, depth_hm = robot.get_heightmaps()
    return color_hm, depth_hm, utils.valid_depth(depth_hm)


def test_every_lone_block_is_grasped_at_four_orientations(sim):
    robot = Robot(sim)
    results: dict[str, list[bool]] = {}
    for name in BLOCK_NAMES:
        for yaw_deg in (0, 30, 60, 120):
            sim.load_objects([lone_block(name, np.deg2rad(yaw_deg))])
            color_hm, depth_hm, valid = heightmaps(robot)
            action = narrow_side_grasp(sim.object_masks(color_hm, depth_hm)[0])
            result = robot.grasp(action, valid)
            results.setdefault(name, []).append(result.success and result.object_index == 0)
            if result.success:
                assert sim.removed[0] and np.isnan(sim.object_poses()[0]).all()
                assert sim.num_objects_in_workspace() == 0 and sim.object_masks(color_hm, depth_hm) == {}
    successes = sum(sum(r) for r in results.values())
    assert successes >= 0.9 * 32, results
    assert all(any(r) for r in results.values()), results


def test_grasp_reports_the_index_of_the_grasped_object(sim):
    robot = Robot(sim)
    sim.load_objects([lone_block("6.obj", 0.0, (-0.6, -0.1)), lone_block("4.obj", 0.3, (-0.4, 0.1))])
    color_hm, depth_hm, valid = heightmaps(robot)
    result = robot.grasp(narrow_side_grasp(sim.object_masks(color_hm, depth_hm)[1]), valid)
    assert result.success and result.object_index == 1
    assert sim.removed.tolist() == [False, True] and sim.num_objects_in_workspace() == 1
    # An empty spot: the fingers close fully, nothing is reported.
    row, col = utils.base_xy_to_pixel(-0.4, -0.15)
    result = robot.grasp((0, int(row), int(col)), valid)
    assert not result.success and result.object_index == -1


@pytest.mark.parametrize("rotation", [0, 5, 10])
def test_push_moves_a_lone_block_along_its_direction(sim, rotation):
    robot = Robot(sim)
    sim.load_objects([lone_block("4.obj", 0.0)])
    theta = rotation * ROTATION_STEP_RAD
    direction = np.array([np.cos(theta), np.sin(theta)])
    start = np.array([-0.5, 0.0]) - 0.06 * direction  # 6 cm behind the block's centre
    row, col = utils.base_xy_to_pixel(start[0], start[1])
    _, _, valid = heightmaps(robot)
    robot.push((rotation, int(row), int(col)), valid)
    moved = sim.object_poses()[0, :2] - np.array([-0.5, 0.0])
    assert moved @ direction >= 0.05
    assert abs(moved[0] * direction[1] - moved[1] * direction[0]) < 0.02  # and not much sideways
    assert sim.is_stable()


def test_gripper_never_leaves_the_workspace_during_actions(sim):
    """Every physics step of an action has the fingertips inside the workspace box, or parked."""
    from simulation import scene

    robot = Robot(sim)
    sim.reset_scene(np.random.default_rng(1))
    positions = []
    step = sim._step

    def recording_step(steps: int) -> None:
        step(steps)
        positions.append(sim._gripper_position())

    sim._step = recording_step
    try:
        rng = np.random.default_rng(2)
        for _ in range(3):
            _, _, valid = heightmaps(robot)
            robot.push((int(rng.integers(16)), int(rng.integers(224)), int(rng.integers(224))), valid)
            robot.grasp((int(rng.integers(16)), int(rng.integers(224)), int(rng.integers(224))), valid)
    finally:
        del sim._step
    positions = np.array(positions)
    parked = np.linalg.norm(positions - np.array(scene.PARK_POSITION_M), axis=1) < 1e-3
    tolerance_m = 0.002  # servo overshoot
    inside = np.all((positions >= WORKSPACE_LIMITS_M[:, 0] - tolerance_m)
                    & (positions <= WORKSPACE_LIMITS_M[:, 1] + tolerance_m), axis=1)
    assert (~parked).sum() > 100 and np.all(inside | parked)


def test_random_pushes_into_a_pile_fly_nothing_off(sim):
    robot = Robot(sim)
    rng = np.random.default_rng(3)
    sim.reset_scene(rng)
    assert sim.num_objects_in_workspace() >= 8
    for _ in range(20):
        _, depth_hm, valid = heightmaps(robot)
        occupied = np.argwhere(valid > 0.01)
        if len(occupied) == 0:
            break
        row, col = occupied[rng.integers(len(occupied))]
        rotation = int(rng.integers(16))
        theta = rotation * ROTATION_STEP_RAD
        # Start 5 cm before an occupied pixel so the push runs into the pile.
        start_row = int(np.clip(row - 25 * np.sin(theta), 0, 223))
        start_col = int(np.clip(col - 25 * np.cos(theta), 0, 223))
        robot.push((rotation, start_row, start_col), valid)
        assert sim.flown_off_objects() == []
        poses = sim.object_poses()[:, :3]
        assert np.all(np.isfinite(poses)) and np.all(poses[:, 2] > -0.1)  # nothing fell through the table
    assert sim.is_stable()
    assert sim.mujoco_warnings() == {}


def test_scene_resets_steps_and_raises_no_mujoco_warning(sim):
    sim.reset_scene(np.random.default_rng(4))
    assert len(sim.object_poses()) == 10 and not sim.removed.any()
    assert sim.is_stable() and sim.flown_off_objects() == []
    sim._step_for(1.0)
    assert sim.mujoco_warnings() == {}
    assert sum(int(w.number) for w in sim.data.warning) == 0
    # All objects were dropped over the centre; nearly all stay inside the workspace.
    assert sim.num_objects_in_workspace() >= 8
    assert sim.num_objects_in_workspace() + len(sim.objects_outside_workspace()) == 10


def test_reset_is_reproducible_from_the_generator(sim):
    sim.reset_scene(np.random.default_rng(5))
    first = sim.object_poses()
    sim.reset_scene(np.random.default_rng(5))
    np.testing.assert_allclose(sim.object_poses(), first, atol=1e-9)


def test_object_masks_match_the_heightmap_footprint_of_a_lone_object(sim):
    import cv2

    robot = Robot(sim)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for name in BLOCK_NAMES:
        sim.load_objects([SceneObject(name, RED, (-0.45, 0.1, 0.1), (0.3, 0.2, 0.5))])  # dropped, settled
        color_hm, depth_hm, valid = heightmaps(robot)
        masks = sim.object_masks(color_hm, depth_hm)
        assert list(masks) == [0] and masks[0].dtype == np.uint8 and set(np.unique(masks[0])) == {0, 255}
        mask, seen = masks[0] > 0, valid > 0.005
        assert (seen & ~mask).sum() <= 0.01 * seen.sum(), name  # all it shows lies inside the mask
        # The mask has a 2 px border: against the footprint grown by the same 2 px it is a near match.
        grown = cv2.dilate(seen.astype(np.uint8), kernel) > 0
        assert (mask & grown).sum() / (mask | grown).sum() > 0.8, name
        if name == "4.obj":
            assert (mask & seen).sum() / (mask | seen).sum() > 0.7


def test_objects_outside_the_workspace_have_no_mask_and_are_reported(sim):
    sim.load_objects([lone_block("4.obj", 0.0, (-0.5, 0.0)), lone_block("7.obj", 0.0, (-0.9, 0.3))])
    assert list(sim.object_masks(None, None)) == [0]
    assert sim.objects_outside_workspace() == [1] and sim.num_objects_in_workspace() == 1
    assert sim.is_stable()  # 0.5 m is far: an object just off the workspace has not flown off


def test_load_objects_rejects_a_missing_mesh(sim):
    with pytest.raises(UserError, match="nope.obj"):
        sim.load_objects([SceneObject("nope.obj", RED, (-0.5, 0.0, 0.03), (0.0, 0.0, 0.0))])


def test_non_convex_mesh_folder_is_decomposed_and_simulated(tmp_path):
    """--obj_mesh_dir with a novel non-convex object: CoACD parts, cached, drop and grasp it."""
    import trimesh

    from simulation.mujoco_sim import MujocoSim

    # An L-shaped prism, 6 x 6 cm, 3 cm tall, legs 2 cm wide.
    outline = np.array([[0, 0], [0.06, 0], [0.06, 0.02], [0.02, 0.02], [0.02, 0.06], [0, 0.06]]) - 0.03
    triangles = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 5]])
    mesh = trimesh.creation.extrude_triangulation(outline, triangles, 0.03)
    mesh.apply_translation([0, 0, -0.015])
    assert mesh.is_watertight
    mesh.export(tmp_path / "ell.obj")
    shape = load_object_shape(tmp_path / "ell.obj")
    assert len(shape.convex_parts) >= 2
    assert load_object_shape(tmp_path / "ell.obj") is shape  # in-memory cache; the disk cache is keyed by content
    backend = MujocoSim(obj_mesh_dir=tmp_path, num_obj=3, rng=np.random.default_rng(6))
    try:
        assert backend.is_stable() and backend.mujoco_warnings() == {}
        robot = Robot(backend)
        color_hm, depth_hm, valid = heightmaps(robot)
        masks = backend.object_masks(color_hm, depth_hm)
        assert len(masks) >= 2
        seen = valid > 0.005
        for index, mask in masks.items():  # each footprint is mostly where the camera sees an object
            assert (seen & (mask > 0)).sum() > 0.5 * (mask > 0).sum(), index
    finally:
        backend.close()


def test_gl_failure_is_a_user_error_naming_the_packages(monkeypatch):
    import mujoco.gl_context

    from simulation import mujoco_sim

    def broken(*args, **kwargs):
        raise RuntimeError("eglInitialize failed\nmore detail")

    monkeypatch.setattr(mujoco.gl_context, "GLContext", broken)
    with pytest.raises(UserError) as error:
        mujoco_sim._OffscreenCamera(640, 480)
    message = str(error.value)
    assert "\n" not in message and "libegl1 libgl1-mesa-dri libegl-mesa0" in message


def test_the_simulator_draws_only_from_the_callers_generator(monkeypatch):
    """No generator of its own: without one the table starts empty; a scene comes from the caller's draws."""
    from simulation.mujoco_sim import MujocoSim

    def no_own_seed(*args, **kwargs):
        raise AssertionError("a simulator seeded a generator of its own")

    given = MujocoSim(num_obj=3, rng=np.random.default_rng(7))
    monkeypatch.setattr(np.random, "default_rng", no_own_seed)
    empty = MujocoSim(num_obj=3)
    try:
        assert len(empty.removed) == 0 and empty.num_objects_in_workspace() == 0 and empty.object_masks() == {}
        assert empty.camera_pose.shape == (4, 4)  # the camera is there before any scene
        monkeypatch.undo()
        rng = np.random.default_rng(7)
        monkeypatch.setattr(np.random, "default_rng", no_own_seed)
        empty.reset_scene(rng)
        np.testing.assert_array_equal(empty.object_poses(), given.object_poses())  # the same draws, bit for bit
    finally:
        empty.close()
        given.close()
