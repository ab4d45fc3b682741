"""RGB-D cameras for the real robot: Intel RealSense, file replay, in-memory and synthetic.

Every camera has `intrinsics` ((3, 3) pinhole matrix of the colour stream, pixels) and
`get_frames() -> (colour (H, W, 3) uint8 RGB, depth (H, W) float32 metres, NaN where invalid)`,
depth aligned to the colour image, so the camera frame is the colour sensor's optical frame
(z forward, x right, y down; the frame the calibration's camera pose refers to).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils import UserError

SUPPORTED_RESOLUTIONS = ((1280, 720), (640, 480))


def _import_realsense():
    """pyrealsense2, imported only when a RealSense is opened (it needs libusb at import time)."""
    try:
        import pyrealsense2 as rs
    except ImportError as error:
        if "libusb" in str(error):
            raise UserError("pyrealsense2 needs the USB library: apt-get install libusb-1.0-0") from None
        raise UserError(f"cannot import pyrealsense2 ({' '.join(str(error).split())}): "
                        "pip install pyrealsense2") from None
    return rs


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def nominal_intrinsics(width: int, height: int) -> np.ndarray:
    """A D435-like colour camera (SPEC section 2's focal length at 640x480, scaled)."""
    f = 618.62 * width / 640.0
    return intrinsics_matrix(f, f, width / 2.0, height / 2.0)


def depth_to_metres(raw_depth: np.ndarray, depth_unit_m: float) -> np.ndarray:
    """Raw depth units -> float32 metres; 0 (no return) -> NaN."""
    depth = raw_depth.astype(np.float32) * np.float32(depth_unit_m)
    depth[raw_depth == 0] = np.nan
    return depth


class RealSenseCamera:
    """Intel RealSense (D415/D435/...) colour + depth, depth aligned to colour.

    width x height: 1280x720 (the paper's set-up) or 640x480; fps 30 (6/15 also work).
    serial: pick one camera when several are plugged in. warmup_frames are dropped at start so
    auto-exposure settles. Intrinsics are the colour stream's, read from the device.
    """

    def __init__(self, width: int = 1280, height: int = 720, fps: int = 30, serial: str | None = None,
                 warmup_frames: int = 30, timeout_ms: int = 5000) -> None:
        if (width, height) not in SUPPORTED_RESOLUTIONS:
            raise UserError(f"RealSense resolution {width}x{height} is not one of "
                            f"{', '.join(f'{w}x{h}' for w, h in SUPPORTED_RESOLUTIONS)}")
        rs = _import_realsense()
        self._rs = rs
        self.timeout_ms = timeout_ms
        self._pipeline = rs.pipeline()
        config = rs.config()
        if serial:
            config.enable_device(serial)
        config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        try:
            profile = self._pipeline.start(config)
        except RuntimeError as error:
            raise UserError(f"cannot start the RealSense camera{' ' + serial if serial else ''} at {width}x{height}@"
                            f"{fps}: {' '.join(str(error).split())}") from None
        self.depth_unit_m = float(profile.get_device().first_depth_sensor().get_depth_scale())
        color = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self._intrinsics = intrinsics_matrix(color.fx, color.fy, color.ppx, color.ppy)
        self._align = rs.align(rs.stream.color)
        try:
            for _ in range(warmup_frames):  # auto-exposure settles; a camera that streams nothing fails here
                self._pipeline.wait_for_frames(self.timeout_ms)
        except RuntimeError as error:
            self.close()
            raise UserError(f"RealSense camera{' ' + serial if serial else ''} started but sent no frame within "
                            f"{self.timeout_ms} ms: {' '.join(str(error).split())} (check the USB 3 cable)") from None

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics.copy()

    def get_frames(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            frames = self._align.process(self._pipeline.wait_for_frames(self.timeout_ms))
        except RuntimeError as error:
            raise UserError(f"RealSense gave no frame within {self.timeout_ms} ms: {' '.join(str(error).split())}") from None
        depth_frame, color_frame = frames.get_depth_frame(), frames.get_color_frame()
        if not depth_frame or not color_frame:
            raise UserError("RealSense returned an incomplete frame (colour or depth missing)")
        color = np.asanyarray(color_frame.get_data()).copy()
        depth = depth_to_metres(np.asanyarray(depth_frame.get_data()), self.depth_unit_m)
        return color, depth

    def close(self) -> None:
        pipeline, self._pipeline = getattr(self, "_pipeline", None), None
        if pipeline is not None:
            pipeline.stop()


class ArrayCamera:
    """In-memory frames, replayed in order and then cycled (tests, dry runs)."""

    def __init__(self, frames: list[tuple[np.ndarray, np.ndarray]], intrinsics: np.ndarray) -> None:
        if not frames:
            raise UserError("ArrayCamera needs at least one (colour, depth) frame")
        self.frames = frames
        self._intrinsics = np.asarray(intrinsics, dtype=float)
        self._next = 0

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics.copy()

    def get_frames(self) -> tuple[np.ndarray, np.ndarray]:
        color, depth = self.frames[self._next % len(self.frames)]
        self._next += 1
        return color.copy(), depth.astype(np.float32, copy=True)


INTRINSICS_FILE = "camera-intrinsics.txt"  # logger.py's name in a session's info/
# A real colour camera's principal point lies near the image centre; one far off means the
# intrinsics belong to another resolution (e.g. 640x480 ones applied to 1280x720 frames).
PRINCIPAL_POINT_TOLERANCE = 0.15


def find_session_intrinsics(directory: Path) -> Path | None:
    """The camera-intrinsics.txt of the session a frame folder belongs to (its info/ folder)."""
    for candidate in (directory / INTRINSICS_FILE, directory / "info" / INTRINSICS_FILE,
                      directory.parent / "info" / INTRINSICS_FILE):
        if candidate.is_file():
            return candidate
    return None


class FileCamera:
    """Replays saved frames: `*.color.png` (RGB saved by OpenCV as BGR) + `*.depth.png` (uint16).

    directory: a folder holding both kinds of files, a session's `data/` folder with
    `color-images/` and `depth-images/` (SPEC section 7: depth images in 1e-4 m units), or the
    session folder itself. intrinsics: a (3, 3) array, a text file (np.savetxt format), or None:
    the session's own `info/camera-intrinsics.txt`, found next to the frames. Each frame must fit
    them (principal point near its centre). loop: start again after the last frame, else UserError.
    """

    def __init__(self, directory: str | Path, intrinsics: np.ndarray | str | Path | None = None,
                 depth_unit_m: float = 1e-4, loop: bool = True) -> None:
        directory = Path(directory)
        if (directory / "data").is_dir() and not (directory / "color-images").is_dir():
            directory = directory / "data"  # a session folder
        if intrinsics is None:
            intrinsics = find_session_intrinsics(directory)
            if intrinsics is None:
                raise UserError(f"no {INTRINSICS_FILE} for the frames in {directory} (looked in it, its info/ and "
                                f"../info/): replay a session's data/ folder, or put the camera's intrinsics there")
        color_dir = directory / "color-images" if (directory / "color-images").is_dir() else directory
        depth_dir = directory / "depth-images" if (directory / "depth-images").is_dir() else directory
        colors = {_frame_key(p): p for p in sorted(color_dir.glob("*.color.png"))}
        depths = {_frame_key(p): p for p in sorted(depth_dir.glob("*.depth.png"))}
        keys = sorted(colors.keys() & depths.keys())
        if not keys:
            raise UserError(f"no matching *.color.png / *.depth.png pairs in {directory}")
        self.pairs = [(colors[k], depths[k]) for k in keys]
        if isinstance(intrinsics, (str, Path)):
            try:
                intrinsics = np.loadtxt(intrinsics)
            except (OSError, ValueError) as error:
                raise UserError(f"cannot read camera intrinsics {intrinsics}: {error}") from None
        self._intrinsics = np.asarray(intrinsics, dtype=float)
        if self._intrinsics.shape != (3, 3) or not np.all(np.isfinite(self._intrinsics)):
            raise UserError(f"camera intrinsics must be a finite 3x3 matrix, got shape {self._intrinsics.shape}")
        self.depth_unit_m = depth_unit_m
        self.loop = loop
        self._next = 0

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics.copy()

    def get_frames(self) -> tuple[np.ndarray, np.ndarray]:
        if self._next >= len(self.pairs) and not self.loop:
            raise UserError(f"FileCamera replayed all {len(self.pairs)} frames")
        color_path, depth_path = self.pairs[self._next % len(self.pairs)]
        self._next += 1
        bgr = cv2.imread(str(color_path), cv2.IMREAD_COLOR)
        raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        if bgr is None or raw is None:
            raise UserError(f"cannot read frame {color_path.name} / {depth_path.name}")
        if raw.shape != bgr.shape[:2]:
            raise UserError(f"depth {depth_path.name} is {raw.shape}, colour is {bgr.shape[:2]}: not aligned")
        height, width = raw.shape
        cx, cy = self._intrinsics[0, 2], self._intrinsics[1, 2]
        if abs(cx - width / 2) > PRINCIPAL_POINT_TOLERANCE * width or \
                abs(cy - height / 2) > PRINCIPAL_POINT_TOLERANCE * height:
            raise UserError(f"camera intrinsics (principal point {cx:g}, {cy:g}) do not belong to the "
                            f"{width}x{height} frame {color_path.name}: give the intrinsics of the session "
                            "that recorded it")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth_to_metres(raw, self.depth_unit_m)


def _frame_key(path: Path) -> str:
    return re.sub(r"\.(color|depth)\.png$", "", path.name)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in the base frame (m) with one RGB colour (0..255)."""

    center_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    rgb: tuple[int, int, int]


def camera_rays(intrinsics: np.ndarray, width: int, height: int, camera_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray origin (3,) and directions (H*W, 3) in the base frame, scaled so camera z = 1.

    With this scaling the ray parameter at a hit is the hit's camera-frame depth (z) in metres.
    """
    u, v = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    directions = np.stack([(u.ravel() - intrinsics[0, 2]) / intrinsics[0, 0],
                           (v.ravel() - intrinsics[1, 2]) / intrinsics[1, 1], np.ones(u.size)], axis=1)
    return camera_pose[:3, 3].copy(), directions @ camera_pose[:3, :3].T


class SyntheticTableCamera:
    """Ray-cast a flat table (z = table_z_m) and axis-aligned boxes: a camera for dry runs and tests.

    Depth is the exact z-depth of the first hit (NaN where a ray misses everything), colour is
    the hit surface's flat colour. No noise unless depth_noise_m > 0 (Gaussian, seeded).
    """

    def __init__(self, intrinsics: np.ndarray, camera_pose: np.ndarray, width: int = 640, height: int = 480,
                 table_z_m: float = 0.0, table_rgb: tuple[int, int, int] = (120, 120, 120),
                 boxes: list[Box] | None = None, depth_noise_m: float = 0.0, seed: int = 0) -> None:
        self._intrinsics = np.asarray(intrinsics, dtype=float)
        self.camera_pose = np.asarray(camera_pose, dtype=float)
        self.width, self.height = width, height
        self.table_z_m, self.table_rgb = table_z_m, table_rgb
        self.boxes = list(boxes or [])
        self.depth_noise_m = depth_noise_m
        self._rng = np.random.default_rng(seed)

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics.copy()

    def get_frames(self) -> tuple[np.ndarray, np.ndarray]:
        origin, directions = camera_rays(self._intrinsics, self.width, self.height, self.camera_pose)
        depth = np.full(len(directions), np.inf)
        color = np.zeros((len(directions), 3), dtype=np.uint8)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_table = (self.table_z_m - origin[2]) / directions[:, 2]
        hit = np.isfinite(t_table) & (t_table > 0)
        depth[hit] = t_table[hit]
        color[hit] = self.table_rgb
        for box in self.boxes:
            t_box = ray_box_intersection(origin, directions, np.asarray(box.center_m), np.asarray(box.size_m))
            closer = t_box < depth
            depth[closer] = t_box[closer]
            color[closer] = box.rgb
        depth[~np.isfinite(depth)] = np.nan
        if self.depth_noise_m > 0:
            depth = depth + self._rng.normal(0.0, self.depth_noise_m, depth.shape)
        return (color.reshape(self.height, self.width, 3),
                depth.reshape(self.height, self.width).astype(np.float32))


def ray_box_intersection(origin: np.ndarray, directions: np.ndarray, center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Entry parameter t of each ray into an axis-aligned box (slab method); inf where it misses."""
    low, high = center - size / 2, center + size / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (low - origin) / directions
        t2 = (high - origin) / directions
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (t_near <= t_far) & (t_far > 0)
    return np.where(hit, np.maximum(t_near, 0.0), np.inf)
