"""The embedded simulator backend: MuJoCo, headless, CPU-only (SPEC sections 2, 6, 8, 11).

`MujocoSim` executes robot.py's motion plans with a floating parallel-jaw gripper and renders
the RGB-D camera offscreen (EGL). Frames: MuJoCo's world frame is the robot base frame, metres;
the table top is z = 0. Between actions the gripper is parked outside the workspace and the
camera's view; an action teleports it from the park to its approach point above the target
(raised further if that spot is occupied), and from there every motion stays inside the
workspace box. Motions are driven by moving position-servo set-points at fixed speeds, stepping
the physics in chunks without rendering; descents stop on contact (as a force-limited arm
would) and every motion has a time limit, so a blocked gripper gives up instead of stalling.

Object indices are positions in the scene's object list (random spawn order, or the lines of a
test-case file). A grasped object is removed: moved to a storage spot far from the table, made
weightless and contact-free; it keeps its index.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: it picks its GL backend then

from pathlib import Path
from typing import Sequence

import mujoco
import numpy as np

from simulation import scene
from simulation.base import (FINGER_CLOSED_OPENING_M, FINGERS_OPEN_FRACTION, SETTLE_MAX_TIME_S, TRAVEL_SPEED_M_S,
                             SimulatorBackend)
from simulation.objects import load_object_shape
from simulation.test_cases import PresetCase, SceneObject, quat_wxyz_to_euler
from utils import HEIGHTMAP_RESOLUTION_M, WORKSPACE_LIMITS_M, UserError

# --- motion (shared speeds and the primitive sequences are simulation.base's)
CONTROL_PERIOD_STEPS = 10  # set-points move every 20 ms; physics runs in C in between
POSITION_TOLERANCE_M = 0.001  # a motion has arrived when the fingertips are this close
MOTION_EXTRA_TIME_S = 0.4  # time a motion may take beyond distance / speed before it gives up
# Descents are guarded: the last SLOW_ZONE_M above anything within the open gripper's reach is
# taken slowly, and a descent stops once objects push back harder than GUARD_FORCE_N (checked
# every GUARD_PERIOD_STEPS). A 1 kg gripper landing on a 60 g block at full speed drove it into
# the table and made it spin away.
SLOW_ZONE_M = 0.02
CONTACT_SPEED_M_S = 0.05
GRIPPER_REACH_M = 0.07  # fingers open at +-5.5 cm, 2 cm wide
GUARD_FORCE_N = 5.0  # ~8x a block's weight
GUARD_PERIOD_STEPS = 2
FINGER_MOVE_TIME_S = 0.35  # longest a close or open may take (a full close takes ~0.25 s)
FINGER_STOPPED_SPEED_M_S = 0.005
# A grasped object must have risen this much if it touches only one finger.
LIFTED_HEIGHT_M = 0.05
GL_PACKAGES = "libegl1 libgl1-mesa-dri libegl-mesa0"


class _OffscreenCamera:
    """One EGL context for the session, one RGB + depth read per render (not two renders).

    mujoco.Renderer would render twice for colour and depth and needs a new GL context per
    model; this keeps the context and rebuilds only the per-model MjrContext.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        try:
            from mujoco.gl_context import GLContext

            self._gl = GLContext(width, height)
            self._gl.make_current()
        except Exception as error:  # any backend failure: missing libraries, no device
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"offscreen rendering (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')}) failed: {message}; "
                            f"on Debian/Ubuntu install {GL_PACKAGES}") from None
        self._model: mujoco.MjModel | None = None
        self._context: mujoco.MjrContext | None = None
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._depth = np.empty((height, width), dtype=np.float32)

    def _bind(self, model: mujoco.MjModel) -> None:
        if model is self._model:
            return
        self._gl.make_current()
        if self._context is not None:
            self._context.free()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._context)
        self._context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=1000)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):  # SPEC 11: shadows and reflections off
            self._scene.flags[flag] = False
        self._option = mujoco.MjvOption()  # default: geom groups 0-2 drawn, 3 (collision) hidden
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._model = model

    def render(self, model: mujoco.MjModel, data: mujoco.MjData, camera_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Colour (H, W, 3) uint8 and depth (H, W) float32 metres along the optical axis."""
        self._bind(model)
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL.value,
                               self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._rgb, self._depth, self._rect, self._context)
        # Reverse-Z depth buffer -> metres, the same float32 projection constants as mujoco.Renderer.
        near = np.float32(model.vis.map.znear * model.stat.extent)
        far = np.float32(model.vis.map.zfar * model.stat.extent)
        c_coef = np.float32(-0.5) * (-(far + near) / (far - near)) - np.float32(0.5)
        d_coef = np.float32(-0.5) * (-(np.float32(2) * far * near) / (far - near))
        depth = (d_coef / (self._depth.astype(np.float64) + c_coef)).astype(np.float32)
        # OpenGL rows run bottom-up.
        return np.flipud(self._rgb).copy(), np.flipud(depth).copy()

    def close(self) -> None:
        if self._context is not None:
            self._gl.make_current()
            self._context.free()
            self._context = None
        if getattr(self, "_gl", None) is not None:
            self._gl.free()
            self._gl = None
        self._model = None


class MujocoSim(SimulatorBackend):
    """The embedded MuJoCo backend of robot.Robot.

    obj_mesh_dir: folder of .obj meshes in metres (default: the project's 8 blocks, written on
    first use). num_obj: objects dropped by reset_scene. rng: the caller's Generator (or an int
    seed of the caller's) for the first random drop. The first scene is `test_case` (a parsed
    case or a file path) if given, else `objects` (SceneObject list) if given, else a random drop
    from `rng` if given, else an empty table until reset_scene(rng) or load_test_case: the
    simulator never seeds a generator of its own. The GL context is created on the first
    get_camera_data(), so physics-only use needs no OpenGL.
    """

    SETTLE_CHECK_STEPS = 25  # 50 ms between at-rest checks
    TABLE_TOP_Z_M = 0.0

    def __init__(self, obj_mesh_dir: Path | str | None = None, num_obj: int = 10,
                 workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                 heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M,
                 rng: np.random.Generator | int | None = None,
                 objects: Sequence[SceneObject] | None = None,
                 test_case: PresetCase | Path | str | None = None) -> None:
        self._setup(obj_mesh_dir, num_obj, workspace_limits_m, heightmap_resolution_m)
        self._camera: _OffscreenCamera | None = None
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self._model_key: tuple[str, ...] | None = None
        self._heights_before = np.zeros(0)
        self._warnings_seen: dict[str, int] = {}
        self._first_scene(rng, objects, test_case)

    # ------------------------------------------------------------------ Backend: camera
    @property
    def camera_pose(self) -> np.ndarray:
        """(4, 4) camera-to-base; MuJoCo cameras look along their -z with y up, ours along +z with y down."""
        pose = np.eye(4)
        pose[:3, :3] = self.data.cam_xmat[self._camera_id].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        pose[:3, 3] = self.data.cam_xpos[self._camera_id]
        return pose

    def get_camera_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Colour (480, 640, 3) uint8 RGB and depth (480, 640) float32 metres."""
        if self._camera is None:
            self._camera = _OffscreenCamera(scene.IMAGE_WIDTH_PX, scene.IMAGE_HEIGHT_PX)
        return self._camera.render(self.model, self.data, self._camera_id)

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None

    # ------------------------------------------------------------------ sim-only API
    def set_object_pose(self, index: int, position_m: Sequence[float], quat_wxyz: Sequence[float] = (1, 0, 0, 0),
                        settle: bool = False) -> None:
        """Put object `index` (removed or not) at a pose (base frame, metres) with zero velocity."""
        self._restore_object(index, np.asarray(position_m, float), np.asarray(quat_wxyz, float))
        mujoco.mj_forward(self.model, self.data)
        if settle:
            self._settle(SETTLE_MAX_TIME_S)

    def scene_objects(self) -> list[SceneObject]:
        """The objects with their current poses (test-case order); removed ones keep their storage pose."""
        poses = [self.data.qpos[a:a + 7] for a in self._object_qpos]
        return [SceneObject(obj.mesh_file, obj.color_rgb, tuple(float(v) for v in pose[:3]),
                            tuple(float(v) for v in quat_wxyz_to_euler(pose[3:])))
                for obj, pose in zip(self._objects, poses)]

    def object_poses(self) -> np.ndarray:
        """(N, 7) [x, y, z, qw, qx, qy, qz] of every object in list order; NaN rows for removed ones."""
        poses = np.stack([self.data.qpos[a:a + 7] for a in self._object_qpos])  # free joints: world poses
        poses[self._removed] = np.nan
        return poses

    def visible_fraction(self, index: int) -> float:
        """Share of object `index`'s footprint (undilated) that a straight-down ray hits first: 1 = uncovered."""
        rows, cols = np.nonzero(self._footprint(index))
        if rows.size == 0:
            return 0.0
        limits, res = self.workspace_limits_m, self.heightmap_resolution_m
        collision_only = np.array([0, 0, 0, 1, 0, 0], dtype=np.uint8)
        down = np.array([0.0, 0.0, -1.0])
        geom = np.zeros(1, dtype=np.int32)
        hits = 0
        for row, col in zip(rows, cols):  # from the cell centre at the workspace ceiling
            origin = np.array([limits[0][0] + (col + 0.5) * res, limits[1][0] + (row + 0.5) * res, limits[2][1]])
            mujoco.mj_ray(self.model, self.data, origin, down, collision_only, 1, -1, geom)
            hits += geom[0] >= 0 and self.model.geom_bodyid[geom[0]] == self._body_ids[index]
        return hits / rows.size

    # MuJoCo's warnings that mean the state went bad (it resets the physics on the last two itself).
    BAD_STATE_WARNINGS = ("mjWARN_BADQPOS", "mjWARN_BADQVEL", "mjWARN_BADQACC")

    def _physics_faults(self) -> list[str]:
        """NaN or inf in qpos/qvel, or a bad-state warning MuJoCo raised since the last check."""
        faults = []
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))):
            faults.append("NaN or inf in the physics state")
        warnings = self.mujoco_warnings()
        for name in self.BAD_STATE_WARNINGS:
            if warnings.get(name, 0) > self._warnings_seen.get(name, 0):
                faults.append(f"MuJoCo {name} (it resets the physics when the state goes bad)")
        self._warnings_seen = warnings
        return faults

    def _fingers_open(self) -> bool:
        return self._finger_opening() >= FINGERS_OPEN_FRACTION * scene.FINGER_TRAVEL_M

    def mujoco_warnings(self) -> dict[str, int]:
        """MuJoCo's warning counters that are not zero (e.g. {'mjWARN_BADQACC': 3})."""
        return {name: int(self.data.warning[int(value)].number) for name, value in mujoco.mjtWarning.__members__.items()
                if name != "mjNWARNING" and self.data.warning[int(value)].number > 0}

    # ------------------------------------------------------------------ internals: model
    def _build(self, objects: list[SceneObject]) -> None:
        """Compile a model for these meshes, or reuse the current one when the meshes are the same."""
        key = tuple(obj.mesh_file for obj in objects)
        if key != self._model_key:
            self._shapes = [load_object_shape(self.obj_mesh_dir / name) for name in key]
            models = [scene.ObjectModel(shape, (1.0, 1.0, 1.0, 1.0)) for shape in self._shapes]
            xml = scene.build_scene_xml(models, self.workspace_limits_m)
            try:
                self.model = mujoco.MjModel.from_xml_string(xml)
            except ValueError as error:  # e.g. a degenerate user mesh
                raise UserError(f"MuJoCo rejected the scene: {str(error).splitlines()[0]}") from None
            self.data = mujoco.MjData(self.model)
            self._model_key = key
            self._index_model(len(objects))
        else:
            mujoco.mj_resetData(self.model, self.data)  # the warning counters too
            self.model.body_gravcomp[:] = self._gravcomp0
            self.model.geom_contype[:] = self._contype0
            self.model.geom_conaffinity[:] = self._conaffinity0
        for index, obj in enumerate(objects):
            self.model.geom_rgba[self._visual_geom_ids[index]] = (*obj.color_rgb, 1.0)
        self._objects = list(objects)
        self._removed = np.zeros(len(objects), dtype=bool)
        self._warnings_seen = {}
        self._set_gripper_state(np.array(scene.PARK_POSITION_M), 0.0, 0.0)
        for index in range(len(objects)):
            self._restore_object(index, scene.storage_position_m(index), np.array([1.0, 0, 0, 0]))
        mujoco.mj_forward(self.model, self.data)

    def _new_scene(self, objects: Sequence[SceneObject]) -> None:
        self._build(list(objects))
        for index in range(len(objects)):
            self._remove_object(index)

    def _place_object(self, index: int, position_m: np.ndarray, quat_wxyz: np.ndarray) -> None:
        self._restore_object(index, position_m, quat_wxyz)

    def _index_model(self, num_objects: int) -> None:
        m = self.model
        self._camera_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "rgbd")
        joints = ["gripper_x", "gripper_y", "gripper_z", "gripper_yaw", "finger_left", "finger_right"]
        self._gripper_qpos = np.array([m.joint(j).qposadr[0] for j in joints[:4]])
        self._gripper_dof = np.array([m.joint(j).dofadr[0] for j in joints[:4]])
        self._finger_qpos = np.array([m.joint(j).qposadr[0] for j in joints[4:]])
        self._finger_dof = np.array([m.joint(j).dofadr[0] for j in joints[4:]])
        self._gripper_act = np.array([m.actuator(f"gripper_{a}").id for a in ("x", "y", "z", "yaw")])
        self._grip_act = m.actuator("grip").id
        self._finger_body = {m.body("finger_left").id: 0, m.body("finger_right").id: 1}
        self._gripper_bodies = {m.body("gripper").id, *self._finger_body}
        self._body_ids = np.array([m.body(scene.body_name(i)).id for i in range(num_objects)])
        self._body_to_object = {int(b): i for i, b in enumerate(self._body_ids)}
        self._object_qpos = np.array([m.joint(scene.body_name(i)).qposadr[0] for i in range(num_objects)])
        self._object_dof = np.array([m.joint(scene.body_name(i)).dofadr[0] for i in range(num_objects)])
        self._object_geoms = [np.flatnonzero(m.geom_bodyid == b) for b in self._body_ids]
        self._visual_geom_ids = np.array([m.geom(f"{scene.body_name(i)}_visual").id for i in range(num_objects)])
        self._gravcomp0 = m.body_gravcomp.copy()
        self._contype0 = m.geom_contype.copy()
        self._conaffinity0 = m.geom_conaffinity.copy()
        self._steps_per_second = int(round(1.0 / m.opt.timestep))

    # ------------------------------------------------------------------ internals: objects
    def _restore_object(self, index: int, position_m: np.ndarray, quat_wxyz: np.ndarray) -> None:
        """Put an object back into the physics (mass, contacts) at a pose, at rest."""
        m, d = self.model, self.data
        body, geoms = self._body_ids[index], self._object_geoms[index]
        m.body_gravcomp[body] = self._gravcomp0[body]
        m.geom_contype[geoms] = self._contype0[geoms]
        m.geom_conaffinity[geoms] = self._conaffinity0[geoms]
        adr, dof = self._object_qpos[index], self._object_dof[index]
        d.qpos[adr:adr + 3] = position_m
        d.qpos[adr + 3:adr + 7] = np.asarray(quat_wxyz, float) / np.linalg.norm(quat_wxyz)
        d.qvel[dof:dof + 6] = 0.0
        self._removed[index] = False

    def _remove_object(self, index: int) -> None:
        """Take an object out of the scene: storage spot, weightless, no contacts, at rest."""
        self._restore_object(index, scene.storage_position_m(index), np.array([1.0, 0, 0, 0]))
        m = self.model
        m.body_gravcomp[self._body_ids[index]] = 1.0
        m.geom_contype[self._object_geoms[index]] = 0
        m.geom_conaffinity[self._object_geoms[index]] = 0
        self._removed[index] = True

    def _object_positions(self) -> np.ndarray:
        """(N, 3) body origins from qpos (current even between steps and forwards)."""
        if not len(self._object_qpos):  # an empty table
            return np.zeros((0, 3))
        return np.stack([self.data.qpos[a:a + 3] for a in self._object_qpos])

    def _object_speeds(self) -> tuple[np.ndarray, np.ndarray]:
        """Linear (N,) m/s and angular (N,) rad/s speeds of objects still in the scene (0 for removed)."""
        if not len(self._object_dof):
            return np.zeros(0), np.zeros(0)
        qvel = np.stack([self.data.qvel[a:a + 6] for a in self._object_dof])
        qvel[self._removed] = 0.0
        return np.linalg.norm(qvel[:, :3], axis=1), np.linalg.norm(qvel[:, 3:], axis=1)

    def _world_parts(self, index: int, position_m: np.ndarray | None = None,
                     quat_wxyz: np.ndarray | None = None) -> list[np.ndarray]:
        """Vertices (n, 3) of each convex part of object `index`, base frame, at a pose (default: current)."""
        adr = self._object_qpos[index]
        position = self.data.qpos[adr:adr + 3] if position_m is None else np.asarray(position_m, float)
        quat = self.data.qpos[adr + 3:adr + 7] if quat_wxyz is None else np.asarray(quat_wxyz, float)
        rotation = np.empty(9)
        mujoco.mju_quat2Mat(rotation, quat / np.linalg.norm(quat))
        return [vertices @ rotation.reshape(3, 3).T + position for vertices, _ in self._shapes[index].convex_parts]

    def _caught_object(self, heights_before_m: np.ndarray) -> int:
        """Index of the object held between the fingers after a lift, -1 if none."""
        touching: dict[int, set[int]] = {}
        d = self.data
        for g1, g2 in d.contact.geom[:d.ncon]:
            b1, b2 = self.model.geom_bodyid[g1], self.model.geom_bodyid[g2]
            for finger_body, other in ((b1, b2), (b2, b1)):
                if finger_body in self._finger_body and other in self._body_to_object:
                    touching.setdefault(self._body_to_object[other], set()).add(self._finger_body[finger_body])
        if not touching:
            return -1
        both = [i for i, fingers in touching.items() if len(fingers) == 2]
        candidates = both or [i for i in touching
                              if self._object_positions()[i, 2] - heights_before_m[i] > LIFTED_HEIGHT_M]
        if not candidates:
            return -1
        heights = self._object_positions()[:, 2]
        return max(candidates, key=lambda i: heights[i])

    # ------------------------------------------------------------------ internals: gripper
    def _gripper_position(self) -> np.ndarray:
        return self.data.qpos[self._gripper_qpos[:3]].copy()

    def _finger_opening(self) -> float:
        return float(self.data.qpos[self._finger_qpos].mean())

    def _set_gripper_state(self, position_m: np.ndarray, yaw_rad: float, opening_m: float) -> None:
        """Teleport the gripper (at rest, servos holding there) and set its finger opening."""
        d = self.data
        d.qpos[self._gripper_qpos] = [*position_m, yaw_rad]
        d.qvel[self._gripper_dof] = 0.0
        d.ctrl[self._gripper_act] = [*position_m, yaw_rad]
        d.qpos[self._finger_qpos] = opening_m
        d.qvel[self._finger_dof] = 0.0

    def _teleport_gripper(self, position_m: np.ndarray, yaw_rad: float, open_fingers: bool) -> None:
        self._set_gripper_state(position_m, yaw_rad, scene.FINGER_TRAVEL_M if open_fingers else 0.0)

    def _command_fingers(self, open_fingers: bool) -> None:
        self._set_grip(1.0 if open_fingers else -1.0)

    def _close_fingers(self) -> None:
        self._heights_before = self._object_positions()[:, 2].copy()  # _held_object compares with them
        self._set_grip(-1.0)
        self._wait_fingers()

    def _lift(self, above_m: np.ndarray, speed_m_s: float) -> None:
        self._move(above_m, speed_m_s)

    def _held_object(self) -> int:
        """The object touching both fingers (or touching one and lifted >= 5 cm), -1 if the fingers closed fully."""
        return self._caught_object(self._heights_before) if self._finger_opening() > FINGER_CLOSED_OPENING_M else -1

    def _open_fingers(self) -> None:
        self._set_grip(1.0)
        self._wait_fingers()

    def _gripper_touches_objects(self) -> bool:
        mujoco.mj_forward(self.model, self.data)
        d, bodyid = self.data, self.model.geom_bodyid
        return any((bodyid[g1] in self._gripper_bodies) != (bodyid[g2] in self._gripper_bodies)
                   for g1, g2 in d.contact.geom[:d.ncon])

    def _descend(self, target_m: np.ndarray) -> bool:
        """Guarded descent: fast down to SLOW_ZONE_M above whatever lies within reach, then slowly.

        A 1 kg gripper landing at 0.5 m/s on a 60 g block drives it into the table and makes it
        spin away; at 0.05 m/s the guard stops it first.
        """
        top = self._top_near_m(target_m[:2], GRIPPER_REACH_M)
        slow_from = np.array([target_m[0], target_m[1], max(target_m[2], top) + SLOW_ZONE_M])
        if self._gripper_position()[2] > slow_from[2] + POSITION_TOLERANCE_M:
            if not self._move(slow_from, TRAVEL_SPEED_M_S, guarded=True):
                return False
        return self._move(target_m, CONTACT_SPEED_M_S, guarded=True)

    def _park(self) -> None:
        self._set_gripper_state(np.array(scene.PARK_POSITION_M), 0.0, self._finger_opening())
        mujoco.mj_forward(self.model, self.data)

    def _set_grip(self, command: float) -> None:
        """-1 squeezes with GRIP_FORCE_N per finger, +1 opens."""
        self.data.ctrl[self._grip_act] = command

    def _wait_fingers(self) -> None:
        """Step until the fingers stop (closed on something, fully closed or open) or time runs out."""
        for _ in range(int(FINGER_MOVE_TIME_S * self._steps_per_second / CONTROL_PERIOD_STEPS)):
            self._step(CONTROL_PERIOD_STEPS)
            if np.all(np.abs(self.data.qvel[self._finger_dof]) < FINGER_STOPPED_SPEED_M_S):
                return

    def _move(self, target_m: np.ndarray, speed_m_s: float, guarded: bool = False) -> bool:
        """Move the fingertip centre in a straight line at `speed_m_s`; False if it stopped short.

        The servo set-point advances every control period; once it has arrived the motion waits
        for the gripper within MOTION_EXTRA_TIME_S. A guarded move (a descent) also stops as soon
        as objects push back on the gripper with more than GUARD_FORCE_N, as a force-limited arm
        would, instead of pressing them into the table. Stopping holds the gripper where it is.
        """
        d = self.data
        start = d.ctrl[self._gripper_act[:3]].copy()
        delta = np.asarray(target_m, float) - start
        # A guarded move looks for contact every 2 steps: the guard must act before forces build up.
        steps = GUARD_PERIOD_STEPS if guarded else CONTROL_PERIOD_STEPS
        period_s = steps / self._steps_per_second
        ticks = max(int(np.ceil(np.linalg.norm(delta) / speed_m_s / period_s)), 1)
        settle_ticks = int(np.ceil(MOTION_EXTRA_TIME_S / period_s))
        for tick in range(1, ticks + settle_ticks + 1):
            if tick > ticks and np.linalg.norm(self._gripper_position() - target_m) < POSITION_TOLERANCE_M:
                return True
            d.ctrl[self._gripper_act[:3]] = start + delta * min(tick / ticks, 1.0)
            self._step(steps)
            if guarded and self._upward_contact_force_n() > GUARD_FORCE_N:
                break
        d.ctrl[self._gripper_act[:3]] = self._gripper_position()
        return bool(np.linalg.norm(self._gripper_position() - target_m) < POSITION_TOLERANCE_M)

    def _upward_contact_force_n(self) -> float:
        """Total upward (base +z) contact force that objects and the table exert on the gripper."""
        d, bodyid = self.data, self.model.geom_bodyid
        force = np.zeros(6)
        total = 0.0
        for i, (g1, g2) in enumerate(d.contact.geom[:d.ncon]):
            on_first = bodyid[g1] in self._gripper_bodies
            if on_first == (bodyid[g2] in self._gripper_bodies):
                continue
            mujoco.mj_contactForce(self.model, d, i, force)
            # The force acts on geom2 along the contact normal (frame row 0), from geom1.
            normal_force = d.contact.frame[i][:3] * force[0]
            total += -normal_force[2] if on_first else normal_force[2]
        return total

    # ------------------------------------------------------------------ internals: stepping
    def _step(self, steps: int) -> None:
        mujoco.mj_step(self.model, self.data, steps)

    def _refresh(self) -> None:
        mujoco.mj_forward(self.model, self.data)
