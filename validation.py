"""Command-line input checks (issue 7, item 4): a bad command line is one line on stderr,
``error: ...`` naming the fix, and exit code 2, before anything starts (no session directory,
no simulator, no network, nothing written to an existing session).

main.check_config calls check_values first; main.build_parser uses OneLineParser.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from utils import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (argparse prints its usage, 40 lines here, first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (`python main.py --help` lists the options)\n")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# option -> (accepted?, what it must be). Options with their own check in main.check_config
# (num_obj, learning_rate, the jitters, replay_steps) are not repeated here.
VALUE_RULES = {
    "heightmap_resolution": (lambda v: _finite(v) and 0.0005 <= v <= 0.01, "between 0.0005 and 0.01 (metres per pixel)"),
    "future_reward_discount": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    "grasp_reward_threshold": (_finite, "a finite number"),
    "max_push_episode_length": (lambda v: v >= 1, "at least 1"),
    "max_iterations": (lambda v: v >= 0, "0 (no limit) or more"),
    "max_test_trials": (lambda v: v >= 1, "at least 1"),
    "max_goal_grasp_failures": (lambda v: v >= 1, "at least 1"),
    "snapshot_interval": (lambda v: v >= 1, "at least 1"),
    "random_seed": (lambda v: 0 <= v < 2 ** 63, "between 0 and 2**63 - 1"),
    "coppeliasim_port": (lambda v: 1 <= v <= 65535, "a TCP port, 1..65535"),
    "goal_obj_idx": (lambda v: v >= -1, "-1 (from the test case, else 0) or an object index"),
}


def check_values(cfg) -> None:
    """UserError, one line naming the option and the fix, for a value no run can use."""
    for name, (accepted, must_be) in VALUE_RULES.items():
        value = getattr(cfg, name)
        if not accepted(value):
            raise UserError(f"--{name} must be {must_be}, got {value}")
    if not cfg.test_preset_file and cfg.goal_obj_idx >= cfg.num_obj >= 1:
        raise UserError(f"--goal_obj_idx {cfg.goal_obj_idx} is out of range: --num_obj {cfg.num_obj} objects are "
                        f"0..{cfg.num_obj - 1}")
    if cfg.obj_mesh_dir and not Path(cfg.obj_mesh_dir).is_dir():
        raise UserError(f"--obj_mesh_dir {cfg.obj_mesh_dir} is not a folder")
    if cfg.pretrained_weights not in ("", "auto", "none") and not Path(cfg.pretrained_weights).is_file():
        raise UserError(f"--pretrained_weights {cfg.pretrained_weights}: no such file (or 'auto', 'none')")
    logs = Path(cfg.logs_dir)
    if logs.exists() and not logs.is_dir():
        raise UserError(f"--logs_dir {cfg.logs_dir} is a file, not a folder")
