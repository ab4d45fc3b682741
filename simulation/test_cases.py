"""Preset test-case files (SPEC section 7): read, check and write them.

Format, one object per line (the paper's create.py wrote it with numpy.savetxt):
    mesh_file r g b x y z rx ry rz
colour 0..1, position in metres (robot base frame), Euler angles in radians in CoppeliaSim's
convention: R = Rx(rx) @ Ry(ry) @ Rz(rz). This project also allows `#` comments and blank lines;
the goal index comes from a header comment `# goal_obj_idx: k` or from the file name
(`...-goal-k.txt`), and an explicit `goal_obj_idx` argument (the `--goal_obj_idx` option) wins
over both. The paper's own files carry neither; their goals are in PAPER_TEST_CASE_GOALS.

Pose frames. The paper's poses are those of CoppeliaSim shapes, whose frames CoppeliaSim
re-derives when it imports a mesh (principal axes), so for some blocks they are a quarter turn
away from the mesh file's own axes. Files written here say `# pose_frame: mesh` (poses of the
mesh's own frame). A file without that header is read as the paper's: its rotations are turned
into mesh-frame ones with PAPER_BLOCK_FRAMES (fitted to the paper's 10 files: with them every
block lying on the table touches it within 2 mm, without them many start 1-2.5 cm inside or
above it). Meshes not in that table (novel objects) keep their angles as given.

Objects outside the workspace are loaded anyway (the paper's files have several: their poses
came from the old simulator) with one warning line per file on stderr. Objects more than 5 cm
below the table top had fallen off the old simulator's table; the simulator loads them as
already removed (see `PresetCase.below_table`).

Pure numpy/scipy: every backend (MuJoCo, CoppeliaSim) can use it.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from utils import WORKSPACE_LIMITS_M, UserError

# The goals the paper's README gives for its 10 cases ("case index-goal object index").
PAPER_TEST_CASE_GOALS = {0: 4, 1: 7, 2: 8, 3: 7, 4: 7, 5: 3, 6: 1, 7: 7, 8: 5, 9: 9}
# An object whose origin is this far below the table top fell off the old simulator's table.
BELOW_TABLE_Z_M = -0.05
# R_mesh = R_file @ M: the rotation from a paper block's CoppeliaSim shape frame to its mesh frame.
# Fitted over the 24 axis-aligned rotations to the paper's test-10 files (every line of a block
# rests on the table within 2 mm; the few ties are symmetries of the block). 3.obj appears in
# none of them: it takes 1.obj's, the other long box whose three principal moments differ.
_QUARTER_TURN_Y = ((0, 0, 1), (0, 1, 0), (-1, 0, 0))
_CYCLE_XYZ = ((0, 0, 1), (1, 0, 0), (0, 1, 0))
_IDENTITY = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
PAPER_BLOCK_FRAMES: dict[str, np.ndarray] = {
    name: np.array(m, dtype=float) for name, m in (
        ("0.obj", _QUARTER_TURN_Y), ("1.obj", _QUARTER_TURN_Y), ("2.obj", _IDENTITY), ("3.obj", _QUARTER_TURN_Y),
        ("4.obj", _IDENTITY), ("6.obj", _IDENTITY), ("7.obj", _CYCLE_XYZ), ("8.obj", _CYCLE_XYZ))}
POSE_FRAME_MESH, POSE_FRAME_PAPER = "mesh", "coppeliasim"
FIELDS = ("mesh_file", "r", "g", "b", "x", "y", "z", "rx", "ry", "rz")
_GOAL_HEADER = re.compile(r"^#\s*goal_obj_idx\s*[:=]\s*(\S*)\s*$")
_FRAME_HEADER = re.compile(r"^#\s*pose_frame\s*[:=]\s*(\S*)\s*$")
_GOAL_IN_NAME = re.compile(r"goal-(\d+)")


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene: its mesh file (name inside the mesh folder), colour and pose.

    color_rgb: (3,) 0..1; position_m: (3,) base frame; euler_rad: (3,) CoppeliaSim order
    R = Rx(a) @ Ry(b) @ Rz(g), the frame of the mesh in the base frame.
    """

    mesh_file: str
    color_rgb: tuple[float, float, float]
    position_m: tuple[float, float, float]
    euler_rad: tuple[float, float, float]

    @property
    def quat_wxyz(self) -> np.ndarray:
        """(4,) MuJoCo-order quaternion of the same rotation."""
        return euler_to_quat_wxyz(self.euler_rad)


@dataclass(frozen=True)
class PresetCase:
    """A parsed test-case file. Indices are line order (the scene's object indices)."""

    objects: tuple[SceneObject, ...]
    goal_obj_idx: int | None
    path: str | None = None
    outside_workspace: tuple[int, ...] = field(default=())  # origin outside the workspace box
    below_table: tuple[int, ...] = field(default=())  # subset of outside_workspace: fell off the table
    pose_frame: str = POSE_FRAME_MESH  # the file's convention; `objects` are always in mesh frames


def euler_to_matrix(euler_rad: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation R = Rx(a) @ Ry(b) @ Rz(g) (CoppeliaSim's Euler angles)."""
    # scipy's upper-case axes are intrinsic rotations: 'XYZ' composes Rx @ Ry @ Rz.
    return Rotation.from_euler("XYZ", np.asarray(euler_rad, dtype=float)).as_matrix()


def matrix_to_euler(rotation: np.ndarray) -> np.ndarray:
    """Inverse of euler_to_matrix: (3,) angles (a, b, g), radians."""
    with warnings.catch_warnings():  # at gimbal lock scipy warns, yet the angles still give this rotation
        warnings.simplefilter("ignore", UserWarning)
        return Rotation.from_matrix(rotation).as_euler("XYZ")


def euler_to_quat_wxyz(euler_rad: Sequence[float]) -> np.ndarray:
    x, y, z, w = Rotation.from_euler("XYZ", np.asarray(euler_rad, dtype=float)).as_quat()
    return np.array([w, x, y, z])


def quat_wxyz_to_euler(quat_wxyz: Sequence[float]) -> np.ndarray:
    w, x, y, z = quat_wxyz
    return matrix_to_euler(Rotation.from_quat([x, y, z, w]).as_matrix())


def inside_workspace(position_m: Sequence[float], workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M) -> bool:
    """Whether a point lies inside the workspace box (limits inclusive)."""
    p = np.asarray(position_m, dtype=float)
    return bool(np.all(p >= workspace_limits_m[:, 0]) and np.all(p <= workspace_limits_m[:, 1]))


def goal_from_file_name(path: Path | str) -> int | None:
    """Goal index written in a file name like `test-10-obj-03-goal-4.txt`, else None."""
    match = _GOAL_IN_NAME.search(Path(path).name)
    return int(match.group(1)) if match else None


def _paper_to_mesh_frame(obj: SceneObject) -> SceneObject:
    frame = PAPER_BLOCK_FRAMES.get(obj.mesh_file)
    if frame is None:
        return obj
    euler = matrix_to_euler(euler_to_matrix(obj.euler_rad) @ frame)
    return SceneObject(obj.mesh_file, obj.color_rgb, obj.position_m, tuple(float(a) for a in euler))


def _parse_line(path: Path, line_number: int, line: str) -> SceneObject:
    fields = line.split()
    where = f"{path}:{line_number}"
    if len(fields) != len(FIELDS):
        raise UserError(f"{where}: expected {len(FIELDS)} fields '{' '.join(FIELDS)}', "
                        f"got {len(fields)}: {line.strip()[:80]!r}")
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise UserError(f"{where}: a number is malformed in {line.strip()[:80]!r}") from None
    if not all(np.isfinite(values)):
        raise UserError(f"{where}: values must be finite numbers: {line.strip()[:80]!r}")
    color = values[0:3]
    if not all(0.0 <= c <= 1.0 for c in color):
        raise UserError(f"{where}: colour r g b must lie in 0..1, got {color}")
    return SceneObject(fields[0], tuple(color), tuple(values[3:6]), tuple(values[6:9]))


def read_test_case(path: Path | str, obj_mesh_dir: Path | str | None = None, goal_obj_idx: int | None = None,
                   workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M, warn: bool = True) -> PresetCase:
    """Parse and check a test-case file.

    obj_mesh_dir: when given, every mesh file must exist there. goal_obj_idx: overrides the
    file's own goal. Raises UserError (one line naming the file and line) for a malformed line,
    a missing mesh, an empty file or a goal index out of range. With `warn`, prints one warning
    line on stderr when objects lie outside the workspace.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read test case {path}: {getattr(error, 'strerror', None) or error}") from None
    objects: list[SceneObject] = []
    header_goal, header_line = None, 0
    pose_frame = POSE_FRAME_PAPER
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            match = _GOAL_HEADER.match(stripped)
            if match:
                if not re.fullmatch(r"-?\d+", match.group(1)):
                    raise UserError(f"{path}:{line_number}: goal_obj_idx must be an integer, got {match.group(1)!r}")
                header_goal, header_line = int(match.group(1)), line_number
            match = _FRAME_HEADER.match(stripped)
            if match:
                if match.group(1) not in (POSE_FRAME_MESH, POSE_FRAME_PAPER):
                    raise UserError(f"{path}:{line_number}: pose_frame must be {POSE_FRAME_MESH} or "
                                    f"{POSE_FRAME_PAPER}, got {match.group(1)!r}")
                pose_frame = match.group(1)
            continue
        obj = _parse_line(path, line_number, line)
        if obj_mesh_dir is not None and not (Path(obj_mesh_dir) / obj.mesh_file).is_file():
            raise UserError(f"{path}:{line_number}: mesh {obj.mesh_file} not found in {obj_mesh_dir}")
        objects.append(obj)
    if not objects:
        raise UserError(f"{path}: no objects (expected lines '{' '.join(FIELDS)}')")
    if pose_frame == POSE_FRAME_PAPER:
        objects = [_paper_to_mesh_frame(obj) for obj in objects]

    if goal_obj_idx is not None:
        goal, source = goal_obj_idx, "--goal_obj_idx"
    elif header_goal is not None:
        goal, source = header_goal, f"line {header_line}"
    else:
        goal, source = goal_from_file_name(path), "the file name"
    if goal is not None and not 0 <= goal < len(objects):
        raise UserError(f"{path}: goal index {goal} (from {source}) is out of range: "
                        f"the file has {len(objects)} objects (0..{len(objects) - 1})")

    outside = tuple(i for i, o in enumerate(objects) if not inside_workspace(o.position_m, workspace_limits_m))
    below = tuple(i for i in outside if objects[i].position_m[2] < workspace_limits_m[2][0] + BELOW_TABLE_Z_M)
    if warn and outside:
        note = f"; {list(below)} lie below the table and start removed" if below else ""
        print(f"warning: {path}: objects {list(outside)} of {len(objects)} lie outside the workspace; "
              f"loaded as given{note}", file=sys.stderr)
    return PresetCase(tuple(objects), goal, str(path), outside, below, pose_frame)


def load_test_case(path: Path | str, mesh_dir: Path | str | None = None, goal_obj_idx: int | None = None,
                   workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M) -> PresetCase:
    """read_test_case for a scene about to be built: every mesh must exist in `mesh_dir`
    (default: the project's blocks, written if missing)."""
    if mesh_dir is None:
        from simulation.objects import ensure_blocks

        mesh_dir = ensure_blocks()
    return read_test_case(path, obj_mesh_dir=mesh_dir, goal_obj_idx=goal_obj_idx,
                          workspace_limits_m=workspace_limits_m)


def jitter_case(case: PresetCase, rng: np.random.Generator, offset_m: float, yaw_rad: float) -> PresetCase:
    """The case with every object on the table moved by a random offset: x and y each uniform in
    [-offset_m, offset_m], and turned about the vertical by a uniform angle in [-yaw_rad, yaw_rad]
    (the simulator settles it). Objects that start removed (below the table) stay as they are.
    Two draws a trial (position, angle) per object, in file order, from the run's generator, so
    the same seed repeats every trial; offset_m = yaw_rad = 0 returns the case unchanged."""
    if offset_m < 0 or yaw_rad < 0 or not np.isfinite(offset_m) or not np.isfinite(yaw_rad):
        raise UserError(f"preset jitter must be finite and >= 0, got {offset_m} m and {yaw_rad} rad")
    if offset_m == 0 and yaw_rad == 0:
        return case
    objects = []
    for index, obj in enumerate(case.objects):
        offset = rng.uniform(-offset_m, offset_m, size=2)
        yaw = float(rng.uniform(-yaw_rad, yaw_rad))
        if index in case.below_table:
            objects.append(obj)
            continue
        rotation = Rotation.from_euler("z", yaw).as_matrix() @ euler_to_matrix(obj.euler_rad)
        position = (obj.position_m[0] + float(offset[0]), obj.position_m[1] + float(offset[1]), obj.position_m[2])
        objects.append(SceneObject(obj.mesh_file, obj.color_rgb, position,
                                   tuple(float(a) for a in matrix_to_euler(rotation))))
    return dataclasses.replace(case, objects=tuple(objects))


def format_test_case(objects: Sequence[SceneObject], goal_obj_idx: int | None = None,
                     comment: Sequence[str] = ()) -> str:
    """The file text: an optional goal header and comment lines, then one '%.18e' line per object
    (numpy.savetxt's format, as the paper's files)."""
    lines = [f"# pose_frame: {POSE_FRAME_MESH}"]
    lines += [] if goal_obj_idx is None else [f"# goal_obj_idx: {int(goal_obj_idx)}"]
    lines += [f"# {line}" for text in comment for line in text.splitlines()]
    for obj in objects:
        if not obj.mesh_file or any(c.isspace() for c in obj.mesh_file):
            raise ValueError(f"mesh file name {obj.mesh_file!r} must be non-empty without spaces")
        numbers = [*obj.color_rgb, *obj.position_m, *obj.euler_rad]
        lines.append(" ".join([obj.mesh_file, *(f"{float(v):.18e}" for v in numbers)]))
    return "\n".join(lines) + "\n"


def write_test_case(path: Path | str, objects: Sequence[SceneObject], goal_obj_idx: int | None = None,
                    comment: Sequence[str] = ()) -> Path:
    """Write a test-case file (parent folders created). Returns the path."""
    if goal_obj_idx is not None and not 0 <= goal_obj_idx < len(objects):
        raise UserError(f"goal index {goal_obj_idx} is out of range for {len(objects)} objects")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_test_case(objects, goal_obj_idx, comment))
    return path
