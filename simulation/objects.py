"""Object meshes: the project's 8 toy blocks, the colour palette, and any folder of .obj meshes.

The blocks (SPEC section 2) are written by code, never copied from the paper: `ensure_blocks()`
writes `simulation/blocks/{0,1,2,3,4,6,7,8}.obj` the first time a simulator needs them (the
files are deterministic, so they may also be committed; `python -m simulation.objects --force`
rewrites them). Each mesh is in metres, centred on its bounding box, with the axes of the
paper's meshes (so the paper's test-case poses put them where the paper had them):
  0: triangular prism (an arch/roof), base along x, extruded along y, apex up, 0.093x0.05x0.049
  1: box 0.10x0.05x0.05        2: disc, axis along x, 0.025x0.06x0.06    3: box 0.10x0.05x0.025
  4: cube 0.05                 6: box 0.05x0.05x0.10                     7: box 0.05x0.05x0.025
  8: cylinder, axis along z, 0.045x0.045x0.05
(The paper's 1 and 7 have rounded cut-outs; boxes of the same size are the simplification.)

Any other folder (`--obj_mesh_dir`, novel objects) works too: a mesh that is not convex is split
into convex parts with CoACD once and cached on disk under `<project>/.cache/meshes/`, keyed by
the file's content hash, because MuJoCo collides convex shapes only.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import trimesh

from utils import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BLOCKS_DIR = PROJECT_ROOT / "simulation" / "blocks"
MESH_CACHE_DIR = PROJECT_ROOT / ".cache" / "meshes"

# VPG's palette (robot.py of Zeng et al.), RGB 0..1; object i gets colour i mod 10 (SPEC section 2).
PALETTE_NAMES = ("blue", "green", "brown", "orange", "yellow", "gray", "red", "purple", "cyan", "pink")
PALETTE_RGB = np.array([[78, 121, 167], [89, 161, 79], [156, 117, 95], [242, 142, 43], [237, 201, 72],
                        [186, 176, 172], [255, 87, 89], [176, 122, 161], [118, 183, 178], [255, 157, 167]],
                       dtype=float) / 255.0

# SPEC section 2 bounding boxes (x, y, z) in metres.
BLOCK_SIZES_M: dict[str, tuple[float, float, float]] = {
    "0.obj": (0.093, 0.05, 0.049), "1.obj": (0.10, 0.05, 0.05), "2.obj": (0.025, 0.06, 0.06),
    "3.obj": (0.10, 0.05, 0.025), "4.obj": (0.05, 0.05, 0.05), "6.obj": (0.05, 0.05, 0.10),
    "7.obj": (0.05, 0.05, 0.025), "8.obj": (0.045, 0.045, 0.05),
}
BLOCK_NAMES = tuple(BLOCK_SIZES_M)

# Round shapes: 32 sides keep the bounding box exact (a multiple of 4) and the hull small.
CYLINDER_SECTIONS = 32
# Largest extent accepted for a user mesh: the workspace is 0.448 m wide, so anything bigger is
# almost surely in millimetres.
MAX_OBJECT_EXTENT_M = 0.5
# CoACD settings: a modest concavity threshold keeps decomposition to seconds per mesh (SPEC
# brief); raising the version string invalidates the cache when they change.
COACD_THRESHOLD = 0.1
COACD_MAX_PARTS = 12
DECOMPOSITION_VERSION = "coacd-0.1-12-v1"
# A hull whose volume is within this ratio of the mesh's is treated as convex (no CoACD).
CONVEX_VOLUME_RATIO = 0.98
# Parts smaller than this (m^3) are slivers MuJoCo cannot give an inertia to.
MIN_PART_VOLUME_M3 = 1e-9


def palette_color(index: int) -> np.ndarray:
    """RGB (3,) in 0..1 of object `index` (colour index mod 10)."""
    return PALETTE_RGB[index % len(PALETTE_RGB)].copy()


def make_block_mesh(name: str) -> trimesh.Trimesh:
    """The project's own mesh of block `name` ('0.obj' ... '8.obj'), metres, bbox-centred."""
    if name not in BLOCK_SIZES_M:
        raise ValueError(f"no block named {name!r}; blocks are {', '.join(BLOCK_NAMES)}")
    sx, sy, sz = BLOCK_SIZES_M[name]
    if name == "0.obj":
        # Triangle in the x-z plane (base at -sz/2, apex at +sz/2), extruded along y.
        triangle = np.array([[-sx / 2, -sz / 2], [sx / 2, -sz / 2], [0.0, sz / 2]])
        vertices = np.array([[x, y, z] for y in (-sy / 2, sy / 2) for x, z in triangle])
        return trimesh.convex.convex_hull(vertices)
    if name == "2.obj":
        mesh = trimesh.creation.cylinder(radius=sy / 2, height=sx, sections=CYLINDER_SECTIONS)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))  # axis z -> x
        return mesh
    if name == "8.obj":
        return trimesh.creation.cylinder(radius=sx / 2, height=sz, sections=CYLINDER_SECTIONS)
    return trimesh.creation.box(extents=(sx, sy, sz))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so parallel test workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def ensure_blocks(directory: Path | str = BLOCKS_DIR, overwrite: bool = False) -> Path:
    """Write the 8 block meshes into `directory` where missing (or all, with overwrite). Returns it."""
    directory = Path(directory)
    for name in BLOCK_NAMES:
        path = directory / name
        if overwrite or not path.exists():
            text = make_block_mesh(name).export(file_type="obj", include_normals=False, include_texture=False)
            _write_atomic(path, f"# {name}: toy block generated by simulation/objects.py (metres)\n{text}".encode())
    return directory


def list_mesh_files(directory: Path | str) -> list[str]:
    """Sorted .obj file names of a mesh folder; UserError when it has none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"object mesh folder {directory} does not exist")
    names = sorted(p.name for p in directory.iterdir() if p.suffix.lower() == ".obj" and p.is_file())
    if not names:
        raise UserError(f"object mesh folder {directory} holds no .obj meshes")
    return names


@dataclass(frozen=True)
class ObjectShape:
    """One object's geometry in its own frame (metres).

    visual_vertices_m (V, 3) and visual_faces (F, 3): the mesh as drawn.
    convex_parts: tuple of (vertices (n, 3), faces (m, 3)) convex pieces used for collision.
    """

    name: str
    visual_vertices_m: np.ndarray
    visual_faces: np.ndarray
    convex_parts: tuple[tuple[np.ndarray, np.ndarray], ...]
    content_hash: str

    @property
    def is_convex(self) -> bool:
        return len(self.convex_parts) == 1

    @property
    def bounding_radius_m(self) -> float:
        """Largest distance of a vertex from the frame origin."""
        return float(np.linalg.norm(self.visual_vertices_m, axis=1).max())


def _hull_part(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hull = trimesh.convex.convex_hull(vertices)
    return np.asarray(hull.vertices, dtype=float), np.asarray(hull.faces, dtype=np.int32)


def _decompose(mesh: trimesh.Trimesh, content_hash: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Convex parts of `mesh`, from the disk cache when this content was decomposed before."""
    cache_file = MESH_CACHE_DIR / f"{content_hash}-{DECOMPOSITION_VERSION}.npz"
    if cache_file.exists():
        with np.load(cache_file) as data:
            return [(data[f"v{i}"], data[f"f{i}"]) for i in range(int(data["count"]))]
    import coacd  # only needed for non-convex meshes

    coacd.set_log_level("off")
    raw_parts = coacd.run_coacd(coacd.Mesh(np.asarray(mesh.vertices), np.asarray(mesh.faces)),
                                threshold=COACD_THRESHOLD, max_convex_hull=COACD_MAX_PARTS,
                                preprocess_resolution=30, resolution=1000, mcts_iterations=60,
                                mcts_nodes=10, seed=0)
    parts = []
    for vertices, _ in raw_parts:
        hull = trimesh.convex.convex_hull(np.asarray(vertices))
        if hull.volume > MIN_PART_VOLUME_M3:
            parts.append((np.asarray(hull.vertices, dtype=float), np.asarray(hull.faces, dtype=np.int32)))
    if not parts:  # CoACD gave only slivers: fall back to the hull rather than lose the object
        parts = [_hull_part(np.asarray(mesh.vertices))]
    arrays = {"count": np.array(len(parts))}
    for i, (v, f) in enumerate(parts):
        arrays[f"v{i}"], arrays[f"f{i}"] = v, f
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _write_atomic(cache_file, buffer.getvalue())
    return parts


@lru_cache(maxsize=256)
def _load_shape_cached(path: str, content_hash: str) -> ObjectShape:
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as error:  # trimesh raises many types for bad files
        raise UserError(f"cannot read mesh {path}: {error}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UserError(f"mesh {path} has no triangles")
    extent = float(np.max(mesh.extents))
    if extent > MAX_OBJECT_EXTENT_M:
        raise UserError(f"mesh {path} is {extent:.3g} units wide; object meshes must be in metres")
    hull = mesh.convex_hull
    convex = mesh.is_watertight and hull.volume > 0 and mesh.volume / hull.volume > CONVEX_VOLUME_RATIO
    parts = [_hull_part(np.asarray(mesh.vertices))] if convex else _decompose(mesh, content_hash)
    return ObjectShape(Path(path).name, np.asarray(mesh.vertices, dtype=float),
                       np.asarray(mesh.faces, dtype=np.int32), tuple(parts), content_hash)


def load_object_shape(path: Path | str) -> ObjectShape:
    """Geometry of one .obj mesh (metres), convex-decomposed when needed (cached by content)."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read mesh {path}: {error.strerror}") from None
    return _load_shape_cached(str(path.resolve()), hashlib.sha256(content).hexdigest())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the project's 8 toy-block meshes (SPEC section 2).")
    parser.add_argument("--out", default=str(BLOCKS_DIR), help="folder to write into (default simulation/blocks)")
    parser.add_argument("--force", action="store_true", help="rewrite files that already exist")
    args = parser.parse_args(argv)
    directory = ensure_blocks(args.out, overwrite=args.force)
    for name in BLOCK_NAMES:
        shape = load_object_shape(directory / name)
        extents = shape.visual_vertices_m.max(0) - shape.visual_vertices_m.min(0)
        print(f"{directory / name}: {' x '.join(f'{e:.3f}' for e in extents)} m")


if __name__ == "__main__":
    main()
