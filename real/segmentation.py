"""Object masks for the real robot: colour segmentation of the colour heightmap, or a mask file.

On the real robot the objects' poses are unknown, so their footprints (SPEC section 3's goal
mask) come from colour: every object has one palette colour (object i gets colour i mod 10,
SPEC section 2), so the mask of object i is the largest blob of palette colour i among the
heightmap cells that stand above the table. Occluded parts cannot be seen from one camera; the
blob is filled and dilated by ~2 px like the simulators' masks.

Thresholds are HSV windows per palette colour in OpenCV units (H 0..179, S and V 0..255): a
cell belongs to colour k when |dH| <= tol_h, |dS| <= tol_s and |dV| <= tol_v around colour k's
centre (hue distance is circular); a cell inside several windows goes to the nearest centre in
window-normalised distance. The defaults are the palette's own colours with generous windows;
real blocks under real light differ, so measure yours and pass them as a JSON file:
    {"blue": {"hsv": [106, 136, 167], "tol": [8, 60, 80]}, ...}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from simulation.objects import PALETTE_NAMES, PALETTE_RGB
from utils import UserError, heightmap_shape

# SPEC section 2's palette (one definition, in simulation.objects): object i -> colour i mod 10.
PALETTE_RGB_U8 = np.round(PALETTE_RGB * 255).astype(np.uint8)
DEFAULT_TOLERANCE_HSV = (8, 60, 80)
# Gray has no meaningful hue: any hue, low saturation.
GRAY_TOLERANCE_HSV = (90, 35, 80)


@dataclass(frozen=True)
class ColorWindow:
    """One palette colour's HSV centre and half-widths (OpenCV units)."""

    name: str
    hsv: tuple[int, int, int]
    tolerance: tuple[int, int, int]


def default_windows() -> list[ColorWindow]:
    hsv = cv2.cvtColor(PALETTE_RGB_U8[None], cv2.COLOR_RGB2HSV)[0]
    return [ColorWindow(name, tuple(int(v) for v in hsv[i]),
                        GRAY_TOLERANCE_HSV if name == "gray" else DEFAULT_TOLERANCE_HSV)
            for i, name in enumerate(PALETTE_NAMES)]


def load_windows(path: str | Path) -> list[ColorWindow]:
    """Palette windows from a JSON file (see the module docstring); missing colours keep defaults."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read colour thresholds file {path}: {error}") from None
    windows = default_windows()
    if not isinstance(data, dict):
        raise UserError(f"colour thresholds file {path} must hold a JSON object of colour names")
    for name, entry in data.items():
        if name not in PALETTE_NAMES:
            raise UserError(f"colour thresholds file {path}: unknown colour '{name}' (known: {', '.join(PALETTE_NAMES)})")
        try:
            hsv = tuple(int(v) for v in entry["hsv"])
            tolerance = tuple(int(v) for v in entry.get("tol", DEFAULT_TOLERANCE_HSV))
        except (TypeError, KeyError, ValueError):
            raise UserError(f"colour thresholds file {path}: '{name}' needs \"hsv\": [h, s, v] and optional \"tol\"") from None
        if len(hsv) != 3 or len(tolerance) != 3:
            raise UserError(f"colour thresholds file {path}: '{name}' hsv and tol must have 3 numbers each")
        windows[PALETTE_NAMES.index(name)] = ColorWindow(name, hsv, tolerance)
    return windows


class ColorSegmenter:
    """Masks {palette index: (rows, cols) uint8 0/255} from colour + depth heightmaps.

    min_height_m: cells at or below this height (m above the table) are table, never object.
    min_area_px: smaller blobs are noise. border_px: dilation of each filled blob.
    """

    def __init__(self, windows: list[ColorWindow] | None = None, min_height_m: float = 0.01,
                 min_area_px: int = 30, border_px: int = 2) -> None:
        self.windows = windows if windows is not None else default_windows()
        self.min_height_m = min_height_m
        self.min_area_px = min_area_px
        self.border_px = border_px

    def classify(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> np.ndarray:
        """Per-cell palette index (int16), -1 for table / unknown colour."""
        hsv = cv2.cvtColor(np.ascontiguousarray(color_heightmap, dtype=np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        above = np.nan_to_num(depth_heightmap, nan=0.0) > self.min_height_m
        best = np.full(hsv.shape[:2], np.inf, dtype=np.float32)
        labels = np.full(hsv.shape[:2], -1, dtype=np.int16)
        for index, window in enumerate(self.windows):
            dh = np.abs(hsv[..., 0] - window.hsv[0])
            dh = np.minimum(dh, 180.0 - dh)  # hue is circular (OpenCV: 0..179)
            distance = np.maximum.reduce([dh / max(window.tolerance[0], 1e-6),
                                          np.abs(hsv[..., 1] - window.hsv[1]) / max(window.tolerance[1], 1e-6),
                                          np.abs(hsv[..., 2] - window.hsv[2]) / max(window.tolerance[2], 1e-6)])
            take = above & (distance <= 1.0) & (distance < best)
            best[take] = distance[take]
            labels[take] = index
        return labels

    def masks(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> dict[int, np.ndarray]:
        labels = self.classify(color_heightmap, depth_heightmap)
        result: dict[int, np.ndarray] = {}
        opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        for index in range(len(self.windows)):
            blob = cv2.morphologyEx((labels == index).astype(np.uint8), cv2.MORPH_OPEN, opening)
            count, components, stats, _ = cv2.connectedComponentsWithStats(blob, connectivity=8)
            if count <= 1:
                continue
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            if stats[largest, cv2.CC_STAT_AREA] < self.min_area_px:
                continue
            result[index] = fill_and_dilate((components == largest).astype(np.uint8), self.border_px)
        return result


def fill_and_dilate(mask: np.ndarray, border_px: int) -> np.ndarray:
    """Fill holes of a binary blob (its outer contours) and dilate it by border_px; 0/255 uint8."""
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(filled, contours, -1, 255, thickness=cv2.FILLED)
    if border_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border_px + 1, 2 * border_px + 1))
        filled = cv2.dilate(filled, kernel)
    return filled


class MaskFileSegmenter:
    """Masks from a user-given file (re-read when it changes, so an operator can update it).

    The file is a (rows, cols) PNG or .npy: either binary (values 0 and 255, or 0 and 1), taken
    as the mask of object `object_index`, or a label image where value k > 0 marks object k - 1.
    """

    def __init__(self, path: str | Path, object_index: int = 0,
                 expected_shape: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.object_index = object_index
        self.expected_shape = expected_shape or heightmap_shape()
        self._mtime: float | None = None
        self._masks: dict[int, np.ndarray] = {}
        self._load()

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError as error:
            raise UserError(f"cannot read mask file {self.path}: {error}") from None
        if mtime == self._mtime:
            return
        if self.path.suffix == ".npy":
            try:
                image = np.load(self.path)
            except (OSError, ValueError) as error:
                raise UserError(f"cannot read mask file {self.path}: {error}") from None
        else:
            image = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise UserError(f"cannot read mask file {self.path} as an image")
        if image.ndim == 3:
            image = image[..., 0]
        if image.shape != tuple(self.expected_shape):
            raise UserError(f"mask file {self.path} is {image.shape[1]}x{image.shape[0]}, the heightmap is "
                            f"{self.expected_shape[1]}x{self.expected_shape[0]}")
        values = set(np.unique(image).tolist())
        if values <= {0, 255} or values <= {0, 1}:
            self._masks = {self.object_index: np.where(image > 0, 255, 0).astype(np.uint8)}
        else:
            self._masks = {int(k) - 1: np.where(image == k, 255, 0).astype(np.uint8) for k in values if k > 0}
        self._mtime = mtime

    def masks(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> dict[int, np.ndarray]:
        self._load()
        return {k: v.copy() for k, v in self._masks.items()}
