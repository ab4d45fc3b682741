"""The MuJoCo scene (MJCF), built as an XML tree by code (SPEC sections 2 and 11).

Menagerie style: `<default>` classes separate what is drawn (group 2) from what collides
(group 3, never rendered), and every physics number says where it comes from. Frames: MuJoCo's
world frame is the robot base frame (metres); the table top is at z = 0.

The gripper is a floating parallel jaw: slides x, y, z and a yaw hinge (position actuators,
gravity compensated), two fingers on slides coupled by a joint equality and squeezed by one
force-limited motor. Its body frame sits between the fingertips' lowest points, so a slide
target is directly the "fingertip z" of robot.py's plans. It rests parked outside the
workspace and out of the camera's view between actions.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from simulation.objects import ObjectShape
from utils import WORKSPACE_LIMITS_M

# --- camera (SPEC section 2): 640 x 480, fx = fy = 618.62, principal point at the centre.
IMAGE_WIDTH_PX, IMAGE_HEIGHT_PX = 640, 480
FOCAL_LENGTH_PX = 618.62
# Straight down over the workspace centre: the 480-px direction spans x, and at 0.75 m every
# workspace cell is seen even on top of a 0.1 m object at the edge (0.65 m * 240/618.62 > 0.224 m);
# a top-down view has no occlusion shadows in the heightmap. ~1.2 mm per pixel on the table.
CAMERA_HEIGHT_M = 0.75
# Depth is metric through the projection; znear/zfar are fractions of stat.extent (set to 1 m).
CAMERA_ZNEAR_M, CAMERA_ZFAR_M = 0.05, 5.0

# --- table and floor: the table is far larger than the workspace because the paper's test cases
# put objects up to x = -1.04 m and |y| = 0.44 m; a floor catches what falls off.
TABLE_X_RANGE_M = (-1.2, 0.0)
TABLE_Y_RANGE_M = (-0.6, 0.6)
TABLE_THICKNESS_M = 0.05
FLOOR_Z_M = -0.5
TABLE_RGBA = (0.45, 0.45, 0.45, 1.0)

# --- gripper geometry (our own; roughly a Robotiq 2F-85: 9 cm maximum opening).
FINGER_TRAVEL_M = 0.045  # SPEC 11: finger slide range 0..0.045 m; the gap is twice the travel
FINGER_HALF_THICKNESS_M = 0.005  # along the closing axis
FINGER_HALF_WIDTH_M = 0.01  # across it: robot.FINGER_WIDTH_M = 0.02 m
FINGER_HALF_LENGTH_M = 0.03  # 6 cm fingers: taller than the grasp depth of 4 cm below the surface
PALM_HALF_SIZE_M = (0.015, FINGER_TRAVEL_M + 2 * FINGER_HALF_THICKNESS_M + 0.005, 0.01)
GRIPPER_MASS_KG = 1.0
FINGER_MASS_KG = 0.05
GRIP_FORCE_N = 20.0  # SPEC 11: "closed by a motor actuator (about 20 N)", per finger here
# Parked near the robot base, above the workspace's 0.4 m ceiling and outside the camera frustum.
PARK_POSITION_M = (0.0, 0.0, 0.5)
# Removed (grasped) objects are stored, weightless and without contacts, far from everything.
STORAGE_ORIGIN_M = (5.0, 5.0, 1.0)
STORAGE_SPACING_M = 0.3

# --- physics (SPEC 11 "measured to work here")
TIMESTEP_S = 0.002
OBJECT_DENSITY_KG_M3 = 500.0
OBJECT_FRICTION = "1.0 0.02 0.001"


@dataclass(frozen=True)
class ObjectModel:
    """What the scene needs to know about one object: its shape and colour (pose is set at run time)."""

    shape: ObjectShape
    rgba: tuple[float, float, float, float]


def body_name(index: int) -> str:
    return f"object_{index}"


def storage_position_m(index: int) -> np.ndarray:
    """Where removed object `index` is kept: (3,) base frame, far outside the table."""
    return np.array(STORAGE_ORIGIN_M) + np.array([STORAGE_SPACING_M * index, 0.0, 0.0])


def _numbers(values) -> str:
    return " ".join(f"{float(v):.7g}" for v in np.ravel(values))


def _sub(parent: ET.Element, tag: str, comment: str | None = None, **attributes) -> ET.Element:
    if comment:
        parent.append(ET.Comment(f" {comment} "))
    return ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attributes.items()})


def _defaults(root: ET.Element) -> None:
    default = _sub(root, "default")
    visual = _sub(default, "default", "drawn, never collides, no mass", class_="visual")
    _sub(visual, "geom", contype=0, conaffinity=0, group=2, density=0)
    collision = _sub(default, "default", "collides, never drawn (group 3 is hidden)", class_="collision")
    _sub(collision, "geom", group=3)
    obj = _sub(collision, "default",
               "SPEC 11: condim 6 (torsional + rolling friction), friction 1.0 0.02 0.001, density 500,"
               " default solref (a stiffer one made pushed cylinders spin up and fly)", class_="object")
    _sub(obj, "geom", condim=6, friction=OBJECT_FRICTION, density=OBJECT_DENSITY_KG_M3)
    finger = _sub(collision, "default", "SPEC 11: condim 4, friction 1.0 0.02 0.001, solref 0.002 1 "
                  "(stiff fingers, penetration <= 3 mm)", class_="finger")
    # priority 1: finger contacts take these parameters instead of a mix with the object's (ours)
    _sub(finger, "geom", condim=4, friction=OBJECT_FRICTION, solref="0.002 1", priority=1, group=2,
         rgba="0.2 0.2 0.2 1")
    # SPEC 11: range 0..0.045. Damping 100, not SPEC 11's 2: with 2 the 20 N motor slammed the 50 g
    # fingers shut at metres per second and they knocked 2.5 cm blocks out instead of holding them;
    # 100 closes at ~0.2 m/s. Limit solref 0.004 s (the 2-step minimum), not the default 0.02 s
    # that let the motor push a finger ~1 cm past its stop (ours).
    _sub(finger, "joint", type="slide", range=f"0 {FINGER_TRAVEL_M}", damping=100, solreflimit="0.004 1")
    slide = _sub(default, "default", "SPEC 11: gripper slides, damping 50", class_="gripper_slide")
    _sub(slide, "joint", type="slide", damping=50, limited="false")
    _sub(slide, "position", kp=4000, kv=150, ctrllimited="false")  # SPEC 11: kp 4000, kv 150 for x/y/z


def _gripper(worldbody: ET.Element) -> None:
    gripper = _sub(worldbody, "body", "floating parallel-jaw gripper; frame between the fingertips' lowest points",
                   name="gripper", pos="0 0 0", gravcomp=1)
    for axis, name in (("1 0 0", "gripper_x"), ("0 1 0", "gripper_y"), ("0 0 1", "gripper_z")):
        _sub(gripper, "joint", name=name, class_="gripper_slide", axis=axis)
    _sub(gripper, "joint", "SPEC 11: yaw hinge damping 5", name="gripper_yaw", type="hinge", axis="0 0 1",
         damping=5, limited="false")
    palm_z = 2 * FINGER_HALF_LENGTH_M + PALM_HALF_SIZE_M[2]
    # A generous rotational inertia keeps the kp 200 yaw servo well inside the 2 ms step's stability.
    _sub(gripper, "inertial", pos=f"0 0 {palm_z}", mass=GRIPPER_MASS_KG, diaginertia="0.01 0.01 0.01")
    _sub(gripper, "geom", name="palm", type="box", size=_numbers(PALM_HALF_SIZE_M), pos=f"0 0 {palm_z}",
         rgba="0.3 0.3 0.35 1", group=2)
    for side, sign in (("left", 1), ("right", -1)):
        finger = _sub(gripper, "body", name=f"finger_{side}", pos=f"0 {sign * FINGER_HALF_THICKNESS_M} 0", gravcomp=1)
        # qpos = opening of this finger: 0 when the two inner faces touch, FINGER_TRAVEL_M when open.
        _sub(finger, "joint", name=f"finger_{side}", class_="finger", axis=f"0 {sign} 0")
        _sub(finger, "inertial", pos=f"0 0 {FINGER_HALF_LENGTH_M}", mass=FINGER_MASS_KG,
             diaginertia="1e-5 1e-5 1e-5")
        _sub(finger, "geom", name=f"finger_{side}", class_="finger", type="box",
             size=_numbers((FINGER_HALF_WIDTH_M, FINGER_HALF_THICKNESS_M, FINGER_HALF_LENGTH_M)),
             pos=f"0 0 {FINGER_HALF_LENGTH_M}")


def _camera(worldbody: ET.Element, workspace_limits_m: np.ndarray) -> None:
    centre = workspace_limits_m[:2].mean(axis=1)
    fovy_deg = math.degrees(2 * math.atan(IMAGE_HEIGHT_PX / 2 / FOCAL_LENGTH_PX))
    # xyaxes: image right = base -y, image up = base +x, so the camera looks along base -z.
    # OpenGL puts pixel u's centre at u + 0.5, but utils.depth_to_camera_points casts pixel u along
    # (u - cx) / fx: shifting MuJoCo's principal point by -0.5 px makes the two agree exactly (a
    # 0.6 mm error on the table otherwise; checked against mj_ray in tests/test_heightmap.py).
    # sensorsize only switches MuJoCo to intrinsics mode; its unit cancels out.
    _sub(worldbody, "camera", f"SPEC 2: 640x480, fx = fy = {FOCAL_LENGTH_PX} px (fovy {fovy_deg:.2f} deg), "
         "cx = 320, cy = 240, straight down", name="rgbd", pos=_numbers((centre[0], centre[1], CAMERA_HEIGHT_M)),
         xyaxes="0 -1 0 1 0 0", resolution=f"{IMAGE_WIDTH_PX} {IMAGE_HEIGHT_PX}",
         sensorsize=f"{IMAGE_WIDTH_PX * 1e-5:g} {IMAGE_HEIGHT_PX * 1e-5:g}",
         focalpixel=f"{FOCAL_LENGTH_PX} {FOCAL_LENGTH_PX}", principalpixel="-0.5 -0.5")


def build_scene_xml(objects: Sequence[ObjectModel], workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M) -> str:
    """MJCF text of the table, camera, gripper and one free body per object (parked in storage).

    Object bodies are named object_<i> in list order; their frame is the mesh frame. Poses are
    set at run time, so the same compiled model serves every scene with the same meshes.
    """
    root = ET.Element("mujoco", model="push_grasp")
    _sub(root, "compiler", angle="radian", autolimits="true")
    _sub(root, "option", "SPEC 11: 2 ms step, implicitfast, elliptic cones. impratio 1, not SPEC 11's 10: with 10,"
         " about 1 grasp in 50 that lands a finger on two thin blocks made them spin up and fly"
         " (random push/grasp stress test, 360 actions); with 1, none did and lone blocks are still held",
         timestep=TIMESTEP_S, integrator="implicitfast", cone="elliptic", impratio=1)
    _sub(root, "size", "arena for contacts of a 10-object pile plus the gripper", memory="32M")
    visual = _sub(root, "visual")
    _sub(visual, "global", "offscreen buffer of the SPEC 2 image size", offwidth=IMAGE_WIDTH_PX,
         offheight=IMAGE_HEIGHT_PX)
    _sub(visual, "quality", "no shadows (SPEC 11), no multisampling: crisp depth edges, faster", shadowsize=0, offsamples=0)
    _sub(visual, "headlight", ambient="0.5 0.5 0.5", diffuse="0.4 0.4 0.4", specular="0 0 0")
    _sub(visual, "map", "clip planes in units of stat.extent = 1 m", znear=CAMERA_ZNEAR_M, zfar=CAMERA_ZFAR_M)
    _sub(root, "statistic", extent=1, center=_numbers((*workspace_limits_m[:2].mean(axis=1), 0)))
    _defaults(root)

    asset = _sub(root, "asset")
    mesh_names: dict[str, tuple[str, list[str]]] = {}  # content hash -> (visual mesh, collision meshes)
    for model in objects:
        shape = model.shape
        if shape.content_hash in mesh_names:
            continue
        key = f"m{len(mesh_names)}"
        # The visual mesh may be open or non-convex: 'shell' inertia never fails (its mass is 0 anyway).
        _sub(asset, "mesh", f"{shape.name}", name=f"{key}_visual", vertex=_numbers(shape.visual_vertices_m),
             face=_numbers(shape.visual_faces), inertia="shell")
        parts = []
        for j, (vertices, faces) in enumerate(shape.convex_parts):
            parts.append(f"{key}_part{j}")
            _sub(asset, "mesh", name=parts[-1], vertex=_numbers(vertices), face=_numbers(faces))
        mesh_names[shape.content_hash] = (f"{key}_visual", parts)

    worldbody = _sub(root, "worldbody")
    _sub(worldbody, "light", "one soft light from above, no shadows (SPEC 11)", pos="-0.5 0 2", dir="0 0 -1",
         directional="true", castshadow="false", diffuse="0.4 0.4 0.4", specular="0 0 0")
    table_centre = (np.mean(TABLE_X_RANGE_M), np.mean(TABLE_Y_RANGE_M), -TABLE_THICKNESS_M / 2)
    table_half = (np.ptp(TABLE_X_RANGE_M) / 2, np.ptp(TABLE_Y_RANGE_M) / 2, TABLE_THICKNESS_M / 2)
    _sub(worldbody, "geom", "table, top at z = 0", name="table", type="box", pos=_numbers(table_centre),
         size=_numbers(table_half), rgba=_numbers(TABLE_RGBA))
    _sub(worldbody, "geom", "floor: catches objects pushed off the table", name="floor", type="plane",
         pos=f"0 0 {FLOOR_Z_M}", size="0 0 1", rgba="0.2 0.2 0.2 1")
    _camera(worldbody, workspace_limits_m)
    _gripper(worldbody)
    for i, model in enumerate(objects):
        visual_mesh, parts = mesh_names[model.shape.content_hash]
        body = _sub(worldbody, "body", name=body_name(i), pos=_numbers(storage_position_m(i)))
        _sub(body, "freejoint", name=body_name(i))
        _sub(body, "geom", name=f"{body_name(i)}_visual", class_="visual", type="mesh", mesh=visual_mesh,
             rgba=_numbers(model.rgba))
        for j, part in enumerate(parts):
            _sub(body, "geom", name=f"{body_name(i)}_part{j}", class_="object", type="mesh", mesh=part)

    tendon = _sub(root, "tendon")
    grip = _sub(tendon, "fixed", "sum of the two finger openings: one motor squeezes both", name="grip")
    for side in ("left", "right"):
        _sub(grip, "joint", joint=f"finger_{side}", coef=1)
    equality = _sub(root, "equality")
    _sub(equality, "joint", "SPEC 11: the fingers are coupled by a joint equality (mirror)",
         joint1="finger_left", joint2="finger_right", polycoef="0 1 0 0 0", solref="0.004 1")
    contact = _sub(root, "contact")
    _sub(contact, "exclude", body1="finger_left", body2="finger_right")
    actuator = _sub(root, "actuator")
    for axis in "xyz":
        _sub(actuator, "position", name=f"gripper_{axis}", joint=f"gripper_{axis}", class_="gripper_slide")
    _sub(actuator, "position", "SPEC 11: kp 200, kv 10 for yaw", name="gripper_yaw", joint="gripper_yaw",
         kp=200, kv=10, ctrllimited="false")
    _sub(actuator, "motor", f"SPEC 11: force-limited close, {GRIP_FORCE_N} N per finger; ctrl -1 closes, +1 opens",
         name="grip", tendon="grip", gear=GRIP_FORCE_N, ctrlrange="-1 1")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")
