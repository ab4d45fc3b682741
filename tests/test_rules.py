"""The pure rules of SPEC 5 that Runner sequences: rule sets, outcomes, counters, resets."""
import numpy as np
import pytest

import rules


@pytest.mark.parametrize("stage,goal_oriented,expected", [
    ("grasp_only", True, "grasp_only"), ("grasp_only", False, "grasp_only"),
    ("push_only", True, "push_only"), ("push_grasp", True, "push_only"), ("push_grasp", False, "push_grasp"),
])
def test_rule_set_table(stage, goal_oriented, expected):
    assert rules.rule_set(stage, goal_oriented) == expected


def test_rule_set_rejects_unknown_stages():
    with pytest.raises(ValueError):
        rules.rule_set("place_only", True)


@pytest.mark.parametrize("success,grasped,goal,oriented,expected", [
    (True, 3, 3, True, True), (True, 2, 3, True, False), (False, -1, 3, True, False),
    (True, 2, -1, False, True), (False, -1, -1, False, False),
])
def test_is_target_grasp_table(success, grasped, goal, oriented, expected):
    assert rules.is_target_grasp(success, grasped, goal, oriented) is expected


def test_measure_outcome_from_the_next_forward():
    o = rules.measure_outcome("push", False, False, True, best_goal_grasp_q_before=0.4, occupancy_before=0.5,
                              occupancy_after=0.2, next_max_push_q=0.7, next_max_grasp_q=2.5,
                              next_max_goal_grasp_q=1.1, goal_oriented=True)
    assert o.improved_grasp_q == pytest.approx(0.7) and o.decreased_occupancy == pytest.approx(0.3)
    assert o.next_max_grasp_q == 1.1 and o.next_max_push_q == 0.7 and o.pre_push_grasp_q == 0.4
    assert not o.goal_left_workspace
    # No next forward (a test trial ends here): nothing improved, no future.
    end = rules.measure_outcome("grasp", True, True, True, 1.9, 0.1, 0.0, None, None, None, True)
    assert end.improved_grasp_q == 0.0 and end.next_max_grasp_q == 0.0 and end.next_max_push_q == 0.0
    # Goal-agnostic: the next grasp maximum is the plain one.
    agnostic = rules.measure_outcome("grasp", True, True, True, 0.0, 0.0, 0.0, 0.3, 0.9, None, False)
    assert agnostic.next_max_grasp_q == 0.9


def test_a_push_that_throws_the_goal_out_is_a_terminal_failure():
    o = rules.measure_outcome("push", False, False, True, 0.4, 0.5, 0.0, 0.7, 2.0, 0.0, True, goal_visible=False)
    assert o.goal_left_workspace
    assert rules.reward_and_label("push_only", "push", o) == (-0.5, -0.5)


@pytest.mark.parametrize("count,in_a_row,primitive,change,expected", [
    (3, {"push": 2, "grasp": 1}, "push", True, (0, {"push": 0, "grasp": 1})),
    (3, {"push": 2, "grasp": 1}, "grasp", False, (4, {"push": 2, "grasp": 2})),
    (0, {"push": 0, "grasp": 0}, "push", False, (1, {"push": 1, "grasp": 0})),
])
def test_count_change_table(count, in_a_row, primitive, change, expected):
    before = dict(in_a_row)
    assert rules.count_change(count, in_a_row, primitive, change) == expected
    assert in_a_row == before  # pure: the caller's counters are untouched


BASE = dict(training=True, goal_oriented=True, flown_off=[], occupied_pixels=5000, no_change_count=0,
            goal_visible=True, goal_was_grasped=False, grasp_failures_in_a_row=0, max_goal_grasp_failures=10,
            object_grasped=False)


@pytest.mark.parametrize("changes,expected", [
    ({}, None),
    ({"flown_off": [2]}, "flew off"),
    ({"occupied_pixels": 299}, "empty"),
    ({"occupied_pixels": 299, "training": False}, None),
    ({"occupied_pixels": 9, "training": False}, "empty"),
    ({"no_change_count": 10}, None),
    ({"no_change_count": 11}, "changed nothing"),
    ({"goal_visible": False}, "left the workspace"),
    ({"goal_visible": False, "goal_was_grasped": True}, "goal grasped"),
    ({"goal_visible": False, "goal_oriented": False}, None),
    ({"grasp_failures_in_a_row": 10}, None),
    ({"grasp_failures_in_a_row": 10, "training": False}, "failed grasps"),
    ({"object_grasped": True}, "new scene"),
    ({"object_grasped": True, "training": False}, None),
    ({"object_grasped": True, "goal_oriented": False}, None),
    ({"flown_off": [1], "object_grasped": True}, "flew off"),  # first match wins
    ({"actions_in_trial": 30, "max_trial_actions": 30, "training": False}, "actions without grasping"),
    ({"actions_in_trial": 29, "max_trial_actions": 30, "training": False}, None),
    ({"actions_in_trial": 99, "max_trial_actions": 0, "training": False}, None),   # 0: no cap
    ({"actions_in_trial": 99, "max_trial_actions": 30}, None),                     # testing only
])
def test_reset_reason_table(changes, expected):
    reason = rules.reset_reason(**{**BASE, **changes})
    if expected is None:
        assert reason is None
    else:
        assert expected in reason


def test_random_push_draws_every_allowed_cell_and_nothing_else():
    from rules import random_push

    allowed = np.zeros((16, 6, 6), dtype=bool)
    allowed[3, 1, 2] = allowed[9, 4, 4] = allowed[15, 0, 5] = True
    rng = np.random.default_rng(0)
    drawn = {random_push(allowed, rng) for _ in range(200)}
    assert drawn == {(3, 1, 2), (9, 4, 4), (15, 0, 5)}
    # Seeded: the same generator state gives the same pushes.
    a = [random_push(allowed, np.random.default_rng(5)) for _ in range(3)]
    assert a == [random_push(allowed, np.random.default_rng(5)) for _ in range(3)]
    # Nothing allowed: any push at all, still inside the maps.
    rotation, row, col = random_push(np.zeros((16, 6, 6), dtype=bool), rng)
    assert 0 <= rotation < 16 and 0 <= row < 6 and 0 <= col < 6
