"""Shared test set-up: headless rendering, one CPU thread per process, the project on sys.path."""
import os
import sys
from pathlib import Path

# Before any MuJoCo renderer exists: importing torch after an EGL context segfaults (see main.py).
import torchvision  # noqa: F401

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED_UPSTREAM = PROJECT_ROOT.parent / "shared" / "upstream"
