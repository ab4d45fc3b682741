"""The embedded MuJoCo simulator, its objects and the test-case files (SPEC sections 2, 7, 8, 11).

`objects` and `test_cases` are pure numpy/trimesh and may be imported by any backend;
`scene` and `mujoco_sim` need MuJoCo.
"""
import os

# MuJoCo picks its OpenGL backend once, when it is first imported; headless EGL must be chosen
# before any module of this package imports it (a user's own MUJOCO_GL still wins).
os.environ.setdefault("MUJOCO_GL", "egl")
