"""SPEC 5's rules, each one small pure function with its decision table.

Which rule set labels a stage's transitions, rewards and labels per stage, the measured outcome
of an action, which past samples a replay step draws, reset reasons, the no-change counters,
primitive choice and exploration schedules, and the best pixel under a mask. Nothing here
touches a network, a backend or a file; `main.Runner` only sequences them
(observe -> label -> learn -> reset -> choose -> act) and `trainer` applies the labels.

Frames and units: heightmaps are H x H (224), pixel (row, col) = (y, x) of the robot base frame;
an action is (rot, row, col) with theta = rot * 22.5 deg; Q maps are (16, H, H) float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


PRIMITIVES = ('push', 'grasp')
STAGES = ('grasp_only', 'push_only', 'push_grasp')

# SPEC 5 constants (defaults of the command line).
FUTURE_REWARD_DISCOUNT = 0.5
GRASP_ONLY_SUCCESS_REWARD = 1.0
PUSH_ONLY_PUSH_REWARD = 0.5
PUSH_ONLY_PUSH_PENALTY = -0.5
PUSH_ONLY_GRASP_REWARD = 1.5
PUSH_ONLY_ALTERNATING_GRASP_FAIL = -1.0
PUSH_ONLY_IMPROVEMENT_THRESHOLD = 0.1      # improved goal grasp Q
PUSH_ONLY_OCCUPANCY_THRESHOLD = 0.1        # decreased occupancy ratio
PUSH_ONLY_PRE_PUSH_GRASP_Q_THRESHOLD = 0.5
VPG_GRASP_REWARD = 1.0
VPG_PUSH_REWARD = 0.5
GOAL_GRASP_Q_THRESHOLD = 1.5               # push_grasp, goal-conditioned testing
GOAL_OCCUPANCY_THRESHOLD = 0.3
AGNOSTIC_TEST_PUSH_FACTOR = 1.5
GRASP_REWARD_THRESHOLD = 1.8               # --grasp_reward_threshold (push_only)
MAX_PUSH_EPISODE_LENGTH = 5                # --max_push_episode_length


# ==============================================================================================
# Reward and label rules
# ==============================================================================================
def q_label(reward: float, future: float, gamma: float = FUTURE_REWARD_DISCOUNT) -> float:
    """The Q-learning target: reward + gamma * future."""
    return float(reward + gamma * future)


def grasp_only_reward(goal_grasped: bool) -> float:
    """SPEC 5, stage grasp_only, grasp reward.

    | goal object grasped | reward |
    |---------------------|--------|
    | yes                 | 1.0    |
    | no (failed, or another object) | 0.0 |
    Goal-agnostic grasp training: pass goal_grasped = grasp succeeded.
    """
    return GRASP_ONLY_SUCCESS_REWARD if goal_grasped else 0.0


def grasp_only_label(grasp_success: bool, reward: float, next_max_goal_grasp_q: float,
                     gamma: float = FUTURE_REWARD_DISCOUNT) -> float:
    """SPEC 5, stage grasp_only, label.

    | any object grasped | label                                       |
    |--------------------|---------------------------------------------|
    | yes                | reward + gamma * max next goal-masked grasp Q |
    | no                 | reward                                      |
    next_max_goal_grasp_q: masked_max(next grasp Q, next goal mask) from the forward main already
    ran on the next state (0 when the goal left the scene).
    """
    return q_label(reward, next_max_goal_grasp_q if grasp_success else 0.0, gamma)


def goal_probability_label(goal_grasped: bool, gamma: float = FUTURE_REWARD_DISCOUNT) -> float:
    """Stage 3's grasp half under --alternating_grasp_labels goal_probability (not SPEC 5's).

    | goal object grasped | label                                   |
    |---------------------|-----------------------------------------|
    | yes                 | 1 + gamma * 1 / (1 - gamma) = 1/(1-gamma) (2.0) |
    | no (failed, or another object) | 0                            |
    So the grasp Q learns 2 x the chance that the grasp takes the goal, and the test rule's 1.5
    reads "grasp when the goal comes up 3 times in 4".  Stage 1's rule adds gamma x the next
    state's goal grasp Q, but a successful grasp starts a new scene, independent of the grasp: the
    term only sets the scale, and in stage 3's crowded scenes it is lower (the goal of a new
    scene: 1.33 in the tiny16ctx run's grasp half, 1.83 in stage 1), which sank the Q of free
    goals under 1.5 at test time.  1/(1-gamma) is that term's value when every next goal grasp is
    sure, the scale stage 1 tends to (its grasps end at Q 1.9).
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    return 1.0 / (1.0 - gamma) if goal_grasped else 0.0


def push_only_push_reward(improved_grasp_q: float, change_detected: bool,
                          decreased_occupancy: float) -> float:
    """SPEC 5, stage push_only, push reward.

    improved_grasp_q = max goal-masked grasp Q after the push - before it;
    decreased_occupancy = goal occupancy ratio before - after.

    | improved > 0.1 | change | decreased_occupancy > 0.1 | reward |
    |----------------|--------|---------------------------|--------|
    | yes            | yes    | yes                       |  0.5   |
    | any            | no     | any                       | -0.5   |
    | any            | any    | no                        | -0.5   |
    | no             | yes    | yes                       |  0.0   |
    """
    occupancy_down = decreased_occupancy > PUSH_ONLY_OCCUPANCY_THRESHOLD
    if improved_grasp_q > PUSH_ONLY_IMPROVEMENT_THRESHOLD and change_detected and occupancy_down:
        return PUSH_ONLY_PUSH_REWARD
    if not change_detected or not occupancy_down:
        return PUSH_ONLY_PUSH_PENALTY
    return 0.0


def push_only_grasp_reward(goal_grasped: bool, alternating_training: bool = False) -> float:
    """SPEC 5, stage push_only, grasp reward: only a grasp of the goal pays (the paper's code;
    paying any grasp taught pushes to free whatever object).

    | goal grasped | alternating_training | reward |
    |--------------|----------------------|--------|
    | yes          | any                  |  1.5   |
    | no (missed, or another object) | no | 0.0    |
    | no (missed, or another object) | yes | -1.0  |
    """
    if goal_grasped:
        return PUSH_ONLY_GRASP_REWARD
    return PUSH_ONLY_ALTERNATING_GRASP_FAIL if alternating_training else 0.0


def push_only_change_push_reward(change_detected: bool) -> float:
    """VPG's change-only push reward in stage push_only (--push_reward change, the ablation of
    the paper's grasp-net reward): no grasp net, no occupancy.

    | change near the goal | reward |
    |----------------------|--------|
    | yes                  |  0.5   |
    | no                   |  0.0   |
    """
    return VPG_PUSH_REWARD if change_detected else 0.0


def push_only_future_value(improved_grasp_q: float, pre_push_grasp_q: float, goal_grasped: bool,
                           next_max_push_q: float) -> float:
    """SPEC 5, stage push_only, future value (for pushes and grasps alike, as the old code).

    | improved <= 0.1 | pre-push best goal grasp Q < 0.5 | goal not grasped | future          |
    |-----------------|----------------------------------|------------------|-----------------|
    | yes             | yes                              | yes              | 0               |
    | any other combination                                               || max next push Q |
    pre_push_grasp_q: the best goal-masked grasp Q of the state the action was chosen in.
    """
    if (improved_grasp_q <= PUSH_ONLY_IMPROVEMENT_THRESHOLD
            and pre_push_grasp_q < PUSH_ONLY_PRE_PUSH_GRASP_Q_THRESHOLD and not goal_grasped):
        return 0.0
    return float(next_max_push_q)


def vpg_reward(primitive: str, change_detected: bool, grasp_success: bool) -> float:
    """SPEC 5, stage push_grasp / goal-agnostic VPG, reward.

    | primitive | outcome               | reward |
    |-----------|-----------------------|--------|
    | grasp     | grasp succeeded       | 1.0    |
    | grasp     | failed                | 0.0    |
    | push      | change detected       | 0.5    |
    | push      | no change             | 0.0    |
    """
    if primitive == 'grasp':
        return VPG_GRASP_REWARD if grasp_success else 0.0
    if primitive == 'push':
        return VPG_PUSH_REWARD if change_detected else 0.0
    raise ValueError(f"primitive must be 'push' or 'grasp', got {primitive!r}")


def vpg_future_value(change_detected: bool, grasp_success: bool, next_max_push_q: float,
                     next_max_grasp_q: float) -> float:
    """SPEC 5, stage push_grasp / VPG, future value.

    | change detected | grasp succeeded | future                              |
    |-----------------|-----------------|-------------------------------------|
    | no              | no              | 0                                   |
    | otherwise                        || max(max next push Q, max next grasp Q) |
    """
    if not change_detected and not grasp_success:
        return 0.0
    return float(max(next_max_push_q, next_max_grasp_q))


def vpg_label(primitive: str, reward: float, future: float, gamma: float = FUTURE_REWARD_DISCOUNT,
              push_rewards: bool = True) -> float:
    """SPEC 5, stage push_grasp / VPG, label = reward + gamma * future.

    push_rewards=False reproduces VPG without --push_rewards (and the goal-oriented code's
    push_grasp stage): a push's label is gamma * future only.
    """
    if primitive == 'push' and not push_rewards:
        return q_label(0.0, future, gamma)
    return q_label(reward, future, gamma)


@dataclass
class Outcome:
    """What happened after one action, as main measured it (all from the next state).

    grasp_success: any object grasped; goal_grasped: the goal object grasped (goal-agnostic runs:
    equal to grasp_success); change_detected: SPEC 3 change detection; improved_grasp_q,
    decreased_occupancy, pre_push_grasp_q: push_only measurements (see push_only_push_reward);
    next_max_push_q / next_max_grasp_q: maxima of the next state's Q maps from the forward main
    already ran (goal-masked grasp Q for goal-conditioned nets).
    """

    grasp_success: bool = False
    goal_grasped: bool = False
    change_detected: bool = False
    improved_grasp_q: float = 0.0
    decreased_occupancy: float = 0.0
    pre_push_grasp_q: float = 0.0
    next_max_push_q: float = 0.0
    next_max_grasp_q: float = 0.0
    goal_left_workspace: bool = False


PUSH_REWARDS = ('grasp_net', 'change')
ALTERNATING_GRASP_LABELS = ('grasp_only', 'push_only', 'goal_probability')


def _grasp_half_uses_stage1_labels(stage: str, alternating_training: bool, alternating_grasp_labels: str) -> bool:
    """Whether push_only's grasps take stage 1's rewards (--alternating_grasp_labels grasp_only or
    goal_probability)."""
    return stage == 'push_only' and alternating_training and alternating_grasp_labels in ('grasp_only',
                                                                                         'goal_probability')


def reward_and_label(stage: str, primitive: str, outcome: Outcome,
                     gamma: float = FUTURE_REWARD_DISCOUNT, alternating_training: bool = False,
                     push_rewards: bool = True, push_reward: str = 'grasp_net',
                     alternating_grasp_labels: str = 'push_only') -> tuple[float, float]:
    """(reward, label) of one transition by the rule of its stage (the functions above).

    push_reward (push_only): 'grasp_net', the paper's; 'change', VPG's change-only reward.
    alternating_grasp_labels (push_only grasps under alternating_training, ALTERNATING_GRASP_LABELS):
    'push_only', SPEC 5's 1.5 / -1.0 + gamma * next push Q; 'grasp_only', stage 1's rule (1 for
    the goal + gamma * next goal grasp Q), which keeps the grasp Q on the scale that the test
    rule's threshold of 1.5 was set for (the paper's code never updates the grasp head here);
    'goal_probability', 1/(1-gamma) for the goal else 0 (goal_probability_label)."""
    if primitive not in PRIMITIVES:
        raise ValueError(f"primitive must be 'push' or 'grasp', got {primitive!r}")
    o = outcome
    if stage == 'grasp_only':
        reward = grasp_only_reward(o.goal_grasped) if primitive == 'grasp' else 0.0
        return reward, grasp_only_label(o.grasp_success, reward, o.next_max_grasp_q, gamma)
    if stage == 'push_only':
        if alternating_grasp_labels not in ALTERNATING_GRASP_LABELS:
            raise ValueError(f'alternating_grasp_labels must be one of {ALTERNATING_GRASP_LABELS}, '
                             f'got {alternating_grasp_labels!r}')
        if primitive == 'grasp' and _grasp_half_uses_stage1_labels(stage, alternating_training,
                                                                    alternating_grasp_labels):
            reward = grasp_only_reward(o.goal_grasped)
            if alternating_grasp_labels == 'goal_probability':
                return reward, goal_probability_label(o.goal_grasped, gamma)
            return reward, grasp_only_label(o.grasp_success, reward, o.next_max_grasp_q, gamma)
        if primitive == 'push' and o.goal_left_workspace:
            # The push threw the goal out of the workspace: a terminal failure, whatever the
            # occupancy of a goal that is no longer there says (SPEC 5 is silent here).
            return PUSH_ONLY_PUSH_PENALTY, PUSH_ONLY_PUSH_PENALTY
        if primitive == 'push' and push_reward == 'change':
            reward = push_only_change_push_reward(o.change_detected)
        elif primitive == 'push':
            reward = push_only_push_reward(o.improved_grasp_q, o.change_detected, o.decreased_occupancy)
        else:
            reward = push_only_grasp_reward(o.goal_grasped, alternating_training)
        future = push_only_future_value(o.improved_grasp_q, o.pre_push_grasp_q, o.goal_grasped,
                                        o.next_max_push_q)
        return reward, q_label(reward, future, gamma)
    if stage == 'push_grasp':
        reward = vpg_reward(primitive, o.change_detected, o.grasp_success)
        future = vpg_future_value(o.change_detected, o.grasp_success, o.next_max_push_q,
                                  o.next_max_grasp_q)
        return reward, vpg_label(primitive, reward, future, gamma, push_rewards)
    raise ValueError(f'unknown stage {stage!r}')


def grasp_success_reward(reward_stage: str, alternating_training: bool = False,
                         alternating_grasp_labels: str = 'push_only') -> float:
    """The reward a successful (goal) grasp earns under a stage's rules (reward_and_label's)."""
    if _grasp_half_uses_stage1_labels(reward_stage, alternating_training, alternating_grasp_labels):
        return GRASP_ONLY_SUCCESS_REWARD
    return {'grasp_only': GRASP_ONLY_SUCCESS_REWARD, 'push_only': PUSH_ONLY_GRASP_REWARD,
            'push_grasp': VPG_GRASP_REWARD}[reward_stage]


REPLAY_CANDIDATES = ('paper', 'other_reward')


def replay_target_reward(primitive: str, current_reward: float, success_reward: float,
                         goal_oriented: bool) -> Optional[float]:
    """The reward of the past samples one replay step draws from (the paper's main.py), or None
    when nothing is replayed.

    | primitive | run           | current reward      | replay samples with reward |
    |-----------|---------------|---------------------|----------------------------|
    | push      | any           | 0.5                 | 0                          |
    | push      | any           | anything else       | 0.5                        |
    | grasp     | goal-agnostic | success_reward      | 0                          |
    | grasp     | goal-agnostic | anything else       | success_reward             |
    | grasp     | goal-oriented | success_reward      | none                       |
    | grasp     | goal-oriented | anything else       | success_reward (goal grasps) |
    Push samples rewarded -0.5 are never replayed.  success_reward: grasp_success_reward().
    VPG's simplification (--replay_candidates other_reward, REPLAY_CANDIDATES) has no single target:
    it draws among all samples whose reward differs from the current one.
    """
    same = lambda a, b: abs(a - b) < 1e-6  # noqa: E731
    if primitive == 'push':
        return 0.0 if same(current_reward, VPG_PUSH_REWARD) else VPG_PUSH_REWARD
    if primitive != 'grasp':
        raise ValueError(f"primitive must be 'push' or 'grasp', got {primitive!r}")
    if same(current_reward, success_reward):
        return None if goal_oriented else 0.0
    return float(success_reward)


# ==============================================================================================
# Action selection
# ==============================================================================================
def best_pixel(q: np.ndarray, allowed: Optional[np.ndarray] = None) -> tuple[tuple[int, int, int], float]:
    """Arg-max of Q over rotations and the allowed pixels.

    q: (R, H, W); allowed: (H, W) bool (any nonzero counts), the same for every rotation, or
    (R, H, W) per rotation, or None for all pixels.  Returns ((rot, row, col), value); ties go to
    the first in C order.  Raises ValueError when no pixel is allowed (callers reset the scene
    before that happens).
    """
    if allowed is None:
        flat = int(np.argmax(q))
    else:
        allowed = np.asarray(allowed).astype(bool)
        if allowed.shape not in (q.shape[1:], q.shape):
            raise ValueError(f'allowed mask {allowed.shape} does not match Q maps {q.shape}')
        if not allowed.any():
            raise ValueError('no allowed pixel to act on')
        flat = int(np.argmax(np.where(allowed if allowed.ndim == 3 else allowed[None], q, -np.inf)))
    rot, row, col = np.unravel_index(flat, q.shape)
    return (int(rot), int(row), int(col)), float(q[rot, row, col])


def masked_max(q: np.ndarray, mask: Optional[np.ndarray]) -> float:
    """Max of q (R, H, W) over all rotations and the pixels where mask (H, W) is nonzero; e.g.
    the goal-masked grasp Q.  0.0 for an empty mask (the goal is gone: no future value), like the
    old code's multiply-by-mask.  mask None: the plain maximum."""
    if mask is None:
        return float(np.max(q))
    sel = np.asarray(mask) > 0
    if not sel.any():
        return 0.0
    return float(np.max(q[:, sel]))


def choose_primitive_goal_conditioned(best_goal_grasp_q: float, occupancy_ratio: Optional[float],
                                      grasp_q_threshold: float = GOAL_GRASP_Q_THRESHOLD,
                                      occupancy_threshold: float = GOAL_OCCUPANCY_THRESHOLD,
                                      pushes_in_a_row: int = 0, max_pushes_before_grasp: int = 0) -> str:
    """SPEC 5 push_grasp, goal-conditioned: grasp unless the best goal grasp Q < 1.5 or the goal's
    occupancy ratio > 0.3, then push.  occupancy_ratio None ignores occupancy (the old code's
    --random_scene_testing). max_pushes_before_grasp > 0 (not the paper's rule): grasp anyway once
    that many pushes came in a row, as each push_only training episode ends."""
    if max_pushes_before_grasp > 0 and pushes_in_a_row >= max_pushes_before_grasp:
        return 'grasp'
    if best_goal_grasp_q < grasp_q_threshold:
        return 'push'
    if occupancy_ratio is not None and occupancy_ratio > occupancy_threshold:
        return 'push'
    return 'grasp'


def choose_primitive_goal_agnostic(best_push_q: float, best_grasp_q: float, is_testing: bool) -> str:
    """SPEC 5 push_grasp, goal-agnostic: testing pushes if push Q > 1.5 x grasp Q (conservative),
    training pushes if push Q > grasp Q; grasp otherwise."""
    factor = AGNOSTIC_TEST_PUSH_FACTOR if is_testing else 1.0
    return 'push' if best_push_q > factor * best_grasp_q else 'grasp'


def choose_primitive_push_only(best_goal_grasp_q: float, push_step: int,
                               grasp_reward_threshold: float = GRASP_REWARD_THRESHOLD,
                               max_push_episode_length: int = MAX_PUSH_EPISODE_LENGTH) -> str:
    """SPEC 5 push_only: push, except grasp once the best goal grasp Q exceeds Qg or the episode
    has had max_push_episode_length pushes (push_step counts pushes done, from 0)."""
    if best_goal_grasp_q > grasp_reward_threshold or push_step >= max_push_episode_length:
        return 'grasp'
    return 'push'


def explore_probability(iteration: int, explore_rate_decay: bool, is_testing: bool = False) -> float:
    """SPEC 5 push_grasp training: epsilon = max(0.5 * 0.9998^t, 0.1) with --explore_rate_decay,
    else 0.5; 0 in testing."""
    if is_testing:
        return 0.0
    return max(0.5 * 0.9998 ** iteration, 0.1) if explore_rate_decay else 0.5


def grasp_explore_probability(iteration: int, explore_rate_decay: bool = True,
                              is_testing: bool = False) -> float:
    """SPEC 5 grasp_only --grasp_explore: probability max(0.8 * 0.998^t, 0.1) that the grasp pixel
    comes from the explore model (0.8 without --explore_rate_decay, as the old code; 0 testing)."""
    if is_testing:
        return 0.0
    return max(0.8 * 0.998 ** iteration, 0.1) if explore_rate_decay else 0.8


def random_primitive(rng: np.random.Generator) -> str:
    """An exploration primitive: push or grasp with equal probability."""
    return PRIMITIVES[int(rng.integers(2))]


def random_push(allowed: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """An exploration push (rotation, row, col) drawn uniformly from the True cells of `allowed`
    (R, H, W); from every cell when none is True."""
    cells = np.flatnonzero(allowed)
    flat = int(rng.choice(cells)) if cells.size else int(rng.integers(allowed.size))
    rotation, row, col = np.unravel_index(flat, allowed.shape)
    return int(rotation), int(row), int(col)


# ==============================================================================================
# Which rules, what happened, when to reset, the counters
# ==============================================================================================
def rule_set(stage: str, goal_oriented: bool) -> str:
    """Whose reward rules label a stage's transitions (the stage names of reward_and_label).

    | stage      | goal-oriented | rules       | why                                             |
    |------------|---------------|-------------|-------------------------------------------------|
    | grasp_only | any           | grasp_only  | SPEC 5                                          |
    | push_only  | yes           | push_only   | SPEC 5 (push_only needs a goal)                 |
    | push_grasp | yes           | push_only   | pushes paid by the grasp net, as they were trained |
    | push_grasp | no            | push_grasp  | VPG                                             |
    """
    if stage not in STAGES:
        raise ValueError(f'unknown stage {stage!r}')
    return 'push_only' if (stage == 'push_grasp' and goal_oriented) else stage


def is_target_grasp(grasp_success: bool, grasp_obj: int, goal_obj: int, goal_oriented: bool) -> bool:
    """A grasp that counts: of the goal when goal-oriented, of anything otherwise."""
    return bool(grasp_success and (not goal_oriented or grasp_obj == goal_obj))


def measure_outcome(primitive: str, grasp_success: bool, goal_grasped: bool, change_detected: bool,
                    best_goal_grasp_q_before: float, occupancy_before: float, occupancy_after: float,
                    next_max_push_q: Optional[float], next_max_grasp_q: Optional[float],
                    next_max_goal_grasp_q: Optional[float], goal_oriented: bool,
                    goal_visible: bool = True) -> Outcome:
    """The measured outcome of one action, from the state it was chosen in and the next one.

    next_max_*: maxima of the next state's Q maps from the forward already run to choose the next
    action (None: no next forward, e.g. a test trial ends here; then nothing improved and the
    future is 0). improved_grasp_q = best goal-masked grasp Q after - before (SPEC 5);
    decreased_occupancy = occupancy before - after.
    """
    has_next = next_max_grasp_q is not None
    next_goal = next_max_goal_grasp_q if (has_next and next_max_goal_grasp_q is not None) else 0.0
    improved = next_goal - best_goal_grasp_q_before if has_next else 0.0
    return Outcome(grasp_success=grasp_success, goal_grasped=goal_grasped, change_detected=change_detected,
                   improved_grasp_q=float(improved), decreased_occupancy=float(occupancy_before - occupancy_after),
                   pre_push_grasp_q=float(best_goal_grasp_q_before),
                   next_max_push_q=float(next_max_push_q) if next_max_push_q is not None else 0.0,
                   next_max_grasp_q=float(next_goal if goal_oriented else (next_max_grasp_q or 0.0)),
                   goal_left_workspace=bool(goal_oriented and primitive == 'push' and not goal_visible))


NO_CHANGE_RESET = 10  # SPEC 5: new scene after more than 10 no-change actions
EMPTY_TABLE_PIXELS = {False: 300, True: 10}  # SPEC 5: training / testing


def count_change(no_change_count: int, no_change_in_a_row: dict, primitive: str,
                 change_detected: bool) -> tuple[int, dict]:
    """The no-change counters after one action: (actions in a row that changed nothing, per
    primitive the same count for --heuristic_bootstrap). A change resets both to 0."""
    in_a_row = dict(no_change_in_a_row)
    if change_detected:
        in_a_row[primitive] = 0
        return 0, in_a_row
    in_a_row[primitive] = in_a_row.get(primitive, 0) + 1
    return no_change_count + 1, in_a_row


def reset_reason(training: bool, goal_oriented: bool, flown_off: list, occupied_pixels: int,
                 no_change_count: int, goal_visible: bool, goal_was_grasped: bool,
                 grasp_failures_in_a_row: int, max_goal_grasp_failures: int,
                 object_grasped: bool = False, actions_in_trial: int = 0,
                 max_trial_actions: int = 0) -> Optional[str]:
    """Why the scene (and a test trial) ends now, or None. First match wins:

    | condition                                                        | reason                  |
    |------------------------------------------------------------------|-------------------------|
    | objects thrown off the table                                     | flew off                |
    | occupied pixels < 300 (training) / 10 (testing)                  | table (nearly) empty    |
    | more than 10 actions in a row changed nothing                    | no change               |
    | goal-oriented, goal no longer seen, and it was just grasped      | goal grasped            |
    | goal-oriented, goal no longer seen otherwise                     | goal left the workspace |
    | testing, max_goal_grasp_failures failed grasps in a row          | failed trial            |
    | testing, max_trial_actions > 0 actions in this trial             | failed trial (the cap)  |
    | training, goal-oriented, any object just grasped                 | a new scene (the paper's code) |
    """
    if flown_off:
        return f"object(s) {list(flown_off)} flew off the table"
    if occupied_pixels < EMPTY_TABLE_PIXELS[not training]:
        return "the table is (nearly) empty"
    if no_change_count > NO_CHANGE_RESET:
        return f"more than {NO_CHANGE_RESET} actions changed nothing"
    if goal_oriented and not goal_visible:
        return "goal grasped" if goal_was_grasped else "the goal left the workspace"
    if not training and grasp_failures_in_a_row >= max_goal_grasp_failures:
        return f"{grasp_failures_in_a_row} failed grasps in a row"
    if not training and 0 < max_trial_actions <= actions_in_trial:
        return f"{actions_in_trial} actions without grasping the goal"
    if training and goal_oriented and object_grasped:
        # So that training scenes do not thin out; the label still bootstraps from this state.
        return "an object was grasped (training: a new scene)"
    return None
