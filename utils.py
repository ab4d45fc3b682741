"""Workspace geometry, heightmaps, masks and the small image rules of SPEC section 3.

Every function here is pure numpy/OpenCV: perception never imports a simulator or torch.
Frames: the robot base frame, metres. Heightmap pixel (row, col) = (y, x):
x = xmin + col * res, y = ymin + row * res.
"""
from __future__ import annotations

import functools

import numpy as np

# SPEC section 2: the one definition of the workspace; everything else imports these.
WORKSPACE_LIMITS_M = np.array([[-0.724, -0.276], [-0.224, 0.224], [-0.0001, 0.4]])
HEIGHTMAP_RESOLUTION_M = 0.002
NUM_ROTATIONS = 16
ROTATION_STEP_RAD = 2 * np.pi / NUM_ROTATIONS


class UserError(Exception):
    """Bad user input or an unreachable device: main prints its message on one line, exits 2."""


def heightmap_shape(workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                    resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> tuple[int, int]:
    """(rows, cols) of the heightmap grid: rows span y, cols span x. 224 x 224 by default."""
    rows = int(round((workspace_limits_m[1][1] - workspace_limits_m[1][0]) / resolution_m))
    cols = int(round((workspace_limits_m[0][1] - workspace_limits_m[0][0]) / resolution_m))
    return rows, cols


def pixel_to_base_xy(row: float, col: float, workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                     resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> tuple[float, float]:
    """Heightmap pixel -> base-frame (x, y) metres (SPEC section 2)."""
    return (float(workspace_limits_m[0][0] + col * resolution_m),
            float(workspace_limits_m[1][0] + row * resolution_m))


def base_xy_to_pixel(x_m: np.ndarray | float, y_m: np.ndarray | float,
                     workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                     resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> tuple[np.ndarray, np.ndarray]:
    """Base-frame (x, y) metres -> (row, col) pixel indices (floor), the inverse of pixel_to_base_xy."""
    col = np.floor((np.asarray(x_m) - workspace_limits_m[0][0]) / resolution_m).astype(int)
    row = np.floor((np.asarray(y_m) - workspace_limits_m[1][0]) / resolution_m).astype(int)
    return row, col


def depth_to_camera_points(depth_m: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Back-project a depth image (H, W) metres to camera-frame points (H*W, 3) metres."""
    height, width = depth_m.shape
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    z = depth_m.reshape(-1)
    x = (u.reshape(-1) - intrinsics[0, 2]) * z / intrinsics[0, 0]
    y = (v.reshape(-1) - intrinsics[1, 2]) * z / intrinsics[1, 1]
    return np.stack([x, y, z], axis=1)


def transform_points(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) rigid transform to (N, 3) points.

    einsum, not `@`: a 3-column matmul goes through multi-threaded OpenBLAS, which is 6x slower
    on a busy 2-core machine (measured: 26 ms -> 170-250 ms per heightmap).
    """
    return np.einsum("ij,nj->ni", pose[:3, :3], points) + pose[:3, 3]


def get_heightmap(color: np.ndarray, depth_m: np.ndarray, intrinsics: np.ndarray, camera_pose: np.ndarray,
                  workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                  resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> tuple[np.ndarray, np.ndarray]:
    """Top-down colour and height maps from an RGB-D image (SPEC section 3).

    color: (H, W, 3) uint8; depth_m: (H, W) metres, NaN or <= 0 where invalid;
    camera_pose: (4, 4) camera-to-base. Returns colour (rows, cols, 3) uint8 and height
    (rows, cols) float32 metres above the table (z - zmin, negatives -> 0), NaN in cells no
    point fell into. The highest point of each cell wins, for height and colour alike.
    The same maps as get_heightmap_reference, bit for bit, through the cached HeightmapProjector of
    this camera (the camera is fixed: its per-pixel rays are computed once).
    """
    projector = heightmap_projector(intrinsics, camera_pose, np.shape(depth_m), workspace_limits_m, resolution_m)
    return projector(color, depth_m)


_PROJECTORS: dict[tuple, "HeightmapProjector"] = {}
_MAX_PROJECTORS = 8


def heightmap_projector(intrinsics: np.ndarray, camera_pose: np.ndarray, image_shape: tuple[int, int],
                        workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                        resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> "HeightmapProjector":
    """The HeightmapProjector of this camera, workspace and image size, built once (~50 ms) and reused."""
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    camera_pose = np.asarray(camera_pose, dtype=np.float64)
    workspace_limits_m = np.asarray(workspace_limits_m, dtype=np.float64)
    key = (intrinsics.tobytes(), camera_pose.tobytes(), workspace_limits_m.tobytes(), float(resolution_m),
           tuple(int(n) for n in image_shape))
    projector = _PROJECTORS.get(key)
    if projector is None:
        if len(_PROJECTORS) >= _MAX_PROJECTORS:
            _PROJECTORS.pop(next(iter(_PROJECTORS)))
        projector = _PROJECTORS[key] = HeightmapProjector(intrinsics, camera_pose, image_shape,
                                                          workspace_limits_m, resolution_m)
    return projector


class HeightmapProjector:
    """get_heightmap_reference for one fixed camera, with what does not depend on the image computed once.

    A pixel's point is depth * ray + camera origin, so its heightmap column, row and height are
    depth * a + b with per-pixel a, b precomputed; each pixel also gets the range of depths at which
    its point can fall inside the workspace, so one comparison per pixel discards the rest.
    Identical to the reference, bit for bit: heights use the reference's arithmetic, and a point
    whose cell coordinate lies within EDGE_EPS of a cell edge or workspace bound (where the two
    roundings could disagree) is projected again with the reference's arithmetic; the highest point
    of a cell wins, the last in image order among equals, as the reference's stable sort does.
    6-8 ms for 640x480 on a busy 2-core CPU, against 31-55 ms (bench/heightmap.py).
    """

    EDGE_EPS = 1e-6  # cells; the two roundings differ by ~1e-13 cells

    def __init__(self, intrinsics: np.ndarray, camera_pose: np.ndarray, image_shape: tuple[int, int],
                 workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M, resolution_m: float = HEIGHTMAP_RESOLUTION_M):
        self.intrinsics = np.array(intrinsics, dtype=np.float64)
        self.camera_pose = np.array(camera_pose, dtype=np.float64)
        self.image_shape = tuple(int(n) for n in image_shape)
        self.workspace_limits_m = np.array(workspace_limits_m, dtype=np.float64)
        self.resolution_m = float(resolution_m)
        self.shape = heightmap_shape(self.workspace_limits_m, self.resolution_m)
        k, pose, ws, res = self.intrinsics, self.camera_pose, self.workspace_limits_m, self.resolution_m
        height, width = self.image_shape
        u, v = np.meshgrid(np.arange(width), np.arange(height))
        self._pixel_u, self._pixel_v = (u - k[0, 2]).reshape(-1), (v - k[1, 2]).reshape(-1)
        ray_x, ray_y = self._pixel_u / k[0, 0], self._pixel_v / k[1, 1]
        rotation, origin = pose[:3, :3], pose[:3, 3]
        direction = [rotation[i, 0] * ray_x + rotation[i, 1] * ray_y + rotation[i, 2] for i in range(3)]
        rows, cols = self.shape
        self._col = (direction[0] / res, (origin[0] - ws[0][0]) / res)
        self._row = (direction[1] / res, (origin[1] - ws[1][0]) / res)
        self._z = (direction[2], origin[2])
        self._level_camera = bool(rotation[2, 0] == 0 and rotation[2, 1] == 0)  # optical axis vertical
        # x < xmax and col < cols (likewise y) in cell units; z < zmax in metres.
        self._col_max = min(float(cols), (ws[0][1] - ws[0][0]) / res)
        self._row_max = min(float(rows), (ws[1][1] - ws[1][0]) / res)
        self._z_max = float(ws[2][1])
        # Per pixel, the depths whose point lies inside the workspace: an interval, widened a little.
        low, high = np.zeros(ray_x.shape), np.full(ray_x.shape, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for (slope, offset), lower, upper in ((self._col, 0.0, self._col_max), (self._row, 0.0, self._row_max),
                                                   (self._z, -np.inf, self._z_max)):
                at_lower, at_upper = (lower - offset) / slope, (upper - offset) / slope
                always = (offset >= lower) & (offset < upper)  # where slope == 0
                first = np.where(slope == 0, -np.inf if always else np.inf, np.minimum(at_lower, at_upper))
                last = np.where(slope == 0, np.inf if always else -np.inf, np.maximum(at_lower, at_upper))
                low, high = np.maximum(low, first), np.minimum(high, last)
        margin = 1e-6 * np.maximum(np.abs(low), np.where(np.isfinite(high), np.abs(high), 0.0)) + 1e-9
        float32 = np.finfo(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            self._depth_low = np.maximum(np.nextafter(np.maximum(low - margin, 0.0).astype(np.float32),
                                                      np.float32(-np.inf)), float32.tiny)
            self._depth_high = np.minimum(np.nextafter(np.minimum(high + margin, float(float32.max)).astype(np.float32),
                                                       np.float32(np.inf)), float32.max)
        self._depth_low[~(low <= high)] = np.inf  # pixels that never see the workspace

    @staticmethod
    def _near(values: np.ndarray, targets: np.ndarray, eps: float) -> np.ndarray:
        """|values - targets| < eps, computed in targets' buffer."""
        np.subtract(values, targets, out=targets)
        np.abs(targets, out=targets)
        return targets < eps

    @classmethod
    def _near_edge(cls, values: np.ndarray, truncated: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """values within EDGE_EPS of an integer (truncated = values truncated to integers)."""
        np.subtract(values, truncated, out=scratch)  # the fraction, in [0, 1) where values >= 0
        near = scratch < cls.EDGE_EPS
        near |= scratch > 1.0 - cls.EDGE_EPS
        return near

    def __call__(self, color: np.ndarray, depth_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if np.shape(depth_m) != self.image_shape:
            raise ValueError(f"depth image {np.shape(depth_m)} is not this projector's {self.image_shape}")
        rows, cols = self.shape
        ws = self.workspace_limits_m
        depth = np.asarray(depth_m).reshape(-1)
        with np.errstate(invalid="ignore"):
            pixel = np.flatnonzero((depth >= self._depth_low) & (depth <= self._depth_high))
        z = depth[pixel].astype(np.float64)
        col_f = np.take(self._col[0], pixel)
        col_f *= z
        col_f += self._col[1]
        row_f = np.take(self._row[0], pixel)
        row_f *= z
        row_f += self._row[1]
        if self._level_camera:  # z = R22 * depth + t: the reference's arithmetic exactly (its 0 terms add 0)
            height = np.take(self._z[0], pixel)
            height *= z
        else:
            # The reference's own arithmetic (one row of transform_points' einsum), so that a
            # cell's top among near-equal heights (a flat table, tilted camera) is its top too.
            camera = np.empty((pixel.size, 3))
            np.multiply(np.take(self._pixel_u, pixel), z, out=camera[:, 0])
            camera[:, 0] /= self.intrinsics[0, 0]
            np.multiply(np.take(self._pixel_v, pixel), z, out=camera[:, 1])
            camera[:, 1] /= self.intrinsics[1, 1]
            camera[:, 2] = z
            height = np.einsum("j,nj->n", self.camera_pose[2, :3], camera)
        height += self.camera_pose[2, 3]
        scratch = z  # in place from here: fresh 1 MB arrays cost page faults
        col, row = col_f.astype(np.intp), row_f.astype(np.intp)  # floor where it matters (> 0)
        edge = self._near_edge(col_f, col, scratch)
        edge |= self._near_edge(row_f, row, scratch)
        for values, bound, eps in ((height, self._z_max, self.EDGE_EPS * self.resolution_m),
                                   (col_f, self._col_max if self._col_max != cols else None, self.EDGE_EPS),
                                   (row_f, self._row_max if self._row_max != rows else None, self.EDGE_EPS)):
            if bound is not None:  # a workspace bound that is not a cell edge
                scratch.fill(bound)
                edge |= self._near(values, scratch, eps)
        keep = col_f > 0
        keep &= col_f < self._col_max
        keep &= row_f > 0
        keep &= row_f < self._row_max
        keep &= height < self._z_max
        height -= ws[2][0]
        redo = np.flatnonzero(edge)
        if redo.size:  # the reference's arithmetic, for the few points on an edge
            v, u = np.divmod(pixel[redo], self.image_shape[1])
            z_redo = depth[pixel[redo]]
            camera = np.stack([(u - self.intrinsics[0, 2]) * z_redo / self.intrinsics[0, 0],
                               (v - self.intrinsics[1, 2]) * z_redo / self.intrinsics[1, 1],
                               z_redo.astype(np.float64)], axis=1)
            x, y, z_base = transform_points(camera, self.camera_pose).T
            row_redo, col_redo = base_xy_to_pixel(x, y, ws, self.resolution_m)
            keep[redo] = (np.isfinite(z_base) & (x >= ws[0][0]) & (x < ws[0][1]) & (y >= ws[1][0]) & (y < ws[1][1])
                          & (z_base < ws[2][1]) & (row_redo >= 0) & (row_redo < rows) & (col_redo >= 0)
                          & (col_redo < cols))
            row[redo], col[redo], height[redo] = row_redo, col_redo, z_base - ws[2][0]
        kept = np.flatnonzero(keep)
        cell = row[kept] * cols + col[kept]
        height = height[kept]
        top = np.full(rows * cols, -np.inf)
        np.maximum.at(top, cell, height)
        # Colour: of the points at their cell's top height, the last one in image order.
        winner = height == top[cell]
        source = np.full(rows * cols, -1, dtype=np.intp)
        np.maximum.at(source, cell[winner], pixel[kept[winner]])
        filled = np.flatnonzero(source >= 0)
        colors = np.ascontiguousarray(color, dtype=np.uint8).reshape(-1, 3).view("V3").reshape(-1)
        color_heightmap = np.zeros(rows * cols, dtype="V3")
        color_heightmap[filled] = colors[source[filled]]
        depth_heightmap = np.maximum(top, 0.0).astype(np.float32)
        depth_heightmap[source < 0] = np.nan
        return (color_heightmap.view(np.uint8).reshape(rows, cols, 3), depth_heightmap.reshape(rows, cols))


def get_heightmap_reference(color: np.ndarray, depth_m: np.ndarray, intrinsics: np.ndarray, camera_pose: np.ndarray,
                  workspace_limits_m: np.ndarray = WORKSPACE_LIMITS_M,
                  resolution_m: float = HEIGHTMAP_RESOLUTION_M) -> tuple[np.ndarray, np.ndarray]:
    """Top-down colour and height maps from an RGB-D image (SPEC section 3): the plain definition.

    color: (H, W, 3) uint8; depth_m: (H, W) metres, NaN or <= 0 where invalid;
    camera_pose: (4, 4) camera-to-base. Returns colour (rows, cols, 3) uint8 and height
    (rows, cols) float32 metres above the table (z - zmin, negatives -> 0), NaN in cells no
    point fell into. The highest point of each cell wins, for height and colour alike.
    get_heightmap gives the same maps, bit for bit, through a cached HeightmapProjector; this one
    stays as its reference (tests/test_heightmap.py and bench/heightmap.py compare the two).
    """
    rows, cols = heightmap_shape(workspace_limits_m, resolution_m)
    points = transform_points(depth_to_camera_points(depth_m, intrinsics), camera_pose)
    colors = color.reshape(-1, 3)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    with np.errstate(invalid="ignore"):
        keep = (np.isfinite(z) & (depth_m.reshape(-1) > 0)
                & (x >= workspace_limits_m[0][0]) & (x < workspace_limits_m[0][1])
                & (y >= workspace_limits_m[1][0]) & (y < workspace_limits_m[1][1])
                & (z < workspace_limits_m[2][1]))
    row, col = base_xy_to_pixel(x[keep], y[keep], workspace_limits_m, resolution_m)
    inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
    row, col, height, colors = row[inside], col[inside], z[keep][inside] - workspace_limits_m[2][0], colors[keep][inside]
    # Sort ascending by height so that, with fancy-index assignment, the last (highest) point wins.
    order = np.argsort(height, kind="stable")
    row, col, height, colors = row[order], col[order], height[order], colors[order]
    depth_heightmap = np.full((rows, cols), np.nan, dtype=np.float32)
    color_heightmap = np.zeros((rows, cols, 3), dtype=np.uint8)
    depth_heightmap[row, col] = np.maximum(height, 0.0)
    color_heightmap[row, col] = colors
    return color_heightmap, depth_heightmap


def valid_depth(depth_heightmap: np.ndarray) -> np.ndarray:
    """The 'valid' height map: empty cells (NaN) read 0 m."""
    return np.nan_to_num(depth_heightmap, nan=0.0).astype(np.float32)


# --- Goal masks and the image rules of SPEC section 3 -----------------------------------------
OCCUPANCY_RING_PX = 10
OCCUPANCY_HEIGHT_RANGE_M = (0.02, 0.3)
GOAL_CHANGE_DILATION_PX = 5
GOAL_CHANGE_MIN_DROP_M = 0.01
GOAL_CHANGE_MAX_DROP_M = 0.3
GOAL_CHANGE_MIN_PIXELS = 50
AGNOSTIC_CHANGE_MIN_PIXELS = 300
OBJECT_HEIGHT_THRESHOLD_M = 0.02


@functools.lru_cache(maxsize=8)
def push_end_inside(size_px: int, push_length_px: int, margin_px: int,
                    num_rotations: int = NUM_ROTATIONS) -> np.ndarray:
    """(R, H, H) bool, read-only: the push of rotation r started at pixel (row, col) ends, at full
    length, at least margin_px inside the heightmap (= the workspace).

    A push moves push_length_px along (cos theta, sin theta) = (+col, +row), theta = r * 360 / R deg.
    The robot clamps a push's end to the workspace, so a push aimed at a near border stops its
    finger there and leaves the object ahead of the finger beyond it: the goal is thrown out.
    """
    theta = np.arange(num_rotations) * (2 * np.pi / num_rotations)
    rows, cols = np.mgrid[0:size_px, 0:size_px]
    end_rows = rows[None] + push_length_px * np.sin(theta)[:, None, None]
    end_cols = cols[None] + push_length_px * np.cos(theta)[:, None, None]
    low, high = margin_px, size_px - 1 - margin_px
    inside = (end_rows >= low) & (end_rows <= high) & (end_cols >= low) & (end_cols <= high)
    inside.flags.writeable = False
    return inside


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary dilation of a (H, W) mask by a disc of the given radius; returns bool."""
    import cv2

    if radius_px <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a (H, W) mask's pixels; bool. Empty in, empty out."""
    import cv2

    points = cv2.findNonZero(mask.astype(np.uint8))
    hull_mask = np.zeros(mask.shape, dtype=np.uint8)
    if points is not None:
        cv2.fillConvexPoly(hull_mask, cv2.convexHull(points), 1)
    return hull_mask > 0


def occupancy_ratio(goal_mask: np.ndarray, depth_heightmap: np.ndarray) -> float:
    """Fraction of the ring around the goal (its 10-px dilation minus the mask) covered by objects.

    A ring pixel is covered when its height is in (0.02, 0.3] m. 0 when the goal is not visible.
    """
    goal = goal_mask > 0
    ring = dilate(goal, OCCUPANCY_RING_PX) & ~goal
    if not ring.any():
        return 0.0
    heights = np.nan_to_num(depth_heightmap[ring], nan=0.0)
    low, high = OCCUPANCY_HEIGHT_RANGE_M
    return float(np.mean((heights > low) & (heights <= high)))


def goal_change_detected(prev_depth_heightmap: np.ndarray, depth_heightmap: np.ndarray,
                         prev_goal_mask: np.ndarray) -> tuple[bool, int]:
    """Goal-conditioned change: > 50 pixels near the goal dropped by (0.01, 0.3] m.

    'Near' is the 5-px dilation of the convex hull of the previous goal mask. Returns the
    decision and the pixel count.
    """
    region = dilate(convex_hull_mask(prev_goal_mask > 0), GOAL_CHANGE_DILATION_PX)
    drop = np.nan_to_num(prev_depth_heightmap, nan=0.0) - np.nan_to_num(depth_heightmap, nan=0.0)
    changed = region & (drop > GOAL_CHANGE_MIN_DROP_M) & (drop <= GOAL_CHANGE_MAX_DROP_M)
    count = int(changed.sum())
    return count > GOAL_CHANGE_MIN_PIXELS, count


def agnostic_change_detected(prev_depth_heightmap: np.ndarray, depth_heightmap: np.ndarray,
                             grasp_succeeded: bool = False) -> tuple[bool, int]:
    """Goal-agnostic change (VPG): > 300 pixels anywhere changed by (0.01, 0.3] m, or a grasp held."""
    diff = np.abs(np.nan_to_num(prev_depth_heightmap, nan=0.0) - np.nan_to_num(depth_heightmap, nan=0.0))
    count = int(((diff > GOAL_CHANGE_MIN_DROP_M) & (diff <= GOAL_CHANGE_MAX_DROP_M)).sum())
    return count > AGNOSTIC_CHANGE_MIN_PIXELS or grasp_succeeded, count


def occupied_pixels(depth_heightmap: np.ndarray) -> int:
    """Pixels standing more than 2 cm above the table: how full the table is (SPEC section 5)."""
    return int((np.nan_to_num(depth_heightmap, nan=0.0) > OBJECT_HEIGHT_THRESHOLD_M).sum())


# --- VPG's depth heuristics (SPEC section 5, --heuristic_bootstrap) ----------------------------
HEURISTIC_REACH_PX = 25
HEURISTIC_STEP_M = 0.02


def _shifted(heightmap: np.ndarray, d_row: int, d_col: int) -> np.ndarray:
    """out[r, c] = heightmap[r + d_row, c + d_col]; 0 outside the map."""
    out = np.zeros_like(heightmap)
    rows, cols = heightmap.shape
    src_r = slice(max(d_row, 0), rows + min(d_row, 0))
    src_c = slice(max(d_col, 0), cols + min(d_col, 0))
    dst_r = slice(max(-d_row, 0), rows + min(-d_row, 0))
    dst_c = slice(max(-d_col, 0), cols + min(-d_col, 0))
    out[dst_r, dst_c] = heightmap[src_r, src_c]
    return out


def _heuristic_scores(depth_heightmap: np.ndarray, primitive: str) -> np.ndarray:
    import cv2

    heights = np.nan_to_num(depth_heightmap, nan=0.0).astype(np.float32)
    scores = np.zeros((NUM_ROTATIONS,) + heights.shape, dtype=np.float32)
    # VPG looks 25 px ahead; grasps also look at half that reach, which breaks the tie between
    # all the diagonals that clear a narrow object in favour of closing across its narrow side.
    reaches = (HEURISTIC_REACH_PX,) if primitive == "push" else (HEURISTIC_REACH_PX, HEURISTIC_REACH_PX // 2)
    for rotation in range(NUM_ROTATIONS):
        theta = rotation * ROTATION_STEP_RAD
        for reach in reaches:
            # Pixel offset of a point `reach` px along (cos theta, sin theta) in (col, row).
            d_col = int(round(reach * np.cos(theta)))
            d_row = int(round(reach * np.sin(theta)))
            ahead = _shifted(heights, d_row, d_col)
            if primitive == "push":
                # Free where we stand, an object edge ahead: the push will move something.
                valid = (ahead - heights > HEURISTIC_STEP_M)
            else:
                behind = _shifted(heights, -d_row, -d_col)
                # A ridge across the closing direction: narrower than the open jaw.
                valid = (heights - ahead > HEURISTIC_STEP_M) & (heights - behind > HEURISTIC_STEP_M)
            scores[rotation] += cv2.blur(valid.astype(np.float32), (25, 25))
    return scores


def push_heuristic(depth_heightmap: np.ndarray, allowed: np.ndarray | None = None) -> tuple[int, int, int]:
    """VPG's push heuristic: start in free space with an object edge 5 cm ahead.

    Returns (rotation, row, col); `allowed` (H, W) bool restricts the start pixel.
    """
    scores = _heuristic_scores(depth_heightmap, "push")
    if allowed is not None:
        scores = scores * allowed[None]
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(scores)), scores.shape))


def grasp_heuristic(depth_heightmap: np.ndarray, allowed: np.ndarray | None = None) -> tuple[int, int, int]:
    """VPG's grasp heuristic: a ridge at least 2 cm high on both sides along the closing direction.

    Returns (rotation, row, col); `allowed` (H, W) bool restricts the grasp pixel (the goal mask).
    """
    scores = _heuristic_scores(depth_heightmap, "grasp")
    if allowed is not None:
        scores = scores * allowed[None]
        if not scores.any():
            # No ridge inside the allowed region: grasp its highest point across its narrow side.
            return _fallback_grasp(depth_heightmap, allowed)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(scores)), scores.shape))


def _fallback_grasp(depth_heightmap: np.ndarray, allowed: np.ndarray) -> tuple[int, int, int]:
    rows, cols = np.nonzero(allowed)
    if rows.size == 0:
        return 0, depth_heightmap.shape[0] // 2, depth_heightmap.shape[1] // 2
    row, col = int(round(rows.mean())), int(round(cols.mean()))
    if not allowed[row, col]:
        nearest = int(np.argmin((rows - row) ** 2 + (cols - col) ** 2))
        row, col = int(rows[nearest]), int(cols[nearest])
    # Close along the mask's minor axis: the eigenvector of the smaller spread.
    coords = np.stack([cols - cols.mean(), rows - rows.mean()])
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(coords) if rows.size > 1 else np.eye(2))
    minor = eigenvectors[:, 0]
    theta = np.arctan2(minor[1], minor[0]) % (2 * np.pi)
    return int(round(theta / ROTATION_STEP_RAD)) % NUM_ROTATIONS, row, col


# --- Visualisations: why an action was chosen ----------------------------------------------------
def affordance_grid(q: np.ndarray, color_heightmap: np.ndarray,
                    best_action: tuple[int, int, int] | None = None) -> np.ndarray:
    """A 4 x 4 grid of the 16 rotations' Q maps over the colour heightmap, RGB uint8.

    Each tile is the Q map (jet, blended 50 % with the colour heightmap) for rotation i, labelled
    with its angle and its maximum; the executed action is circled in its tile.
    """
    import cv2

    low, high = float(np.min(q)), float(np.max(q))
    span = max(high - low, 1e-6)
    tiles = []
    for rotation in range(q.shape[0]):
        scaled = np.clip((q[rotation] - low) / span * 255, 0, 255).astype(np.uint8)
        heat = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        tile = np.ascontiguousarray((0.5 * heat + 0.5 * color_heightmap).astype(np.uint8))
        if best_action is not None and best_action[0] == rotation:
            center = (int(best_action[2]), int(best_action[1]))
            cv2.circle(tile, center, 7, (255, 255, 255), 2)
            tip = (int(center[0] + 12 * np.cos(rotation * ROTATION_STEP_RAD)),
                   int(center[1] + 12 * np.sin(rotation * ROTATION_STEP_RAD)))
            cv2.line(tile, center, tip, (255, 255, 255), 2)
        label = f"{rotation * 22.5:.1f} max {float(q[rotation].max()):.2f}"
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        tiles.append(tile)
    cols = 4
    rows = [np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(len(tiles) // cols)]
    return np.concatenate(rows, axis=0)


def draw_action(color_heightmap: np.ndarray, primitive: str, action: tuple[int, int, int],
                goal_mask: np.ndarray | None = None) -> np.ndarray:
    """The colour heightmap with the goal outlined and the action drawn: a push as an arrow along
    its direction (13 cm), a grasp as a bar across the closing direction. RGB uint8."""
    import cv2

    image = np.ascontiguousarray(color_heightmap.copy())
    if goal_mask is not None and goal_mask.any():
        contours, _ = cv2.findContours((goal_mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, (255, 0, 255), 1)
    rotation, row, col = action
    theta = rotation * ROTATION_STEP_RAD
    direction = np.array([np.cos(theta), np.sin(theta)])
    start = np.array([col, row], dtype=float)
    if primitive == "push":
        end = start + direction * 0.13 / HEIGHTMAP_RESOLUTION_M
        cv2.arrowedLine(image, tuple(int(v) for v in start), tuple(int(v) for v in end), (255, 0, 0), 2, tipLength=0.2)
    else:
        half = direction * 0.04 / HEIGHTMAP_RESOLUTION_M  # the open jaw, 8 cm
        cv2.line(image, tuple(int(v) for v in start - half), tuple(int(v) for v in start + half), (0, 255, 0), 2)
        cv2.circle(image, (int(col), int(row)), 3, (0, 255, 0), -1)
    return image
