"""Camera-to-robot calibration: marker detection, the rigid-transform solver, calibration files.

Procedure (real/README.md has the operator's version): the tool holds a flat marker (a small
checkerboard or an ArUco marker) facing the camera; the robot visits a grid of positions inside
the workspace; at each one the marker centre is found in the colour image, its depth read from
the aligned depth image, and back-projected to a point in the camera frame (m). The same point
in the robot base frame follows from the robot's TCP pose and the marker's offset in the TCP
frame. The camera-to-base transform T and a depth scale s minimise
    sum_i | base_i - (R (s * camera_i) + t) |^2
(Umeyama's closed form with SVD, then an optional robust refinement). s absorbs the sensor's
depth bias: multiplying depth by s scales each back-projected point by s.

Files (text, numpy.savetxt): `camera_pose.txt` (4x4 camera-to-base, camera frame = colour
optical frame: z forward, x right, y down) and `camera_depth_scale.txt` (one number).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from utils import UserError

from real.motion import Waypoint

LOG = logging.getLogger(__name__)

DEFAULT_CALIBRATION_DIR = Path(__file__).resolve().parent
CAMERA_POSE_FILE = "camera_pose.txt"
DEPTH_SCALE_FILE = "camera_depth_scale.txt"
CALIBRATION_POINTS_FILE = "calibration_points.txt"
ORTHONORMAL_TOLERANCE = 1e-3
DEPTH_SCALE_RANGE = (0.8, 1.2)  # a RealSense is never off by more than this; beyond it, a bad file


# --- solver ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationResult:
    camera_pose: np.ndarray  # (4, 4) camera-to-base
    depth_scale: float  # true depth / camera depth
    residuals_m: np.ndarray  # (N,) distance of each base point from its transformed camera point

    @property
    def rms_m(self) -> float:
        return float(np.sqrt(np.mean(self.residuals_m ** 2)))


def umeyama(source: np.ndarray, target: np.ndarray, estimate_scale: bool = True) -> tuple[np.ndarray, float]:
    """Least-squares (R, t, s) with target ~ s R source + t (Umeyama 1991); returns (4x4 [R t], s)."""
    source, target = np.asarray(source, dtype=float), np.asarray(target, dtype=float)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    centred_s, centred_t = source - mean_s, target - mean_t
    covariance = centred_t.T @ centred_s / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    d = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection would fit better: forbid it
        d[2, 2] = -1.0
    rotation = u @ d @ vt
    variance_s = np.mean(np.sum(centred_s ** 2, axis=1))
    scale = float(np.trace(np.diag(singular) @ d) / variance_s) if estimate_scale else 1.0
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = mean_t - scale * rotation @ mean_s
    return pose, scale


def residuals_m(camera_points: np.ndarray, base_points: np.ndarray, pose: np.ndarray, scale: float) -> np.ndarray:
    predicted = scale * np.asarray(camera_points) @ pose[:3, :3].T + pose[:3, 3]
    return np.linalg.norm(predicted - np.asarray(base_points), axis=1)


def solve_camera_pose(camera_points: np.ndarray, base_points: np.ndarray, estimate_scale: bool = True,
                      refine: bool = True, robust_scale_m: float = 0.005) -> CalibrationResult:
    """Camera-to-base pose (and depth scale) from N >= 4 point pairs (m).

    refine: after the closed form, minimise a Huber loss (scale robust_scale_m) over the 6-DoF
    pose and log-scale, so one bad detection does not drag the whole solution.
    """
    camera_points = np.asarray(camera_points, dtype=float).reshape(-1, 3)
    base_points = np.asarray(base_points, dtype=float).reshape(-1, 3)
    if len(camera_points) != len(base_points):
        raise UserError(f"calibration needs pairs: {len(camera_points)} camera points vs {len(base_points)} robot points")
    if len(camera_points) < 4:
        raise UserError(f"calibration needs at least 4 marker detections, got {len(camera_points)}")
    if not (np.all(np.isfinite(camera_points)) and np.all(np.isfinite(base_points))):
        raise UserError("calibration points contain NaN or infinite values")
    spread = np.linalg.svd(base_points - base_points.mean(axis=0), compute_uv=False)
    if spread[1] < 1e-3 * np.sqrt(len(base_points)):  # all points (nearly) on a line: pose undefined
        raise UserError("calibration positions are (nearly) collinear: use a 3-D grid of positions")
    pose, scale = umeyama(camera_points, base_points, estimate_scale)
    if refine:
        def cost(params: np.ndarray) -> np.ndarray:
            candidate = np.eye(4)
            candidate[:3, :3] = Rotation.from_rotvec(params[:3]).as_matrix()
            candidate[:3, 3] = params[3:6]
            s = float(np.exp(params[6])) if estimate_scale else 1.0
            return (s * camera_points @ candidate[:3, :3].T + candidate[:3, 3] - base_points).ravel()

        start = np.concatenate([Rotation.from_matrix(pose[:3, :3]).as_rotvec(), pose[:3, 3], [np.log(scale)]])
        fit = least_squares(cost, start, loss="huber", f_scale=robust_scale_m)
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_rotvec(fit.x[:3]).as_matrix()
        pose[:3, 3] = fit.x[3:6]
        scale = float(np.exp(fit.x[6])) if estimate_scale else 1.0
    return CalibrationResult(pose, scale, residuals_m(camera_points, base_points, pose, scale))


def pose_error(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(rotation error deg, translation error m) between two 4x4 poses."""
    relative = estimate[:3, :3].T @ truth[:3, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0)))
    return float(angle), float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3]))


# --- files -------------------------------------------------------------------------------------
def validate_pose(pose: np.ndarray, source: str) -> np.ndarray:
    """The one check every camera pose passes; UserError naming the file and the problem."""
    pose = np.asarray(pose, dtype=float)
    hint = "re-run `python -m real.calibrate`"
    if pose.shape != (4, 4):
        raise UserError(f"camera pose {source} must be a 4x4 matrix, got shape {pose.shape}: {hint}")
    if not np.all(np.isfinite(pose)):
        raise UserError(f"camera pose {source} contains NaN or infinite values: {hint}")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise UserError(f"camera pose {source} last row must be 0 0 0 1, got {pose[3].tolist()}: {hint}")
    rotation = pose[:3, :3]
    error = float(np.max(np.abs(rotation.T @ rotation - np.eye(3))))
    if error > ORTHONORMAL_TOLERANCE or np.linalg.det(rotation) < 0:
        raise UserError(f"camera pose {source} rotation is not orthonormal (max |R^T R - I| = {error:.2g}, "
                        f"det = {np.linalg.det(rotation):.3f}): {hint}")
    return pose


def load_camera_pose(path: str | Path) -> np.ndarray:
    """Read and validate a 4x4 camera-to-base pose file (whitespace-separated numbers)."""
    try:
        with warnings.catch_warnings():  # an empty file is the error below, not a warning too
            warnings.simplefilter("ignore", UserWarning)
            pose = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read camera pose {path}: {' '.join(str(error).split()).rstrip('.')}: "
                        "run `python -m real.calibrate` first") from None
    return validate_pose(pose, str(path))


def load_depth_scale(path: str | Path) -> float:
    """Read and validate the depth scale file (one positive number near 1)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            values = np.loadtxt(path, ndmin=1).ravel()
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read depth scale {path}: {' '.join(str(error).split())}") from None
    if values.size != 1 or not np.isfinite(values[0]) or not DEPTH_SCALE_RANGE[0] <= values[0] <= DEPTH_SCALE_RANGE[1]:
        raise UserError(f"depth scale {path} must hold one number in {list(DEPTH_SCALE_RANGE)}, got {values.tolist()}")
    return float(values[0])


def save_calibration(result: CalibrationResult, directory: str | Path, camera_points: np.ndarray | None = None,
                     base_points: np.ndarray | None = None) -> list[Path]:
    """Write camera_pose.txt, camera_depth_scale.txt (and the point pairs for inspection)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    validate_pose(result.camera_pose, "(solved)")
    written = [directory / CAMERA_POSE_FILE, directory / DEPTH_SCALE_FILE]
    np.savetxt(written[0], result.camera_pose, delimiter=" ")
    np.savetxt(written[1], [result.depth_scale], delimiter=" ")
    if camera_points is not None and base_points is not None:
        written.append(directory / CALIBRATION_POINTS_FILE)
        np.savetxt(written[2], np.hstack([camera_points, base_points, result.residuals_m[:, None]]),
                   header="camera_x camera_y camera_z base_x base_y base_z residual (m)")
    return written


# --- marker detection --------------------------------------------------------------------------
def line_intersection(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, p4: np.ndarray) -> np.ndarray:
    """Intersection of lines p1-p2 and p3-p4 (2-D): a square's centre under perspective."""
    a = np.array([p2 - p1, -(p4 - p3)]).T
    t = np.linalg.solve(a, p3 - p1)
    return p1 + t[0] * (p2 - p1)


def detect_checkerboard_center(color: np.ndarray, inner_corners: tuple[int, int] = (3, 3)) -> np.ndarray | None:
    """Pixel (u, v) of the middle inner corner of a checkerboard (odd x odd inner corners), or None."""
    if inner_corners[0] % 2 == 0 or inner_corners[1] % 2 == 0:
        raise UserError(f"checkerboard inner corners must be odd x odd so one corner is the centre, got {inner_corners}")
    gray = cv2.cvtColor(color, cv2.COLOR_RGB2GRAY)
    found, corners = cv2.findChessboardCorners(gray, inner_corners, flags=cv2.CALIB_CB_ADAPTIVE_THRESH)
    if not found:
        return None
    corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1),
                               (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01))
    return corners.reshape(-1, 2)[len(corners) // 2].astype(float)


def detect_aruco_center(color: np.ndarray, dictionary: str = "DICT_4X4_50", marker_id: int = 0) -> np.ndarray | None:
    """Pixel (u, v) of the centre (diagonals' intersection) of ArUco marker `marker_id`, or None."""
    if not hasattr(cv2.aruco, dictionary):
        raise UserError(f"unknown ArUco dictionary {dictionary} (e.g. DICT_4X4_50, DICT_5X5_100)")
    detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)),
                                       cv2.aruco.DetectorParameters())
    corners, ids, _ = detector.detectMarkers(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY))
    if ids is None:
        return None
    for quad, found_id in zip(corners, ids.ravel()):
        if int(found_id) == marker_id:
            c = quad.reshape(4, 2).astype(float)
            return line_intersection(c[0], c[2], c[1], c[3])
    return None


def pixel_to_camera_point(pixel: np.ndarray, depth_m: np.ndarray, intrinsics: np.ndarray,
                          window_px: int = 2) -> np.ndarray | None:
    """Back-project pixel (u, v) with the median valid depth in a (2w+1)^2 window; None if no depth."""
    u, v = float(pixel[0]), float(pixel[1])
    col, row = int(round(u)), int(round(v))
    patch = depth_m[max(row - window_px, 0):row + window_px + 1, max(col - window_px, 0):col + window_px + 1]
    valid = patch[np.isfinite(patch) & (patch > 0)]
    if valid.size == 0:
        return None
    z = float(np.median(valid))
    return np.array([(u - intrinsics[0, 2]) * z / intrinsics[0, 0], (v - intrinsics[1, 2]) * z / intrinsics[1, 1], z])


def make_detector(marker: str, checkerboard_inner_corners: tuple[int, int] = (3, 3), aruco_dictionary: str = "DICT_4X4_50",
                  aruco_id: int = 0) -> Callable[[np.ndarray], np.ndarray | None]:
    if marker == "checkerboard":
        return lambda color: detect_checkerboard_center(color, checkerboard_inner_corners)
    if marker == "aruco":
        return lambda color: detect_aruco_center(color, aruco_dictionary, aruco_id)
    raise UserError(f"unknown marker '{marker}': use checkerboard or aruco")


# --- data collection ---------------------------------------------------------------------------
def calibration_grid(workspace_limits_m: np.ndarray, counts: tuple[int, int, int] = (3, 3, 3),
                     heights_m: tuple[float, float] = (0.05, 0.25), margin_m: float = 0.05) -> np.ndarray:
    """(N, 3) tool points on a grid inside the workspace: xy inset by margin, z = table + heights."""
    limits = np.asarray(workspace_limits_m, dtype=float)
    if min(counts) < 1 or int(np.prod(counts)) < 4:
        raise UserError(f"calibration grid {counts} has fewer than 4 positions")
    axes = []
    for axis, count in enumerate(counts[:2]):
        low, high = limits[axis][0] + margin_m, limits[axis][1] - margin_m
        if low >= high:
            raise UserError(f"workspace axis {'xy'[axis]} is narrower than twice the margin {margin_m} m")
        axes.append(np.linspace(low, high, count) if count > 1 else np.array([(low + high) / 2]))
    z_low, z_high = limits[2][0] + heights_m[0], min(limits[2][0] + heights_m[1], limits[2][1])
    axes.append(np.linspace(z_low, z_high, counts[2]) if counts[2] > 1 else np.array([z_low]))
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def marker_point_in_base(tcp_pose: np.ndarray, marker_offset_m: np.ndarray) -> np.ndarray:
    """Marker centre in the base frame from a TCP pose [x y z rx ry rz] and its offset in the TCP frame."""
    tcp_pose = np.asarray(tcp_pose, dtype=float)
    return tcp_pose[:3] + Rotation.from_rotvec(tcp_pose[3:]).as_matrix() @ np.asarray(marker_offset_m, dtype=float)


def collect_pairs(arm, camera, tool_points: np.ndarray, tool_rotvec: np.ndarray, marker_offset_m: np.ndarray,
                  detector: Callable[[np.ndarray], np.ndarray | None], speed_m_s: float = 0.1,
                  acceleration_m_s2: float = 0.5, settle: Callable[[], None] | None = None,
                  report: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray]:
    """Visit each tool point, detect the marker, return (camera points (N, 3), base points (N, 3)).

    The base point uses the TCP pose the robot reports after the move (not the commanded one),
    so small tracking errors do not enter the calibration. Positions where the marker is not
    seen, or has no depth, are skipped with a note. Every position passes the arm's checks
    (local envelope, the controller's limits) before the first move.
    """
    waypoints = [Waypoint(np.concatenate([point, tool_rotvec]), speed_m_s, acceleration_m_s2, f"calib-{index}")
                 for index, point in enumerate(tool_points)]
    try:
        arm.check(waypoints)
    except UserError as error:
        raise UserError(f"calibration refused before anything moved: {error}") from None
    camera_points, base_points = [], []
    for index, (point, waypoint) in enumerate(zip(tool_points, waypoints)):
        arm.move_linear(waypoint)
        if settle is not None:
            settle()  # let the arm stop vibrating and the camera expose a fresh frame
        color, depth = camera.get_frames()
        pixel = detector(color)
        if pixel is None:
            report(f"  position {index + 1}/{len(tool_points)} {np.round(point, 3).tolist()}: marker not found, skipped")
            continue
        camera_point = pixel_to_camera_point(pixel, depth, camera.intrinsics)
        if camera_point is None:
            report(f"  position {index + 1}/{len(tool_points)}: no depth at the marker centre, skipped")
            continue
        camera_points.append(camera_point)
        base_points.append(marker_point_in_base(arm.tcp_pose(), marker_offset_m))
        report(f"  position {index + 1}/{len(tool_points)}: marker at pixel {np.round(pixel, 1).tolist()}, "
               f"depth {camera_point[2]:.3f} m")
    return np.array(camera_points).reshape(-1, 3), np.array(base_points).reshape(-1, 3)


# --- checks --------------------------------------------------------------------------------------
def table_plane_check(depth_m: np.ndarray, intrinsics: np.ndarray, camera_pose: np.ndarray, depth_scale: float,
                      workspace_limits_m: np.ndarray, band_m: float = 0.03) -> tuple[float, float, float]:
    """Fit a plane to the (empty) table seen through a calibration.

    Returns (median table height m relative to the workspace z min, tilt deg, fraction of
    workspace pixels used). A good calibration gives |height| of a few mm and tilt < 1 deg.
    """
    from utils import depth_to_camera_points, transform_points

    points = transform_points(depth_to_camera_points(np.asarray(depth_m, dtype=float) * depth_scale, intrinsics), camera_pose)
    limits = np.asarray(workspace_limits_m, dtype=float)
    with np.errstate(invalid="ignore"):
        inside = (np.all(np.isfinite(points), axis=1)
                  & (points[:, 0] >= limits[0][0]) & (points[:, 0] <= limits[0][1])
                  & (points[:, 1] >= limits[1][0]) & (points[:, 1] <= limits[1][1]))
    near_table = inside & (np.abs(points[:, 2] - limits[2][0]) < band_m)
    if near_table.sum() < 100:
        raise UserError("fewer than 100 depth points lie near the table inside the workspace: "
                        "the calibration (or the view) is badly off")
    table = points[near_table]
    design = np.column_stack([table[:, 0], table[:, 1], np.ones(len(table))])
    (a, b, _), *_ = np.linalg.lstsq(design, table[:, 2], rcond=None)
    tilt_deg = float(np.degrees(np.arctan(np.hypot(a, b))))
    return float(np.median(table[:, 2]) - limits[2][0]), tilt_deg, float(near_table.sum() / max(inside.sum(), 1))


# --- synthetic views (dry run, tests) ----------------------------------------------------------
def look_at_pose(eye_m: np.ndarray, target_m: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """Camera-to-base pose looking from eye to target (camera z forward, x right, y down)."""
    eye_m, target_m = np.asarray(eye_m, dtype=float), np.asarray(target_m, dtype=float)
    z = target_m - eye_m
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at_pose: viewing direction parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([x, y, z])
    pose[:3, 3] = eye_m
    return pose


def make_marker_texture(marker: str, pixels_per_square: int = 40, checkerboard_squares: int = 4,
                        aruco_dictionary: str = "DICT_4X4_50", aruco_id: int = 0) -> tuple[np.ndarray, float]:
    """(uint8 grey texture with a one-square white margin, margin-to-margin size in squares).

    The checkerboard has `checkerboard_squares` x `checkerboard_squares` squares; the ArUco marker
    fills the same area (one "square" = one marker cell of a 4x4 marker + border).
    """
    if marker == "checkerboard":
        n = checkerboard_squares
        board = (np.indices((n, n)).sum(axis=0) % 2 == 0).astype(np.uint8) * 255
        board = np.kron(board, np.ones((pixels_per_square, pixels_per_square), dtype=np.uint8))
        texture = np.pad(255 - board, pixels_per_square, constant_values=255)
        return texture, float(n + 2)
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, aruco_dictionary))
    side = pixels_per_square * 4
    image = cv2.aruco.generateImageMarker(dictionary, aruco_id, side)
    return np.pad(image, pixels_per_square, constant_values=255), 6.0


class SyntheticMarkerCamera:
    """Renders the marker held by an arm (any object with tcp_pose()) over a flat grey table.

    The marker lies in the TCP's xy plane at `marker_offset_m` (TCP frame), its texture's
    x/y along the TCP's x/y (seen from the side its z axis points away from: a tool pointing
    down shows it to a camera above). Depth is reported as true depth / depth_scale plus Gaussian
    noise, so a solver should find depth_scale back.
    """

    def __init__(self, arm, intrinsics: np.ndarray, camera_pose: np.ndarray, width: int, height: int,
                 marker: str = "checkerboard", square_size_m: float = 0.02, marker_offset_m=(0.0, 0.0, 0.0),
                 depth_scale: float = 1.0, depth_noise_m: float = 0.001, table_z_m: float = 0.0, seed: int = 0) -> None:
        self.arm = arm
        self._intrinsics = np.asarray(intrinsics, dtype=float)
        self.camera_pose = np.asarray(camera_pose, dtype=float)
        self.width, self.height = width, height
        self.texture, squares = make_marker_texture(marker)
        self.marker_size_m = squares * square_size_m
        self.marker_offset_m = np.asarray(marker_offset_m, dtype=float)
        self.depth_scale, self.depth_noise_m, self.table_z_m = depth_scale, depth_noise_m, table_z_m
        self._rng = np.random.default_rng(seed)

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics.copy()

    def get_frames(self) -> tuple[np.ndarray, np.ndarray]:
        from real.camera import camera_rays

        tcp = np.asarray(self.arm.tcp_pose(), dtype=float)
        rotation = Rotation.from_rotvec(tcp[3:]).as_matrix()
        center = marker_point_in_base(tcp, self.marker_offset_m)
        n_px = self.texture.shape[0]
        # texture pixel (x, y, 1) -> marker-plane coordinates (a, b, 1), metres from the centre
        texel = np.array([[self.marker_size_m / n_px, 0.0, self.marker_size_m * (0.5 / n_px - 0.5)],
                          [0.0, self.marker_size_m / n_px, self.marker_size_m * (0.5 / n_px - 0.5)],
                          [0.0, 0.0, 1.0]])
        base_to_camera = np.linalg.inv(self.camera_pose)
        r_cm = base_to_camera[:3, :3] @ rotation
        t_cm = base_to_camera[:3, :3] @ center + base_to_camera[:3, 3]
        homography = self._intrinsics @ np.column_stack([r_cm[:, 0], r_cm[:, 1], t_cm]) @ texel
        size = (self.width, self.height)
        marker_gray = cv2.warpPerspective(self.texture, homography, size, flags=cv2.INTER_LINEAR)
        coverage = cv2.warpPerspective(np.full_like(self.texture, 255), homography, size, flags=cv2.INTER_LINEAR)
        # depth: the marker plane where it covers the pixel, the table elsewhere
        origin, directions = camera_rays(self._intrinsics, self.width, self.height, self.camera_pose)
        normal = rotation[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_marker = (normal @ (center - origin)) / (directions @ normal)
            t_table = (self.table_z_m - origin[2]) / directions[:, 2]
        covered = coverage.ravel() > 127
        depth = np.where(covered, t_marker, t_table)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
        depth = depth / self.depth_scale + self._rng.normal(0.0, self.depth_noise_m, depth.shape)
        weight = coverage.astype(np.float32) / 255.0
        gray = weight * marker_gray + (1.0 - weight) * 110.0
        color = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return color, depth.reshape(self.height, self.width).astype(np.float32)


def synthetic_pairs(true_pose: np.ndarray, tool_points: np.ndarray, depth_scale: float = 1.0,
                    noise_m: float = 0.001, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Point pairs as a perfect detector would see them, with Gaussian noise (m) on the camera side."""
    rng = np.random.default_rng(seed)
    base_to_camera = np.linalg.inv(true_pose)
    camera = tool_points @ base_to_camera[:3, :3].T + base_to_camera[:3, 3]
    camera = camera / depth_scale + rng.normal(0.0, noise_m, camera.shape)
    return camera, np.asarray(tool_points, dtype=float)
