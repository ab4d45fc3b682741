"""bench/relabelling.py trains stage 1 as `make reproduce` does, in crowded scenes, with and without
goal relabelling: its command lines must stay make reproduce's stage 1 but for the scenes."""
import argparse
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

import relabelling  # noqa: E402
import reproduce  # noqa: E402
from main import parse_config  # noqa: E402


def reproduce_stage1_argv(tmp_path: Path) -> list[str]:
    args = argparse.Namespace(run_dir=tmp_path, scale=1.0, backbone="tiny16ctx", learning_rate=1e-4,
                              replay_candidates="other_reward", replay_steps=4, stage1_explore="heuristic",
                              seed=1, alternating_grasp_labels="grasp_only", test_learning=True,
                              cases=str(PROJECT_ROOT / "simulation" / "test-cases"), trials=1)
    return next(step.argv for step in reproduce.build_steps(args) if step.name == "stage1")


@pytest.mark.parametrize("arm, relabels", [("relabel", True), ("norelabel", False)])
def test_each_arm_is_make_reproduces_stage1_in_crowded_scenes(tmp_path, arm, relabels):
    session = tmp_path / "session"
    ours = parse_config(relabelling.arm_argv(arm, 1, 600, session, "crowded_goal"))
    theirs = parse_config([*reproduce_stage1_argv(tmp_path), "--logging_directory", str(session)])
    assert ours.goal_relabelling is relabels
    assert ours.train_scene == "crowded_goal" and theirs.train_scene != "crowded_goal"
    differing = {name for name in vars(ours) if getattr(ours, name) != getattr(theirs, name)}
    assert differing == ({"train_scene"} if relabels else {"train_scene", "goal_relabelling"})


def test_held_out_snapshots_are_the_periodic_ones(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("snapshot-000050.grasp_only.pth", "snapshot-000100.grasp_only.pth",
                 "snapshot-000200.grasp_only.pth", "snapshot-backup.grasp_only.pth",
                 "snapshot-000100.push_only.pth"):
        (models / name).write_bytes(b"")
    assert list(relabelling.snapshots_of(tmp_path, 100)) == [100, 200]
    assert list(relabelling.snapshots_of(tmp_path, 50)) == [50, 100, 200]
