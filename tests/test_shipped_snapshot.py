"""The shipped snapshot (snapshots/, made by `reproduce.py --ship`) loads on the CPU in a fresh
clone, needs no --backbone, and tests a challenging case for two trials."""
from pathlib import Path

import pytest

import evaluate
import main
import models

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = sorted((PROJECT_ROOT / "snapshots").glob("goal-push-grasp-*.pth"))
CASE = PROJECT_ROOT / "simulation" / "test-cases" / "test-10-obj-00.txt"


def test_the_demo_looks_for_the_snapshot_reproduce_ships():
    import demo
    import reproduce

    assert demo.SHIPPED_SNAPSHOT.name == f"goal-push-grasp-{reproduce.DEFAULT_BACKBONE}.pth"


@pytest.mark.skipif(not SNAPSHOTS, reason="no shipped snapshot in snapshots/ yet (reproduce.py --ship makes it)")
@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: p.name)
def test_the_shipped_snapshot_tests_a_challenging_case(tmp_path, snapshot):
    architecture, backbone = models.describe_snapshot(snapshot)
    assert architecture == "goal_conditioned" and backbone in models.BACKBONES
    assert snapshot.stat().st_size < 20e6
    logs = tmp_path / "logs"
    code = main.main(["--stage", "push_grasp", "--num_obj", "10", "--is_testing", "--test_preset_cases",
                      "--test_preset_file", str(CASE), "--load_snapshot", "--snapshot_file", str(snapshot),
                      "--grasp_goal_conditioned", "--goal_conditioned", "--max_test_trials", "2",
                      "--max_iterations", "30", "--random_seed", "7", "--cpu", "--logs_dir", str(logs)])
    assert code == 0
    (session,) = list(logs.iterdir())
    result = evaluate.evaluate_session(session, num_obj_complete=1)
    assert result["num_trials"] >= 1
    assert (PROJECT_ROOT / "snapshots" / "MODEL_CARD.md").is_file()
