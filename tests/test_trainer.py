"""Tests of trainer.py: reward/label tables, action helpers, freezing, replay, snapshots, resume.

CPU only, tiny backbone, small heightmaps (the pipeline works for any even square size) so the
whole file runs in seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
import trainer as T  # noqa: E402
from utils import NUM_ROTATIONS, UserError  # noqa: E402

torch.set_num_threads(1)   # one thread per test process (tests/conftest.py)
H = 64
G = 0.5


def scene(seed: int = 0, size: int = H):
    rng = np.random.default_rng(seed)
    color = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    depth = np.zeros((size, size), np.float32)
    depth[10:30, 20:44] = 0.05
    depth[40:50, 5:20] = rng.uniform(0.02, 0.08)
    mask = np.zeros((size, size), np.uint8)
    mask[10:30, 20:44] = 255
    return color, depth, mask


def make_trainer(**kw) -> T.Trainer:
    cfg = dict(backbone='tiny', device='cpu', pretrained_weights='none', seed=0)
    cfg.update(kw)
    return T.Trainer(T.TrainerConfig(**cfg))


# ---------------------------------------------------------------------------------------------
# Reward and label tables (SPEC 5), gamma 0.5
# ---------------------------------------------------------------------------------------------
O = T.Outcome
LABEL_TABLE = [
    # stage, primitive, outcome, alternating, push_rewards, (reward, label)
    # grasp_only: reward 1 for the goal; future = max next goal grasp Q only after a success
    ('grasp_only', 'grasp', O(grasp_success=True, goal_grasped=True, next_max_grasp_q=0.8), False, True, (1.0, 1.4)),
    ('grasp_only', 'grasp', O(grasp_success=True, goal_grasped=False, next_max_grasp_q=0.8), False, True, (0.0, 0.4)),
    ('grasp_only', 'grasp', O(grasp_success=False, next_max_grasp_q=0.8), False, True, (0.0, 0.0)),
    # push_only pushes: reward rule x future rule
    ('push_only', 'push', O(improved_grasp_q=0.2, change_detected=True, decreased_occupancy=0.2,
                            pre_push_grasp_q=0.3, next_max_push_q=0.8), False, True, (0.5, 0.9)),
    ('push_only', 'push', O(improved_grasp_q=0.05, change_detected=True, decreased_occupancy=0.2,
                            pre_push_grasp_q=0.3, next_max_push_q=0.8), False, True, (0.0, 0.0)),
    ('push_only', 'push', O(improved_grasp_q=0.05, change_detected=True, decreased_occupancy=0.2,
                            pre_push_grasp_q=0.6, next_max_push_q=0.8), False, True, (0.0, 0.4)),
    ('push_only', 'push', O(improved_grasp_q=0.2, change_detected=False, decreased_occupancy=0.2,
                            pre_push_grasp_q=0.3, next_max_push_q=0.8), False, True, (-0.5, -0.1)),
    ('push_only', 'push', O(improved_grasp_q=0.2, change_detected=True, decreased_occupancy=0.1,
                            pre_push_grasp_q=0.3, next_max_push_q=0.8), False, True, (-0.5, -0.1)),
    ('push_only', 'push', O(improved_grasp_q=0.1, change_detected=True, decreased_occupancy=0.3,
                            pre_push_grasp_q=0.2, next_max_push_q=0.8), False, True, (0.0, 0.0)),
    # push_only grasps: 1.5 / 0 / -1.0 (alternating); future = max next push Q unless zeroed
    ('push_only', 'grasp', O(grasp_success=True, goal_grasped=True, pre_push_grasp_q=1.9, next_max_push_q=0.8), False, True, (1.5, 1.9)),
    ('push_only', 'grasp', O(grasp_success=True, goal_grasped=True, pre_push_grasp_q=0.1, next_max_push_q=0.8), True, True, (1.5, 1.9)),
    # only the goal pays: another object grasped is a failed goal grasp (the paper's code)
    ('push_only', 'grasp', O(grasp_success=True, goal_grasped=False, pre_push_grasp_q=0.1, next_max_push_q=0.8), False, True, (0.0, 0.0)),
    ('push_only', 'grasp', O(grasp_success=True, goal_grasped=False, pre_push_grasp_q=0.6, next_max_push_q=0.8), True, True, (-1.0, -0.6)),
    ('push_only', 'grasp', O(grasp_success=False, pre_push_grasp_q=0.6, next_max_push_q=0.8), False, True, (0.0, 0.4)),
    ('push_only', 'grasp', O(grasp_success=False, pre_push_grasp_q=0.2, next_max_push_q=0.8), False, True, (0.0, 0.0)),
    ('push_only', 'grasp', O(grasp_success=False, pre_push_grasp_q=0.2, next_max_push_q=0.8), True, True, (-1.0, -1.0)),
    # push_grasp / VPG: grasp 1.0, push 0.5; future = max(next push, next grasp) unless
    # (no change and no grasp success)
    ('push_grasp', 'push', O(change_detected=True, next_max_push_q=0.6, next_max_grasp_q=0.9), False, True, (0.5, 0.95)),
    ('push_grasp', 'push', O(change_detected=True, next_max_push_q=0.6, next_max_grasp_q=0.9), False, False, (0.5, 0.45)),
    ('push_grasp', 'push', O(change_detected=False, next_max_push_q=0.6, next_max_grasp_q=0.9), False, True, (0.0, 0.0)),
    ('push_grasp', 'grasp', O(grasp_success=True, change_detected=True, next_max_push_q=0.6, next_max_grasp_q=0.9), False, True, (1.0, 1.45)),
    ('push_grasp', 'grasp', O(grasp_success=True, change_detected=False, next_max_push_q=1.2, next_max_grasp_q=0.9), False, True, (1.0, 1.6)),
    ('push_grasp', 'grasp', O(grasp_success=False, change_detected=False, next_max_push_q=0.6, next_max_grasp_q=0.9), False, True, (0.0, 0.0)),
    ('push_grasp', 'grasp', O(grasp_success=False, change_detected=True, next_max_push_q=0.6, next_max_grasp_q=0.9), False, True, (0.0, 0.45)),
]


@pytest.mark.parametrize('stage,primitive,outcome,alternating,push_rewards,expected', LABEL_TABLE)
def test_reward_and_label_table(stage, primitive, outcome, alternating, push_rewards, expected):
    got = T.reward_and_label(stage, primitive, outcome, G, alternating, push_rewards)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize('outcome,expected', [
    (O(change_detected=True, improved_grasp_q=-1.0, decreased_occupancy=-1.0, pre_push_grasp_q=0.2, next_max_push_q=0.8), (0.5, 0.5)),
    (O(change_detected=False, improved_grasp_q=0.5, decreased_occupancy=0.5, pre_push_grasp_q=0.2, next_max_push_q=0.8), (0.0, 0.4)),
    (O(change_detected=False, improved_grasp_q=0.0, decreased_occupancy=0.5, pre_push_grasp_q=0.2, next_max_push_q=0.8), (0.0, 0.0)),
])
def test_change_only_push_reward_table(outcome, expected):
    """--push_reward change (VPG's reward, the ablation): 0.5 on a change near the goal, the grasp
    net and the occupancy play no part; the future rule stays push_only's."""
    got = T.reward_and_label('push_only', 'push', outcome, G, push_reward='change')
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize('primitive,outcome,alternating,expected', [
    # --alternating_grasp_labels grasp_only: stage 1's rule for the grasp half's grasps ...
    ('grasp', O(grasp_success=True, goal_grasped=True, next_max_grasp_q=0.8, next_max_push_q=0.3), True, (1.0, 1.4)),
    ('grasp', O(grasp_success=True, goal_grasped=False, next_max_grasp_q=0.8, next_max_push_q=0.3), True, (0.0, 0.4)),
    ('grasp', O(grasp_success=False, pre_push_grasp_q=0.6, next_max_grasp_q=0.8, next_max_push_q=0.3), True, (0.0, 0.0)),
    # ... only under --alternating_training: plain push_only grasps keep SPEC 5's 1.5 + push future
    ('grasp', O(grasp_success=True, goal_grasped=True, next_max_grasp_q=0.8, next_max_push_q=0.3), False, (1.5, 1.65)),
    # ... and pushes are never relabelled
    ('push', O(improved_grasp_q=0.2, change_detected=True, decreased_occupancy=0.2, pre_push_grasp_q=0.3,
               next_max_push_q=0.8, next_max_grasp_q=1.9), True, (0.5, 0.9)),
])
def test_alternating_grasp_labels_table(primitive, outcome, alternating, expected):
    got = T.reward_and_label('push_only', primitive, outcome, G, alternating, alternating_grasp_labels='grasp_only')
    assert got == pytest.approx(expected, abs=1e-12)
    if primitive == 'grasp' and alternating:  # SPEC 5's rule stays one option away
        spec = T.reward_and_label('push_only', primitive, outcome, G, True, alternating_grasp_labels='push_only')
        assert spec[0] in (1.5, -1.0)
    with pytest.raises(ValueError):
        T.reward_and_label('push_only', primitive, outcome, G, alternating, alternating_grasp_labels='vpg')


@pytest.mark.parametrize('outcome,expected', [
    # --alternating_grasp_labels goal_probability: 2 for the goal whatever the next scene's Q ...
    (O(grasp_success=True, goal_grasped=True, next_max_grasp_q=0.3, next_max_push_q=0.3), (1.0, 2.0)),
    (O(grasp_success=True, goal_grasped=True, next_max_grasp_q=1.9, next_max_push_q=0.3), (1.0, 2.0)),
    # ... 0 for another object (the scene ends without the goal) and for a miss
    (O(grasp_success=True, goal_grasped=False, next_max_grasp_q=1.9, next_max_push_q=0.3), (0.0, 0.0)),
    (O(grasp_success=False, pre_push_grasp_q=0.6, next_max_grasp_q=0.8, next_max_push_q=0.3), (0.0, 0.0)),
])
def test_goal_probability_grasp_labels_table(outcome, expected):
    got = T.reward_and_label('push_only', 'grasp', outcome, G, True, alternating_grasp_labels='goal_probability')
    assert got == pytest.approx(expected, abs=1e-12)
    # pushes keep push_only's rule, and without --alternating_training grasps keep SPEC 5's
    push = O(improved_grasp_q=0.2, change_detected=True, decreased_occupancy=0.2, pre_push_grasp_q=0.3,
             next_max_push_q=0.8, next_max_grasp_q=1.9)
    assert T.reward_and_label('push_only', 'push', push, G, True, alternating_grasp_labels='goal_probability') == \
        T.reward_and_label('push_only', 'push', push, G, True, alternating_grasp_labels='grasp_only')
    assert T.reward_and_label('push_only', 'grasp', outcome, G, False,
                              alternating_grasp_labels='goal_probability')[0] in (1.5, 0.0)
    assert T.grasp_success_reward('push_only', True, 'goal_probability') == 1.0
    with pytest.raises(ValueError):
        T.goal_probability_label(True, gamma=1.0)


def test_grasp_success_reward_follows_the_alternating_labels():
    assert T.grasp_success_reward('push_only', True, 'grasp_only') == 1.0
    assert T.grasp_success_reward('push_only', True, 'push_only') == 1.5
    assert T.grasp_success_reward('push_only', False, 'grasp_only') == 1.5


@pytest.mark.parametrize('primitive,current,success,goal_oriented,expected', [
    ('push', 0.5, 1.5, True, 0.0),
    ('push', 0.0, 1.5, True, 0.5),
    ('push', -0.5, 1.5, True, 0.5),      # -0.5 pushes are never drawn
    ('grasp', 1.0, 1.0, False, 0.0),
    ('grasp', 0.0, 1.0, False, 1.0),
    ('grasp', 1.0, 1.0, True, None),     # goal-oriented: nothing after a goal grasp
    ('grasp', 0.0, 1.0, True, 1.0),
    ('grasp', -1.0, 1.5, True, 1.5),     # alternating training: successes after a failure
])
def test_replay_target_reward_table(primitive, current, success, goal_oriented, expected):
    assert T.replay_target_reward(primitive, current, success, goal_oriented) == expected


def test_grasp_success_reward_per_stage():
    assert [T.grasp_success_reward(s) for s in T.STAGES] == [1.0, 1.5, 1.0]


def test_single_rules_edges():
    assert T.grasp_only_reward(True) == 1.0 and T.grasp_only_reward(False) == 0.0
    assert T.grasp_only_label(True, 1.0, 2.0, 0.5) == 2.0
    assert T.grasp_only_label(False, 0.0, 2.0, 0.5) == 0.0
    assert T.push_only_push_reward(0.11, True, 0.11) == 0.5
    assert T.push_only_push_reward(0.11, True, 0.10) == -0.5      # occupancy must drop > 0.1
    assert T.push_only_push_reward(0.10, True, 0.5) == 0.0        # improvement must be > 0.1
    assert T.push_only_grasp_reward(False, alternating_training=True) == -1.0
    assert T.push_only_future_value(0.1, 0.49, False, 3.0) == 0.0
    assert T.push_only_future_value(0.1, 0.5, False, 3.0) == 3.0
    assert T.push_only_future_value(0.1, 0.49, True, 3.0) == 3.0
    assert T.vpg_future_value(False, False, 1.0, 2.0) == 0.0
    assert T.vpg_future_value(True, False, 1.0, 2.0) == 2.0
    assert T.vpg_reward('push', True, False) == 0.5 and T.vpg_reward('grasp', True, False) == 0.0
    with pytest.raises(ValueError):
        T.reward_and_label('push_only', 'place', O())


# ---------------------------------------------------------------------------------------------
# Action selection
# ---------------------------------------------------------------------------------------------
def test_best_pixel_and_masked_max():
    q = np.zeros((NUM_ROTATIONS, 8, 8), np.float32)
    q[3, 1, 2] = 5.0       # global best, outside the mask
    q[7, 6, 5] = 2.0       # best inside the mask
    q[9, 6, 6] = -1.0
    allowed = np.zeros((8, 8), bool)
    allowed[5:8, 4:8] = True
    assert T.best_pixel(q) == ((3, 1, 2), 5.0)
    assert T.best_pixel(q, allowed) == ((7, 6, 5), 2.0)
    assert T.masked_max(q, allowed.astype(np.uint8) * 255) == 2.0
    assert T.masked_max(q, np.zeros((8, 8), np.uint8)) == 0.0
    assert T.masked_max(q, None) == 5.0
    neg = np.full_like(q, -3.0)
    neg[0, 6, 6] = -0.5
    assert T.best_pixel(neg, allowed) == ((0, 6, 6), -0.5)   # never picks outside the mask
    with pytest.raises(ValueError):
        T.best_pixel(q, np.zeros((8, 8), bool))


def test_primitive_choices_and_schedules():
    gc = T.choose_primitive_goal_conditioned
    assert gc(1.6, 0.2) == 'grasp'
    assert gc(1.4, 0.2) == 'push'
    assert gc(1.6, 0.31) == 'push'
    assert gc(1.6, None) == 'grasp'
    # --max_pushes_before_grasp: grasp once that many pushes came in a row (0 never does).
    assert gc(1.0, 0.6, pushes_in_a_row=4, max_pushes_before_grasp=5) == 'push'
    assert gc(1.0, 0.6, pushes_in_a_row=5, max_pushes_before_grasp=5) == 'grasp'
    assert gc(1.0, 0.6, pushes_in_a_row=50, max_pushes_before_grasp=0) == 'push'
    ga = T.choose_primitive_goal_agnostic
    assert ga(1.4, 1.0, is_testing=True) == 'grasp' and ga(1.6, 1.0, is_testing=True) == 'push'
    assert ga(1.1, 1.0, is_testing=False) == 'push' and ga(0.9, 1.0, is_testing=False) == 'grasp'
    po = T.choose_primitive_push_only
    assert po(1.9, 0) == 'grasp' and po(1.7, 4) == 'push' and po(1.7, 5) == 'grasp'
    assert T.grasp_explore_probability(0) == pytest.approx(0.8)
    assert T.grasp_explore_probability(100) == pytest.approx(0.8 * 0.998 ** 100)
    assert T.grasp_explore_probability(10 ** 5) == 0.1
    assert T.grasp_explore_probability(100, explore_rate_decay=False) == 0.8
    assert T.explore_probability(1000, True) == pytest.approx(0.5 * 0.9998 ** 1000)
    assert T.explore_probability(10 ** 6, True) == 0.1
    assert T.explore_probability(1000, False) == 0.5
    assert T.explore_probability(0, True, is_testing=True) == 0.0
    rng = np.random.default_rng(0)
    picks = [T.random_primitive(rng) for _ in range(400)]
    assert 150 < picks.count('push') < 250


# ---------------------------------------------------------------------------------------------
# Freezing per stage
# ---------------------------------------------------------------------------------------------
def _group_state(tr: T.Trainer) -> dict[str, dict[str, torch.Tensor]]:
    groups = {'push': tr.model.push_modules(), 'grasp': tr.model.grasp_modules()}
    out = {}
    for name, mods in groups.items():
        state = {}
        for i, m in enumerate(mods):
            for k, v in m.state_dict().items():
                state[f'{i}.{k}'] = v.detach().clone()
        out[name] = state
    return out


FREEZE_CASES = [
    # kwargs, push trains, grasp trains
    (dict(stage='grasp_only'), False, True),
    (dict(stage='push_only'), True, False),
    (dict(stage='push_only', alternating_training=True), False, True),
    (dict(stage='push_only', cooperative_training=True), True, True),
    (dict(stage='push_grasp'), True, True),
    (dict(stage='push_grasp', goal_conditioned=False), True, True),
]


@pytest.mark.parametrize('kwargs,push_trains,grasp_trains', FREEZE_CASES)
def test_freezing(kwargs, push_trains, grasp_trains):
    tr = make_trainer(**kwargs)
    color, depth, mask = scene()
    before = _group_state(tr)
    loss_push = tr.backprop(color, depth, mask, 'push', (2, 20, 30), 1.0)
    loss_grasp = tr.backprop(color, depth, mask, 'grasp', (5, 20, 30), 1.0)
    after = _group_state(tr)
    assert (loss_push > 0) == push_trains and (loss_grasp > 0) == grasp_trains
    for name, trains in (('push', push_trains), ('grasp', grasp_trains)):
        changed = [k for k in before[name] if not torch.equal(before[name][k], after[name][k])]
        params = [k for k in before[name] if not k.endswith(('running_mean', 'running_var',
                                                              'num_batches_tracked'))]
        if trains:
            assert set(params) <= set(changed), sorted(set(params) - set(changed))[:5]
        else:
            assert changed == [], changed[:5]   # weights AND running statistics untouched
    assert tr.trains('push') == push_trains and tr.trains('grasp') == grasp_trains


def test_grasp_loss_is_mean_of_both_rotations():
    tr = make_trainer(stage='grasp_only')
    color, depth, mask = scene(1)
    _, grasp_q = tr.forward(color, depth, mask, rotations=[3, 11])
    label = 2.0
    a, b = grasp_q[0, 12, 40], grasp_q[1, 12, 40]
    huber = lambda d: 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5  # noqa: E731
    expected = 0.5 * (huber(a - label) + huber(b - label))
    loss = tr.backprop(color, depth, mask, 'grasp', (3, 12, 40), label)
    assert loss == pytest.approx(expected, rel=1e-4)
    # and the step moves the prediction towards the label
    _, after = tr.forward(color, depth, mask, rotations=[3])
    assert abs(after[0, 12, 40] - label) < abs(a - label)


def test_forward_shapes_and_inputs():
    tr = make_trainer(stage='push_grasp')
    color, depth, mask = scene(size=224)
    push_q, grasp_q = tr.forward(color, depth, mask)
    assert push_q.shape == grasp_q.shape == (NUM_ROTATIONS, 224, 224)
    assert push_q.dtype == np.float32
    with pytest.raises(ValueError):
        tr.forward(color, depth, None)
    agn = make_trainer(stage='push_grasp', goal_conditioned=False)
    p2, g2 = agn.forward(color, depth)
    assert p2.shape == (NUM_ROTATIONS, 224, 224)


def test_cpu_trainer_flushes_subnormal_floats():
    """Subnormal floats slow CPU kernels many times over as a net fine-tunes (trainer.py); a CPU
    Trainer turns them into zeros for the whole process."""
    # Earlier tests' Trainers left flushing on, and it flushes the tensor's own conversion too.
    if not torch.set_flush_denormal(False):
        pytest.skip('this CPU cannot flush subnormal floats')
    subnormal = torch.tensor([1e-39], dtype=torch.float32)
    assert (subnormal * 1.0).item() != 0.0
    make_trainer(stage='push_grasp')
    assert (subnormal * 1.0).item() == 0.0
    assert (torch.tensor([1e-30]) * 1.0).item() == pytest.approx(1e-30)  # normal floats untouched


def test_config_errors():
    with pytest.raises(UserError):
        make_trainer(stage='push_everything')
    with pytest.raises(UserError):
        make_trainer(backbone='vgg16')
    if not torch.cuda.is_available():
        with pytest.raises(UserError):
            make_trainer(device='cuda')


# ---------------------------------------------------------------------------------------------
# Snapshots, explore model
# ---------------------------------------------------------------------------------------------
def test_trainer_snapshot_round_trip(tmp_path):
    a = make_trainer(stage='grasp_only', seed=1)
    color, depth, mask = scene()
    a.backprop(color, depth, mask, 'grasp', (1, 30, 30), 1.0)
    a.save_snapshot(tmp_path / 'snapshot-000001.grasp_only.pth')
    b = make_trainer(stage='push_only', seed=2,
                     snapshot_file=str(tmp_path / 'snapshot-000001.grasp_only.pth'))
    pa, ga = a.forward(color, depth, mask)
    pb, gb = b.forward(color, depth, mask)
    assert np.array_equal(pa, pb) and np.array_equal(ga, gb)
    b.backprop(color, depth, mask, 'push', (1, 30, 30), 1.0)      # testing trains too ...
    assert not np.array_equal(b.forward(color, depth, mask)[0], pa)
    b.reload_snapshot()                                             # ... and resets per trial
    assert np.array_equal(b.forward(color, depth, mask)[0], pa)
    b.backprop(color, depth, mask, 'push', (1, 30, 30), 1.0)
    b.restore_snapshot()                       # weights and a fresh optimiser: no Adam moments left
    assert np.array_equal(b.forward(color, depth, mask)[0], pa) and not b.optimizer.state
    with pytest.raises(UserError, match='goal_conditioned'):
        make_trainer(stage='push_grasp', goal_conditioned=False,
                     snapshot_file=str(tmp_path / 'snapshot-000001.grasp_only.pth'))


def test_explore_model(tmp_path):
    explore = models.build_model('goal_agnostic', 'tiny', pretrained='none', seed=3)
    models.save_snapshot(explore, tmp_path / 'explore.pth')
    tr = make_trainer(stage='grasp_only', explore_snapshot_file=str(tmp_path / 'explore.pth'))
    color, depth, mask = scene()
    q = tr.explore_grasp_q(color, depth)
    assert q.shape == (NUM_ROTATIONS, H, H)
    (rot, row, col), _ = T.best_pixel(q, mask)
    assert mask[row, col] == 255
    with pytest.raises(UserError):
        make_trainer(stage='grasp_only').explore_grasp_q(color, depth)
    conditioned = models.build_model('goal_conditioned', 'tiny', pretrained='none', seed=3)
    models.save_snapshot(conditioned, tmp_path / 'cond.pth')
    with pytest.raises(UserError):
        make_trainer(stage='grasp_only', explore_snapshot_file=str(tmp_path / 'cond.pth'))


# ---------------------------------------------------------------------------------------------
# Replay memory
# ---------------------------------------------------------------------------------------------
def _transition(i: int, primitive: str, reward: float, label: float, predicted: float,
                size: int = 16, with_mask: bool = True) -> T.Transition:
    rng = np.random.default_rng(i)
    color = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    depth = rng.uniform(0, 0.3, (size, size)).astype(np.float32)
    mask = (rng.random((size, size)) > 0.5).astype(np.uint8) * 255 if with_mask else None
    return T.Transition(color, depth, mask, primitive, (i % 16, i % size, (3 * i) % size),
                        label, reward, predicted, i)


def test_replay_picks_same_primitive_other_reward_and_prefers_surprise():
    mem = T.ReplayMemory(capacity=100)
    good = {}
    for k in range(20):    # candidates: push, reward 0, surprise k
        good[mem.add(_transition(k, 'push', 0.0, label=float(k), predicted=0.0))] = k
    for k in range(10):    # same reward as the current one: never picked
        mem.add(_transition(100 + k, 'push', 0.5, label=50.0, predicted=0.0))
    for k in range(10):    # other primitive: never picked
        mem.add(_transition(200 + k, 'grasp', 0.0, label=50.0, predicted=0.0))
    assert sorted(mem.candidates('push', 0.0)) == sorted(good)
    rng = np.random.default_rng(1234)
    picks = [mem.sample('push', 0.0, rng) for _ in range(3000)]
    assert set(picks) <= set(good)
    ranks = np.array([good[p] for p in picks])   # surprise rank 0 .. 19
    # power(2) draws: mean normalised rank 2/3; high surprise far more often than low
    assert abs(ranks.mean() / 19 - 2 / 3) < 0.03
    assert (ranks >= 15).sum() > 5 * (ranks < 5).sum()
    assert mem.sample('grasp', 1.0, rng) is None        # all grasps have reward 0
    # VPG's simplification (--replay_candidates other_reward): any reward but the current one.
    assert sorted(mem.candidates('push', None, other_than=0.5)) == sorted(good)
    assert {mem.sample('push', None, rng, other_than=0.5) for _ in range(200)} <= set(good)
    # updating a prediction changes its surprise, hence its rank
    top = max(good, key=good.get)
    mem.update_predicted(top, float(good[top]))           # surprise now 0
    picks = [mem.sample('push', 0.0, rng) for _ in range(500)]
    assert picks.count(top) < 15


@pytest.mark.parametrize('compress', [True, False])
def test_replay_save_load_round_trip(tmp_path, compress):
    mem = T.ReplayMemory(capacity=4, compress=compress)
    for k in range(6):     # two evicted
        mem.add(_transition(k, 'push' if k % 2 else 'grasp', float(k % 3), 1.0 + k, 0.5 * k,
                            with_mask=k != 3))
    assert len(mem) == 4 and 0 not in mem and 1 not in mem and 5 in mem
    with pytest.raises(KeyError):
        mem[1]
    mem.update_predicted(4, -2.0)
    mem.save(tmp_path / 'replay.npz')
    back = T.ReplayMemory.load(tmp_path / 'replay.npz')
    assert len(back) == 4 and back.compress == compress
    for k in range(2, 6):
        a, b = mem[k], back[k]
        src = _transition(k, a.primitive, 0, 0, 0, with_mask=k != 3)
        assert np.array_equal(b.color_heightmap, src.color_heightmap)
        assert np.abs(b.depth_heightmap - src.depth_heightmap).max() <= 0.6e-5
        if k == 3:
            assert b.goal_mask is None
        else:
            assert np.array_equal(b.goal_mask, src.goal_mask)
        for f in ('primitive', 'action', 'label', 'reward', 'predicted', 'iteration'):
            assert getattr(a, f) == getattr(b, f), f
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    assert [mem.sample('push', 1.0, r1) for _ in range(20)] == [back.sample('push', 1.0, r2) for _ in range(20)]
    assert back.add(_transition(9, 'push', 0, 0, 0)) == 6


def test_replay_memory_size_per_entry():
    mem = T.ReplayMemory(capacity=10, compress=True)
    color, depth, mask = scene(size=224)
    color[:] = 40        # a table with blocks compresses well
    color[depth > 0] = (200, 30, 30)
    mem.add(T.Transition(color, depth, mask, 'grasp', (0, 1, 2), 1.0, 1.0, 0.5, 0))
    assert mem.nbytes < 60_000
    raw = T.ReplayMemory(capacity=10, compress=False)
    raw.add(T.Transition(color, depth, mask, 'grasp', (0, 1, 2), 1.0, 1.0, 0.5, 0))
    assert raw.nbytes == 224 * 224 * 3 + 224 * 224 * 2 + 224 * 224 // 8


def test_relabel_grasp_transition():
    t = _transition(3, 'grasp', 0.0, 0.2, 0.1)
    other = np.zeros((16, 16), np.uint8)
    other[2:5, 2:5] = 255
    r = T.relabel_grasp_transition(t, other, next_max_grasp_q=0.4, gamma=0.5)
    assert r.reward == 1.0 and r.label == pytest.approx(1.2)
    assert np.array_equal(r.goal_mask, other) and r.action == t.action and r.primitive == 'grasp'
    assert r.color_heightmap is t.color_heightmap and t.reward == 0.0


# ---------------------------------------------------------------------------------------------
# Trainer replay step and exact resume
# ---------------------------------------------------------------------------------------------
def _fill(tr: T.Trainer, n: int = 4):
    for k in range(n):
        color, depth, mask = scene(k)
        tr.remember(T.Transition(color, depth, mask, 'grasp', (k, 20 + k, 30), float(k % 2),
                                 float(k % 2), 0.0, k))


def test_trainer_replay_updates_prediction():
    tr = make_trainer(stage='grasp_only')
    _fill(tr)
    rng = np.random.default_rng(0)
    assert tr.replay('grasp', current_reward=1.0, rng=rng) is None   # goal-oriented: not after a success
    res = tr.replay('grasp', current_reward=0.0, rng=rng)
    assert res is not None and res.index in (1, 3)         # the successful goal grasps
    assert tr.memory[res.index].predicted == res.predicted != 0.0
    assert tr.replay('push', current_reward=0.0, rng=rng) is None   # push net frozen


def test_save_load_state_resumes_exactly(tmp_path):
    a = make_trainer(stage='grasp_only', seed=1)
    _fill(a)
    rng = np.random.default_rng(5)
    color, depth, mask = scene(9)
    a.backprop(color, depth, mask, 'grasp', (4, 33, 33), 1.0)
    a.replay('grasp', 0.0, rng)
    a.iteration = 17
    a.save_state(tmp_path / 'state', extra={'rng': rng.bit_generator.state, 'no_change': [1, 0]})

    b = make_trainer(stage='grasp_only', seed=2)
    extra = b.load_state(tmp_path / 'state')
    assert b.iteration == 17 and extra['no_change'] == [1, 0]
    rng_b = np.random.default_rng()
    rng_b.bit_generator.state = extra['rng']
    ra, rb = a.replay('grasp', 0.0, rng), b.replay('grasp', 0.0, rng_b)
    assert ra.index == rb.index and ra.loss == rb.loss
    a.backprop(color, depth, mask, 'grasp', (6, 10, 40), 0.0)
    b.backprop(color, depth, mask, 'grasp', (6, 10, 40), 0.0)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(UserError):
        make_trainer().load_state(tmp_path / 'nothing-here')


def test_replay_byte_bound_drops_the_oldest_and_survives_save_load(tmp_path):
    memory = T.ReplayMemory(capacity=100, compress=False)
    one = _transition(0, 'grasp', 1.0, 1.0, 0.0)
    memory.add(one)
    entry_bytes = memory.nbytes
    bounded = T.ReplayMemory(capacity=100, compress=False, max_bytes=int(3.5 * entry_bytes))
    for i in range(10):
        bounded.add(_transition(i, 'grasp', float(i % 2), 0.0, 0.0))
    assert len(bounded) == 3 and bounded.nbytes <= 3.5 * entry_bytes
    assert 6 not in bounded and all(i in bounded for i in (7, 8, 9))
    with pytest.raises(KeyError):
        bounded[6]
    assert set(bounded.candidates('grasp', 1.0).tolist()) == {7, 9}  # evicted entries are no candidates
    path = tmp_path / 'replay.npz'
    bounded.save(path)
    again = T.ReplayMemory.load(path)
    assert len(again) == 3 and again.nbytes == bounded.nbytes and again.max_bytes == bounded.max_bytes
    again.add(_transition(10, 'grasp', 0.0, 0.0, 0.0))
    assert len(again) == 3 and 7 not in again and 10 in again
    # The transition count bound still works beside it.
    ring = T.ReplayMemory(capacity=2, compress=False, max_bytes=10 * entry_bytes)
    for i in range(5):
        ring.add(_transition(i, 'push', 0.0, 0.0, 0.0))
    assert len(ring) == 2 and ring.nbytes == 2 * entry_bytes
