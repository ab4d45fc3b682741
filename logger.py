"""Session directories: images, heightmaps, snapshots, visualisations and transition logs.

Layout of one session (SPEC section 7), created under a base directory (default ``logs``)::

    <base>/<YYYY-MM-DD.HH:MM:SS>[-N]/
        info/                     heightmap-boundaries.txt, heightmap-resolution.txt,
                                  camera-intrinsics.txt, camera-pose.txt,
                                  camera-depth-scale.txt (all np.loadtxt-able), config.json
        data/color-images/        NNNNNN.<mode>.color.png   (RGB stored as a normal PNG)
        data/depth-images/        NNNNNN.<mode>.depth.png   (uint16, 1e-4 m per unit)
        data/color-heightmaps/    NNNNNN.<mode>.color.png
        data/depth-heightmaps/    NNNNNN.<mode>.depth.png   (uint16, 1e-5 m per unit)
        data/masks/               NNNNNN.goal.png, NNNNNN.grasped.png (0/255; training only:
                                  with the heightmaps they rebuild replay after a crash)
        models/                   snapshot-NNNNNN.<stage>.pth, snapshot-backup.<stage>.pth
        visualizations/           NNNNNN.<name>.png
        transitions/              <name>.log.txt (space-separated rows, append-only)
        tensorboard/              tensorboardX event files (created on first scalar)

Transition logs are only ever appended to (one ``open(..., 'a')`` per row, flushed at once), so
a crash can lose at most the row being written, never rows already on disk; ``sync()`` fsyncs
them for a power cut. Every other file the logger writes itself goes through a temporary file,
fsync and an atomic rename.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np

from fault_injection import kill_point
from utils import UserError

# Depth PNG scales: metres -> integer units. 1e-4 m for camera depth (max 6.5535 m), 1e-5 m for
# heightmaps (max 0.65535 m, above the 0.4 m workspace height), as in the original code.
DEPTH_IMAGE_UNITS_PER_M = 10_000
DEPTH_HEIGHTMAP_UNITS_PER_M = 100_000
_UINT16_MAX = np.iinfo(np.uint16).max

SESSION_TIMESTAMP_FORMAT = '%Y-%m-%d.%H:%M:%S'

# The one table of transition logs: (name, columns, one row per iteration?, what a row holds).
# main.py writes the per-iteration ones in this order (executed-action first: it counts the
# iterations), resume checks them, evaluate.py reads them; nothing else lists log names.
TRANSITION_LOGS: tuple[tuple[str, int, bool, str], ...] = (
    ('executed-action', 4, True, 'primitive (0 push / 1 grasp), rotation index, y (row), x (col)'),
    ('label-value', 1, True, 'the Q target the action was trained on'),
    ('reward-value', 1, True, 'the reward of the stage rules'),
    ('predicted-value', 1, True, "the net's Q of the action when it was chosen"),
    ('is-exploit', 1, True, '1 for a greedy action, 0 for an exploring one'),
    ('use-heuristic', 1, True, '1 when the depth heuristic chose the action'),
    ('grasp-obj', 1, True, 'index of the grasped object, -1 if none'),
    ('goal-obj', 1, True, 'index of the goal object, -1 when goal-agnostic'),
    ('grasp-success', 1, True, '1 only for a successful grasp, else 0'),
    ('push-step', 1, True, 'pushes so far in the push_only episode'),
    ('episode', 1, True, 'episode counter'),
    ('change-detected', 2, True, 'change detected (0/1), changed pixel count'),
    ('improved-grasp-reward', 1, True, 'best goal grasp Q after the action minus before'),
    ('occupancy', 2, True, "the goal's occupancy ratio before and after the action"),
    ('clearance', 1, False, "the iteration at each trial end (the next trial's first row)"),
    ('aborted-trial', 1, False, 'trial ends of test trials cut short by an interruption'),
)
KNOWN_LOG_COLUMNS: dict[str, int] = {name: columns for name, columns, _, _ in TRANSITION_LOGS}
PER_ITERATION_LOGS: tuple[str, ...] = tuple(name for name, _, per_iteration, _ in TRANSITION_LOGS if per_iteration)

_SUBDIRS = (
    'info',
    os.path.join('data', 'color-images'),
    os.path.join('data', 'depth-images'),
    os.path.join('data', 'color-heightmaps'),
    os.path.join('data', 'depth-heightmaps'),
    'models',
    'visualizations',
    'transitions',
)


# ----------------------------------------------------------------------------------------------
# Small file helpers
# ----------------------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename.

    A reader (or a crash) never sees a half-written file: it sees the old file or the new one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Leave no stray temporary file behind on failure.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def fsync_file(path: str | os.PathLike) -> None:
    """Force a file's written bytes to the disk (they survive a power cut, not only a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str | os.PathLike) -> None:
    """Force a folder's entries (a rename into it, a new file) to the disk; a no-op where the
    platform cannot open folders."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))


def _savetxt_atomic(path: str | os.PathLike, array: Any) -> None:
    """np.savetxt (space-delimited, full float precision) through an atomic write."""
    import io
    buf = io.StringIO()
    np.savetxt(buf, np.atleast_1d(np.asarray(array, dtype=float)), delimiter=' ', fmt='%.17g')
    _atomic_write_text(path, buf.getvalue())


def _format_number(value: Any) -> str:
    """One log value as text that np.loadtxt reads back exactly (ints stay ints)."""
    if isinstance(value, (bool, np.bool_)):
        return '1' if value else '0'
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (str, bytes)):
        raise TypeError(f'log values must be numbers, got {value!r}')
    f = float(value)  # raises TypeError/ValueError for non-numbers, which is what we want
    if f.is_integer() and abs(f) < 2 ** 53:
        return str(int(f))
    return repr(f)  # shortest text that round-trips; 'nan', 'inf' and '-inf' load fine


def _check_name(kind: str, name: str) -> str:
    """File-name components must not escape their folder or break the NNNNNN.<x>.png pattern."""
    name = str(name)
    if not name or '/' in name or '\\' in name or name in ('.', '..') or any(c.isspace() for c in name):
        raise ValueError(f'bad {kind} {name!r}: use a non-empty name without slashes or spaces')
    return name


# ----------------------------------------------------------------------------------------------
# Image encoding (module level so that tests, tools and the replay code can share it)
# ----------------------------------------------------------------------------------------------
def encode_depth(depth_m: np.ndarray, units_per_m: int) -> np.ndarray:
    """Metres -> uint16 PNG units: round to the nearest unit, NaN/inf/negative -> 0, clip at 65535.

    Args:
        depth_m: (H, W) depth or height in metres (NaN marks "no data").
        units_per_m: DEPTH_IMAGE_UNITS_PER_M (1e-4 m units) or DEPTH_HEIGHTMAP_UNITS_PER_M (1e-5 m).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f'depth must be a 2-D (H, W) array, got shape {d.shape}')
    # NaN (empty heightmap cells) becomes 0, the same as the "valid" heightmap; +inf is no data too.
    d = np.where(np.isfinite(d), d, 0.0)
    units = np.rint(d * units_per_m)
    return np.clip(units, 0, _UINT16_MAX).astype(np.uint16)


def decode_depth(units: np.ndarray, units_per_m: int) -> np.ndarray:
    """uint16 PNG units -> float32 metres (exact inverse of encode_depth up to the quantisation)."""
    return (np.asarray(units, dtype=np.float64) / units_per_m).astype(np.float32)


def _check_color(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        # Silently rescaling a float image would hide a unit bug upstream (0..1 vs 0..255).
        raise TypeError(f'colour images must be uint8 RGB, got dtype {img.dtype}')
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'colour images must be (H, W, 3) RGB, got shape {img.shape}')
    return img


def write_color_png(path: str | os.PathLike, image_rgb: np.ndarray) -> None:
    """Save an (H, W, 3) uint8 RGB image as a PNG (cv2 wants BGR, so channels are swapped)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(_check_color(image_rgb)), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.png', bgr)
    if not ok:
        raise OSError(f'could not encode PNG for {path}')
    atomic_write_bytes(path, buf.tobytes())


def read_color_png(path: str | os.PathLike) -> np.ndarray:
    """Load a colour PNG written by write_color_png as (H, W, 3) uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f'cannot read colour image {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_depth_png(path: str | os.PathLike, depth_m: np.ndarray, units_per_m: int) -> None:
    """Save a depth/height map in metres as a uint16 PNG in 1/units_per_m m units."""
    ok, buf = cv2.imencode('.png', encode_depth(depth_m, units_per_m))
    if not ok:
        raise OSError(f'could not encode PNG for {path}')
    atomic_write_bytes(path, buf.tobytes())


def read_depth_png(path: str | os.PathLike, units_per_m: int) -> np.ndarray:
    """Load a uint16 depth PNG as float32 metres (cells that were NaN come back as 0)."""
    units = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if units is None:
        raise FileNotFoundError(f'cannot read depth image {path}')
    if units.dtype != np.uint16 or units.ndim != 2:
        raise ValueError(f'{path} is not a single-channel uint16 depth PNG')
    return decode_depth(units, units_per_m)


# ----------------------------------------------------------------------------------------------
# Logger
# ----------------------------------------------------------------------------------------------
def is_session_directory(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a session made by Logger (it has info/ and transitions/)."""
    p = Path(path)
    return (p / 'info').is_dir() and (p / 'transitions').is_dir()


class Logger:
    """One logging session directory (SPEC section 7).

    Args:
        continue_logging: reopen the existing session ``logging_directory`` (resume) instead of
            creating a new one.
        logging_directory: with ``continue_logging``, the session to reopen (must exist and be a
            session directory, else UserError). Without it: if given, the exact path of the new
            session (must not already hold a session); if None, a new timestamped folder is made
            under ``base_directory``.
        base_directory: where new timestamped sessions go (default ``logs``).
        fsync: also fsync every transition-log append (slower; survives power loss, not just a
            process crash, which flushing alone already survives).
        verbose: print one line naming the session directory.
    """

    def __init__(self, continue_logging: bool = False, logging_directory: str | os.PathLike | None = None,
                 base_directory: str | os.PathLike = 'logs', fsync: bool = False, verbose: bool = True) -> None:
        self.continue_logging = bool(continue_logging)
        self.fsync = bool(fsync)
        if self.continue_logging:
            if logging_directory is None:
                raise UserError('--continue_logging needs --logging_directory (the session to resume)')
            d = Path(logging_directory)
            if not d.is_dir():
                raise UserError(f'logging directory to resume does not exist: {d}')
            if not is_session_directory(d):
                raise UserError(f'not a session directory (no info/ and transitions/ inside): {d}')
            self.base_directory = d
            if verbose:
                print(f'Resuming logging session: {d}')
        elif logging_directory is not None:
            d = Path(logging_directory)
            if d.exists() and (not d.is_dir() or any(d.iterdir())):
                raise UserError(f'{d} already exists and is not empty; to resume it pass '
                                f'--continue_logging, or choose a new directory')
            d.mkdir(parents=True, exist_ok=True)
            self.base_directory = d
            if verbose:
                print(f'Creating logging session: {d}')
        else:
            self.base_directory = self._make_unique_session_dir(Path(base_directory))
            if verbose:
                print(f'Creating logging session: {self.base_directory}')

        b = self.base_directory
        self.info_directory = b / 'info'
        self.color_images_directory = b / 'data' / 'color-images'
        self.depth_images_directory = b / 'data' / 'depth-images'
        self.color_heightmaps_directory = b / 'data' / 'color-heightmaps'
        self.depth_heightmaps_directory = b / 'data' / 'depth-heightmaps'
        self.models_directory = b / 'models'
        self.visualizations_directory = b / 'visualizations'
        self.transitions_directory = b / 'transitions'
        self.tensorboard_directory = b / 'tensorboard'
        for sub in _SUBDIRS:
            (b / sub).mkdir(parents=True, exist_ok=True)

        self._writer = None  # tensorboardX SummaryWriter, created on the first scalar
        # Per-log caches so an append does not re-read the file: row count and column count.
        self._rows: dict[str, int] = {}
        self._cols: dict[str, int | None] = {}
        self._unsynced: set[str] = set()  # logs appended to since the last sync()

    # ------------------------------------------------------------------ session directory
    @staticmethod
    def _make_unique_session_dir(base: Path) -> Path:
        """Create <base>/<timestamp>, adding -1, -2, ... if a run in the same second took the name.

        mkdir without exist_ok is atomic, so two processes can never share one session.
        """
        base.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime(SESSION_TIMESTAMP_FORMAT)
        for n in range(10_000):
            candidate = base / (stamp if n == 0 else f'{stamp}-{n}')
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise UserError(f'could not create a unique session directory under {base}')

    @property
    def session_directory(self) -> Path:
        """The session folder (alias of ``base_directory``, the original code's name)."""
        return self.base_directory

    # ------------------------------------------------------------------ info/
    def save_heightmap_info(self, workspace_limits_m: np.ndarray, resolution_m: float) -> None:
        """Save the heightmap box (3x2: rows x, y, z; cols min, max; metres) and resolution (m/px)."""
        limits = np.asarray(workspace_limits_m, dtype=float)
        if limits.shape != (3, 2):
            raise ValueError(f'workspace limits must be 3x2, got shape {limits.shape}')
        _savetxt_atomic(self.info_directory / 'heightmap-boundaries.txt', limits)
        _savetxt_atomic(self.info_directory / 'heightmap-resolution.txt', [float(resolution_m)])

    def save_camera_info(self, intrinsics: np.ndarray, pose: np.ndarray, depth_scale: float) -> None:
        """Save camera intrinsics (3x3, pixels), pose (4x4 camera-to-base, metres), depth scale
        (metres per depth unit as returned by the camera; 1.0 for a metric simulator)."""
        _savetxt_atomic(self.info_directory / 'camera-intrinsics.txt', np.asarray(intrinsics, dtype=float))
        _savetxt_atomic(self.info_directory / 'camera-pose.txt', np.asarray(pose, dtype=float))
        _savetxt_atomic(self.info_directory / 'camera-depth-scale.txt', [float(depth_scale)])

    def save_config(self, config: Mapping[str, Any] | Any) -> Path:
        """Save the run's arguments as JSON (an argparse Namespace or a mapping).

        The first run of a session writes ``info/config.json``; a resumed run never overwrites it
        but writes ``info/config-resume-<timestamp>.json`` so every run's settings are kept.
        """
        if not isinstance(config, Mapping):
            config = vars(config)
        path = self.info_directory / 'config.json'
        if path.exists():
            stamp = datetime.datetime.now().strftime('%Y-%m-%d.%H-%M-%S')
            path = self.info_directory / f'config-resume-{stamp}.json'
            n = 1
            while path.exists():
                path = self.info_directory / f'config-resume-{stamp}-{n}.json'
                n += 1
        # default=str: paths, numpy scalars and the like are saved readably rather than failing.
        _atomic_write_text(path, json.dumps(dict(config), indent=2, sort_keys=True, default=str) + '\n')
        return path

    def load_info(self) -> dict[str, Any]:
        """Read back whatever info/ files exist: keys workspace_limits_m, heightmap_resolution_m,
        camera_intrinsics, camera_pose, camera_depth_scale, config."""
        out: dict[str, Any] = {}
        files = {
            'workspace_limits_m': 'heightmap-boundaries.txt',
            'heightmap_resolution_m': 'heightmap-resolution.txt',
            'camera_intrinsics': 'camera-intrinsics.txt',
            'camera_pose': 'camera-pose.txt',
            'camera_depth_scale': 'camera-depth-scale.txt',
        }
        for key, fname in files.items():
            p = self.info_directory / fname
            if p.exists():
                value = np.loadtxt(p)
                out[key] = float(value) if value.ndim == 0 else value
        cfg = self.info_directory / 'config.json'
        if cfg.exists():
            out['config'] = json.loads(cfg.read_text())
        return out

    # ------------------------------------------------------------------ data/
    def _data_path(self, folder: Path, iteration: int, mode: str, kind: str) -> Path:
        return folder / f'{int(iteration):06d}.{_check_name("mode", mode)}.{kind}.png'

    def save_images(self, iteration: int, color_image: np.ndarray, depth_image: np.ndarray,
                    mode: str = '0') -> None:
        """Save a camera frame: RGB uint8 (H, W, 3) and depth (H, W) in metres (1e-4 m PNG units).

        ``mode`` is '0' for the frame before the action, '1' after it (any short name works).
        """
        mode = str(mode)
        write_color_png(self._data_path(self.color_images_directory, iteration, mode, 'color'), color_image)
        write_depth_png(self._data_path(self.depth_images_directory, iteration, mode, 'depth'),
                        depth_image, DEPTH_IMAGE_UNITS_PER_M)

    def load_images(self, iteration: int, mode: str = '0') -> tuple[np.ndarray, np.ndarray]:
        """Load (RGB uint8, depth float32 metres) saved by save_images."""
        mode = str(mode)
        color = read_color_png(self._data_path(self.color_images_directory, iteration, mode, 'color'))
        depth = read_depth_png(self._data_path(self.depth_images_directory, iteration, mode, 'depth'),
                               DEPTH_IMAGE_UNITS_PER_M)
        return color, depth

    def save_heightmaps(self, iteration: int, color_heightmap: np.ndarray, depth_heightmap: np.ndarray,
                        mode: str = '0') -> None:
        """Save heightmaps: colour RGB uint8 (224, 224, 3) and height (224, 224) in metres above
        the table (1e-5 m PNG units; NaN -> 0)."""
        mode = str(mode)
        write_color_png(self._data_path(self.color_heightmaps_directory, iteration, mode, 'color'),
                        color_heightmap)
        write_depth_png(self._data_path(self.depth_heightmaps_directory, iteration, mode, 'depth'),
                        depth_heightmap, DEPTH_HEIGHTMAP_UNITS_PER_M)

    def load_heightmaps(self, iteration: int, mode: str = '0') -> tuple[np.ndarray, np.ndarray]:
        """Load (colour heightmap RGB uint8, height float32 metres) saved by save_heightmaps."""
        mode = str(mode)
        color = read_color_png(self._data_path(self.color_heightmaps_directory, iteration, mode, 'color'))
        depth = read_depth_png(self._data_path(self.depth_heightmaps_directory, iteration, mode, 'depth'),
                               DEPTH_HEIGHTMAP_UNITS_PER_M)
        return color, depth

    def mask_path(self, iteration: int, name: str) -> Path:
        """data/masks/NNNNNN.<name>.png: a 0/255 footprint mask of that iteration's state."""
        return self.base_directory / 'data' / 'masks' / f'{int(iteration):06d}.{_check_name("mask name", name)}.png'

    def save_mask(self, iteration: int, name: str, mask: np.ndarray) -> Path:
        """Save an (H, W) mask (nonzero = inside) as a 0/255 PNG; with the heightmaps it makes
        the iteration's replay transition rebuildable after a crash."""
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ValueError(f'a mask must be 2-D (H, W), got shape {m.shape}')
        path = self.mask_path(iteration, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode('.png', np.where(m > 0, 255, 0).astype(np.uint8))
        if not ok:
            raise OSError(f'could not encode PNG for {path}')
        atomic_write_bytes(path, buf.tobytes())
        return path

    def load_mask(self, iteration: int, name: str) -> np.ndarray | None:
        """The (H, W) uint8 0/255 mask save_mask wrote, or None when there is none."""
        path = self.mask_path(iteration, name)
        if not path.is_file():
            return None
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise ValueError(f'{path} is not a single-channel mask PNG')
        return np.where(mask > 0, 255, 0).astype(np.uint8)

    # ------------------------------------------------------------------ models/
    def snapshot_path(self, iteration: int, stage: str) -> Path:
        """models/snapshot-NNNNNN.<stage>.pth"""
        return self.models_directory / f'snapshot-{int(iteration):06d}.{_check_name("stage", stage)}.pth'

    def backup_snapshot_path(self, stage: str) -> Path:
        """models/snapshot-backup.<stage>.pth (the rolling backup, overwritten atomically)."""
        return self.models_directory / f'snapshot-backup.{_check_name("stage", stage)}.pth'

    def save_snapshot(self, iteration: int | None, stage: str, save_fn: Callable[[str], Any]) -> Path:
        """Write a snapshot through ``save_fn(path)`` (e.g. the trainer's save), atomically.

        ``save_fn`` is called with a temporary path in models/; the file is then renamed onto the
        numbered snapshot (``iteration`` given) or the rolling backup (``iteration=None``), so a
        crash mid-save never leaves a truncated snapshot under the final name.
        """
        final = self.backup_snapshot_path(stage) if iteration is None else self.snapshot_path(iteration, stage)
        fd, tmp = tempfile.mkstemp(prefix='.' + final.name + '.', suffix='.tmp', dir=self.models_directory)
        os.close(fd)
        try:
            save_fn(tmp)
            fsync_file(tmp)
            kill_point('snapshot_file_write', iteration)
            os.replace(tmp, final)
            fsync_directory(self.models_directory)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return final

    def latest_snapshot(self, stage: str) -> tuple[int, Path] | None:
        """(iteration, path) of the highest-numbered snapshot of ``stage``, or None."""
        stage = _check_name('stage', stage)
        best: tuple[int, Path] | None = None
        for p in self.models_directory.glob(f'snapshot-*.{stage}.pth'):
            number = p.name[len('snapshot-'):-len(f'.{stage}.pth')]
            if number.isdigit() and (best is None or int(number) > best[0]):
                best = (int(number), p)
        return best

    # ------------------------------------------------------------------ visualizations/
    def save_visualization(self, iteration: int, name: str, image_rgb_uint8: np.ndarray) -> Path:
        """Save an RGB uint8 (H, W, 3) picture as visualizations/NNNNNN.<name>.png."""
        path = self.visualizations_directory / f'{int(iteration):06d}.{_check_name("name", name)}.png'
        write_color_png(path, image_rgb_uint8)
        return path

    # ------------------------------------------------------------------ transitions/
    def log_path(self, name: str) -> Path:
        """transitions/<name>.log.txt"""
        return self.transitions_directory / f'{_check_name("log name", name)}.log.txt'

    def _scan(self, name: str) -> None:
        """Fill the row/column cache of one log from disk, dropping a torn final line.

        A line without its newline can only come from a crash in the middle of a write; it is
        not a complete row, so it is cut off (the only change ever made to existing log bytes).
        """
        path = self.log_path(name)
        rows, cols = 0, None
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b'\n'):
                keep = data.rfind(b'\n') + 1
                warnings.warn(f'{path}: dropping an incomplete last line {data[keep:]!r} '
                              f'(a write was interrupted)')
                with open(path, 'r+b') as f:
                    f.truncate(keep)
                data = data[:keep]
            lines = [ln for ln in data.split(b'\n') if ln.strip()]
            rows = len(lines)
            if lines:
                cols = len(lines[-1].split())
        self._rows[name] = rows
        self._cols[name] = cols

    def append(self, name: str, values: float | Sequence[float] | np.ndarray) -> None:
        """Append one row to transitions/<name>.log.txt and flush it to the OS at once.

        ``values`` is a number or a flat sequence of numbers (bools are written as 1/0, integers
        as integers, floats with full precision). Every row of a log must have the same number
        of columns (ValueError otherwise: that is a bug in the caller, not user input).
        """
        flat = np.ravel(np.asarray(values, dtype=object)) if not np.isscalar(values) else [values]
        if len(flat) == 0:
            raise ValueError(f'empty row for log {name!r}')
        text = ' '.join(_format_number(v) for v in flat) + '\n'
        if name not in self._rows:
            self._scan(name)
        cols = self._cols[name]
        if cols is not None and cols != len(flat):
            raise ValueError(f'log {name!r} has {cols} columns, row {list(flat)!r} has {len(flat)}')
        # One write of one short line per open: the row reaches the file whole, and reopening
        # in 'a' mode each time means nothing stays buffered in this process.
        with open(self.log_path(name), 'a', encoding='ascii') as f:
            f.write(text)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
            else:
                self._unsynced.add(name)
        self._rows[name] += 1
        self._cols[name] = len(flat)
        kill_point('append:' + name, self._rows[name] - 1)

    def sync(self) -> None:
        """fsync every log appended to since the last sync (once per iteration: the rows then
        survive a power cut too, at the cost of one fsync per log rather than per row)."""
        for name in sorted(self._unsynced):
            fsync_file(self.log_path(name))
        self._unsynced.clear()

    def write_to_log(self, name: str, values: float | Sequence[float] | np.ndarray) -> None:
        """Alias of append (the original code's name; it rewrote the whole file, this appends one row)."""
        self.append(name, values)

    def read(self, name: str, ncols: int | None = None) -> np.ndarray:
        """Load a log as a float64 array of shape (N, k).

        A missing or empty log gives shape (0, k) with k from ``ncols``, else from
        KNOWN_LOG_COLUMNS, else shape (0,). A torn last line (crash mid-write) is ignored.
        """
        path = self.log_path(name)
        return read_log_file(path, ncols if ncols is not None else KNOWN_LOG_COLUMNS.get(name))

    def num_rows(self, name: str) -> int:
        """Number of complete rows in a log (0 when it does not exist)."""
        if name not in self._rows:
            self._scan(name)
        return self._rows[name]

    def log_names(self) -> list[str]:
        """Names of all logs present in transitions/."""
        return sorted(p.name[:-len('.log.txt')] for p in self.transitions_directory.glob('*.log.txt'))

    @property
    def iteration(self) -> int:
        """Number of executed actions logged so far = the next iteration number (for resume)."""
        return self.num_rows('executed-action')

    def trial_ends(self) -> list[int]:
        """Clearance marks: the iteration at each finished trial's end (first row of the next)."""
        arr = self.read('clearance', 1)
        return [int(v) for v in arr[:, 0]] if arr.size else []

    def pad_to(self, name: str, num_rows: int, fill: float | Sequence[float] = float('nan')) -> int:
        """Append ``fill`` rows until the log has ``num_rows`` rows; never removes any.

        For resuming after a crash between the appends of one iteration: the short logs are
        padded (NaN by default, i.e. "not recorded") so every per-iteration log lines up with
        executed-action again. Returns how many rows were added.
        """
        added = 0
        while self.num_rows(name) < num_rows:
            if np.isscalar(fill) and self._cols.get(name):
                row: Any = [fill] * int(self._cols[name])  # repeat a scalar fill across columns
            else:
                row = fill
            self.append(name, row)
            added += 1
        return added

    def resume_state(self, per_iteration_logs: Iterable[str] = PER_ITERATION_LOGS) -> dict[str, Any]:
        """What a resumed loop needs: the iteration count, trial ends, and per-log row counts.

        Returns a dict with ``iteration`` (rows of executed-action), ``trial_ends`` (list of int),
        ``num_trials`` (finished trials), ``rows`` (name -> row count for the present
        per-iteration logs) and ``mismatched`` (names whose row count differs from
        ``iteration``; fix with pad_to, or by the caller's own rule).
        """
        iteration = self.iteration
        rows = {n: self.num_rows(n) for n in per_iteration_logs if self.log_path(n).exists()}
        ends = self.trial_ends()
        return {
            'iteration': iteration,
            'trial_ends': ends,
            'num_trials': len(ends),
            'rows': rows,
            'mismatched': sorted(n for n, r in rows.items() if r != iteration),
        }

    # ------------------------------------------------------------------ tensorboard
    def scalar(self, tag: str, value: float, step: int) -> None:
        """Log a scalar to <session>/tensorboard (tags namespaced, e.g. 'train/loss')."""
        if self._writer is None:
            # Imported lazily: tensorboardX costs import time and is not needed to read logs.
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(logdir=str(self.tensorboard_directory))
        v = float(value)
        if math.isfinite(v):
            self._writer.add_scalar(tag, v, int(step))

    def flush(self) -> None:
        """Flush the tensorboard writer (transition logs are always flushed already)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the tensorboard writer. The logger stays usable; a later scalar reopens it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> 'Logger':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_log_file(path: str | os.PathLike, ncols: int | None = None) -> np.ndarray:
    """Load a transitions log file as float64 (N, k); see Logger.read.

    Raises ValueError when the rows have different numbers of columns or are not numbers.
    """
    path = Path(path)
    if not path.exists():
        return np.zeros((0, ncols)) if ncols else np.zeros((0,))
    text = path.read_text(encoding='ascii', errors='replace')
    if text and not text.endswith('\n'):
        text = text[:text.rfind('\n') + 1]  # torn last line from an interrupted write: not a row
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return np.zeros((0, ncols)) if ncols else np.zeros((0,))
    widths = {len(ln.split()) for ln in lines}
    if len(widths) != 1:
        raise ValueError(f'{path}: rows have different numbers of columns {sorted(widths)}')
    try:
        arr = np.array([[float(x) for x in ln.split()] for ln in lines], dtype=np.float64)
    except ValueError as e:
        raise ValueError(f'{path}: not a numeric log ({e})') from None
    return arr
