"""The real cell, described once: one JSON file that `python -m real.calibrate` writes and
`main.py --real` reads (real/README.md, "The cell file").

Everything is in the robot base frame (the frame the UR controller reports TCP poses in),
metres and radians:
- workspace_xy_m [[x_min, x_max], [y_min, y_max]]: the box the camera maps into heightmaps and
  every push or grasp stays in; with the run's resolution it must give the networks' heightmap
  size (224 x 224 at 2 mm: a 0.448 m square).
- table_z_m: the table surface; heights in heightmaps are above it and the box reaches
  workspace_height_m above it.
- tool_offset_m: flange to the fingertips' lowest point along the flange z axis (the TCP sent
  with setTcp; 0.175 m for a Robotiq 2F-85 on its standard coupling).
- gripper_yaw_offset_rad: turn about the tool axis that makes the fingers close along the tool
  y axis at yaw 0 (0 for a 2F-85 on its standard coupling, pi/2 if yours closes along x).
- bin_position_m, bin_yaw_rad: where grasped objects are released, outside the workspace.
- home_joints_rad: the joint configuration the arm waits in while the camera looks (out of its
  view); reached with a joint move. home_tcp_pose: the fingertip TCP pose [x, y, z, rx, ry, rz]
  of those joints (the controller's forward kinematics; checked against it at start-up).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

import utils
from utils import HEIGHTMAP_RESOLUTION_M, UserError

CELL_FILE = "cell.json"
FORMAT = "push-grasp cell v1"
# The table's own points count as inside the box (SPEC 2's z min is 0.1 mm below the table).
TABLE_MARGIN_M = 0.0001
MAX_TOOL_OFFSET_M = 0.4


@dataclass(frozen=True)
class Cell:
    """One real cell. Defaults: SPEC 2's workspace with the table at base z = 0, a 2F-85, and a
    home computed with the UR5's nominal kinematics (record your own: real/README.md)."""

    workspace_xy_m: tuple[tuple[float, float], tuple[float, float]] = ((-0.724, -0.276), (-0.224, 0.224))
    table_z_m: float = 0.0
    workspace_height_m: float = 0.4
    tool_offset_m: float = 0.175
    gripper_yaw_offset_rad: float = 0.0
    bin_position_m: tuple[float, float, float] = (-0.50, 0.40, 0.25)
    bin_yaw_rad: float = 0.0
    home_joints_rad: tuple[float, ...] = (-1.1013, -1.6357, 1.3936, -1.3287, -1.5708, 0.4695)
    home_tcp_pose: tuple[float, ...] = (-0.30, 0.35, 0.35, math.pi, 0.0, 0.0)

    @property
    def workspace_limits_m(self) -> np.ndarray:
        """(3, 2) the workspace box [[x], [y], [z]] x [min, max], as utils.WORKSPACE_LIMITS_M."""
        (x_min, x_max), (y_min, y_max) = self.workspace_xy_m
        return np.array([[x_min, x_max], [y_min, y_max],
                         [self.table_z_m - TABLE_MARGIN_M, self.table_z_m + self.workspace_height_m]], dtype=float)


def _finite_array(value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """value as finite floats of that shape, or None (strings, bools, None, ragged lists: a
    hand-edited file's mistakes are refused, not half-converted)."""
    def plain(v: Any) -> bool:
        if isinstance(v, (tuple, list)):
            return all(plain(x) for x in v)
        return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))

    if not plain(value):
        return None
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return array if array.shape == shape and np.all(np.isfinite(array)) else None


def check_cell(cell: Cell, source: str = "(cell)", heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> Cell:
    """The checks every cell passes before anything moves; UserError naming the file and the field."""
    def fail(message: str) -> None:
        raise UserError(f"cell file {source}: {message} (real/README.md, 'The cell file')")

    def numbers(name: str, count: int) -> np.ndarray:
        value = _finite_array(getattr(cell, name), (count,))
        if value is None:
            fail(f"{name} must be {count} finite numbers, got {getattr(cell, name)!r}")
        return value

    xy = _finite_array(cell.workspace_xy_m, (2, 2))
    if xy is None or not np.all(xy[:, 0] < xy[:, 1]):
        fail(f"workspace_xy_m must be [[x_min, x_max], [y_min, y_max]] with min < max, got {cell.workspace_xy_m!r}")
    for name in ("table_z_m", "workspace_height_m", "tool_offset_m", "gripper_yaw_offset_rad", "bin_yaw_rad"):
        if _finite_array(getattr(cell, name), ()) is None:
            fail(f"{name} must be a finite number, got {getattr(cell, name)!r}")
    shape = utils.heightmap_shape(cell.workspace_limits_m, heightmap_resolution_m)
    wanted = utils.heightmap_shape(utils.WORKSPACE_LIMITS_M, HEIGHTMAP_RESOLUTION_M)
    if shape != wanted:
        fail(f"the workspace makes a {shape[0]}x{shape[1]} heightmap at {heightmap_resolution_m} m per pixel; "
             f"the networks and masks expect {wanted[0]}x{wanted[1]} (sides of "
             f"{wanted[1] * heightmap_resolution_m:.3f} m): move the box, do not resize it")
    if not -1.0 <= cell.table_z_m <= 1.0:
        fail(f"table_z_m {cell.table_z_m} must be in [-1, 1] m of the robot base (a UR5 reaches 0.85 m)")
    for name in ("gripper_yaw_offset_rad", "bin_yaw_rad"):
        if not -2 * math.pi <= getattr(cell, name) <= 2 * math.pi:
            fail(f"{name} {getattr(cell, name)} must be in [-2 pi, 2 pi] (radians, not degrees)")
    if not 0.05 <= cell.workspace_height_m <= 1.0:
        fail(f"workspace_height_m {cell.workspace_height_m} must be in [0.05, 1.0] m")
    if not 0.0 <= cell.tool_offset_m <= MAX_TOOL_OFFSET_M:
        fail(f"tool_offset_m {cell.tool_offset_m} must be in [0, {MAX_TOOL_OFFSET_M}] m")
    bin_xy = numbers("bin_position_m", 3)[:2]
    numbers("home_joints_rad", 6)
    home_xy = numbers("home_tcp_pose", 6)[:2]
    box = cell.workspace_limits_m
    if np.all((bin_xy >= box[:2, 0]) & (bin_xy <= box[:2, 1])):
        fail(f"bin_position_m {list(cell.bin_position_m)} lies over the workspace: released objects would fall "
             "back into the scene")
    if np.all((home_xy >= box[:2, 0]) & (home_xy <= box[:2, 1])):
        fail(f"home_tcp_pose {list(cell.home_tcp_pose[:3])} lies over the workspace: the arm would be in the "
             "camera's view when it looks")
    return cell


def _plain(value: Any) -> Any:
    """Tuples (and nested ones) as lists for JSON."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, (int, float, np.floating)) else value


def _tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuple(v) for v in value)
    return value


def cell_to_json(cell: Cell) -> str:
    """One field a line, so the file reads (and hand-edits) like a table."""
    items = {"format": FORMAT, **{k: _plain(v) for k, v in asdict(cell).items()}}
    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in items.items()) + "\n}\n"


def save_cell(cell: Cell, path: str | Path, heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> Path:
    """Validate, then write atomically (a crash leaves the old file, never half of one)."""
    path = Path(path)
    check_cell(cell, str(path), heightmap_resolution_m)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(cell_to_json(cell))
    os.replace(temporary, path)
    return path


def load_cell(path: str | Path, heightmap_resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> Cell:
    """Read and validate a cell file. Every field must be present: a cell left to defaults could
    send the arm to someone else's bin."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no cell file {path}: `python -m real.calibrate` writes one "
                        "(real/README.md, 'The cell file')") from None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read cell file {path}: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"cell file {path} is not a '{FORMAT}' file (its \"format\" field)")
    names = [f.name for f in fields(Cell)]
    unknown = sorted(set(data) - set(names) - {"format"})
    missing = [name for name in names if name not in data]
    if unknown:
        raise UserError(f"cell file {path}: unknown field(s) {', '.join(unknown)} (known: {', '.join(names)})")
    if missing:
        raise UserError(f"cell file {path}: missing field(s) {', '.join(missing)}")
    try:
        cell = Cell(**{name: _tuple(data[name]) for name in names})
    except TypeError as error:
        raise UserError(f"cell file {path}: {error}") from None
    return check_cell(cell, str(path), heightmap_resolution_m)


def updated(cell: Cell, **changes: Any) -> Cell:
    """A copy with the given fields changed (None values are left as they are)."""
    return replace(cell, **{k: _tuple(np.asarray(v, dtype=float).tolist()) if isinstance(v, (list, tuple, np.ndarray))
                            else v for k, v in changes.items() if v is not None})
