"""Does the push net learn to pick better pushes from more push outcomes? (issue 6, motion number)

Stage 2 sees one push per state; in the shipped run about 1500 in all. This bench gives the push
net many more outcomes at the same simulated cost per scene: from each state of stage 2's kind
(a random 10-object scene packed around goal 4, `reset_scene(cluster_around=...)`; never a test
case) it tries `--candidates_per_rotation` x 16 candidate pushes from the learned policy's own
start set, each from the same replayed state (the physics is deterministic, as in
`bench/push_oracle.py`), and records what each really did: the goal's occupancy and best grasp
Q (of the snapshot's grasp net) before and after, the change detection, whether the goal left the
workspace, and the max push Q after (the future term). Then one candidate is executed (the net's
pick or a random one, half and half) and the next state is tried the same way, while the test
rule would still push (occupancy > 0.3 or goal grasp Q < 1.5), at most `--pushes_per_scene`.

`collect` writes one compressed .npz per state under --data_dir (resumable: existing states are
kept, the scene seed is the state file's index). `train` fine-tunes the snapshot's push net (grasp
net frozen, as stage 2) on the stored outcomes, labelled by SPEC 5's push_only rule
(rules.reward_and_label: the paper's push reward + gamma x future; `--label_rule ready`, not the
paper's, labels a push after which the test rule grasps 1.0), the loss at every stored candidate
of one state and rotation in one step, and writes a snapshot. States from every tenth scene are
held out and scored before and after: how often the net's pick among their candidates is
rewarded, reaches occupancy 0.3, or leaves the goal ready for the test rule's grasp. Judge the result with
`bench/push_oracle.py --snapshot` (how the net ranks pushes on the test cases) and a Table I row.

Run: `python bench/push_dense.py collect --snapshot S --data_dir D --scenes 0:40`, then
`python bench/push_dense.py train --snapshot S --data_dir D --out S2 --epochs 3`.
`train --augment` (not the paper's) shows each sample in one of its four mirror images with its
colour channels shuffled, against memorising the training scenes.
`python bench/push_dense.py labels --data_dir D` prints what the push_only label pays by the
occupancy a push leaves (it pays any rewarded push alike, however much it clears).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# torch before any MuJoCo renderer: importing it after an EGL context exists segfaults (main.py).
import torch  # noqa: E402,F401
import numpy as np  # noqa: E402

import rules  # noqa: E402
import utils  # noqa: E402
from main import Config, observe  # noqa: E402
from robot import Robot  # noqa: E402
from simulation.mujoco_sim import MujocoSim  # noqa: E402
from simulation.test_cases import PresetCase  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_oracle import after_pushes, candidate_pushes  # noqa: E402

GOAL_OBJ_IDX = 4  # stage 2's --goal_obj_idx in the paper's command lines
NUM_OBJ = 10


def goal_grasp_q(trainer, obs) -> tuple[float, np.ndarray | None]:
    """(best goal-masked grasp Q, the push Q maps) of one state; (0, None) when the goal is gone."""
    if obs.goal_mask is None or not obs.goal_mask.any():
        return 0.0, None
    push_q, grasp_q = trainer.forward(obs.color_heightmap, obs.depth_heightmap, obs.goal_mask)
    return rules.masked_max(grasp_q, obs.goal_mask), push_q


def collect_scene(scene_seed: int, trainer, data_dir: Path, candidates_per_rotation: int,
                  pushes_per_scene: int, end_margin_m: float, min_start_occupancy: float = 0.0) -> int:
    """Every state of one scene tried and written; returns the number of states written. A scene
    whose goal starts at an occupancy under min_start_occupancy is skipped (0): the test cases
    are drawn so (simulation/create.py --min_occupancy), stage 2's scenes are not."""
    rng = np.random.default_rng(scene_seed)
    sim = MujocoSim(num_obj=NUM_OBJ, rng=None)
    robot = Robot(sim)
    written = 0
    try:
        robot.reset_scene(rng, cluster_around=GOAL_OBJ_IDX)
        case = PresetCase(objects=tuple(sim.scene_objects()), goal_obj_idx=GOAL_OBJ_IDX)
        kept: list[tuple[int, int, int]] = []
        for step in range(pushes_per_scene):
            obs = after_pushes(robot, case, kept)
            if obs.goal_mask is None or not obs.goal_mask.any():
                break
            occupancy_before = obs.goal_occupancy
            if step == 0 and occupancy_before < min_start_occupancy:
                break
            q_before, push_q_before = goal_grasp_q(trainer, obs)
            # Only states where SPEC 5's test rule pushes: the pushes the test will ask of the net.
            if rules.choose_primitive_goal_conditioned(q_before, occupancy_before) == "grasp":
                break
            candidates = candidate_pushes(obs, candidates_per_rotation, end_margin_m,
                                          robot.heightmap_resolution_m, rng)
            if not candidates:
                break
            rows = []
            for push in candidates:
                after = after_pushes(robot, case, kept + [push])
                visible = after.goal_mask is not None and bool(after.goal_mask.any())
                change, _ = utils.goal_change_detected(obs.depth_heightmap, after.depth_heightmap, obs.goal_mask)
                q_after, push_q_after = goal_grasp_q(trainer, after)
                rows.append((q_after, 0.0 if push_q_after is None else float(push_q_after.max()),
                             after.goal_occupancy if visible else 1.0,
                             float(change), float(visible)))
            outcome = np.array(rows, dtype=np.float32)
            np.savez_compressed(data_dir / f"scene{scene_seed:05d}-step{step}.npz",
                                color=obs.color_heightmap, depth=obs.depth_heightmap.astype(np.float32),
                                goal_mask=obs.goal_mask, actions=np.array(candidates, dtype=np.int16),
                                grasp_q_after=outcome[:, 0], max_push_q_after=outcome[:, 1],
                                occupancy_after=outcome[:, 2], change=outcome[:, 3], goal_visible=outcome[:, 4],
                                grasp_q_before=np.float32(q_before), occupancy_before=np.float32(occupancy_before))
            written += 1
            if rng.random() < 0.5:  # the net's pick, from the push maps computed for q_before
                pick = int(np.argmax([push_q_before[r, y, x] for r, y, x in candidates]))
            else:
                pick = int(rng.integers(len(candidates)))
            if not outcome[pick, 4]:
                break
            kept.append(candidates[pick])
    finally:
        sim.close()
    return written


LABEL_RULES = ("paper", "ready", "drop")
# Above any other push label: 0.5 + gamma x a push Q that stays under 1 in the trained nets.
READY_LABEL = 1.0


def labels_of(state: dict, gamma: float, label_rule: str = "paper") -> np.ndarray:
    """SPEC 5 push_only labels of every stored candidate (rules.reward_and_label, as Runner._label).

    label_rule 'ready' (not the paper's): a push after which SPEC 5's test rule grasps (the goal's
    occupancy <= 0.3 and its best grasp Q >= 1.5) is labelled READY_LABEL, terminal, so that pushes
    the test rule follows with a grasp rank above pushes that only improve things a little.
    label_rule 'drop' (not the paper's): the goal's occupancy drop itself, terminal (a push that
    throws the goal out: the paper's -0.5), so that the net ranks pushes by how much they clear,
    which SPEC 5's label does not (`label_table`)."""
    labels = []
    for i in range(len(state["actions"])):
        if label_rule == "drop":
            labels.append(float(state["occupancy_before"]) - float(state["occupancy_after"][i])
                          if state["goal_visible"][i] else rules.PUSH_ONLY_PUSH_PENALTY)
            continue
        if label_rule == "ready" and state["goal_visible"][i] and rules.choose_primitive_goal_conditioned(
                float(state["grasp_q_after"][i]), float(state["occupancy_after"][i])) == "grasp":
            labels.append(READY_LABEL)
            continue
        labels.append(rules.reward_and_label("push_only", "push", outcome_of(state, i), gamma)[1])
    return np.array(labels, dtype=np.float32)


def spec5_push_rewards(state: dict, gamma: float) -> np.ndarray:
    """SPEC 5's push reward (0.5, 0 or -0.5) of every stored candidate, whatever the label rule."""
    return np.array([rules.reward_and_label("push_only", "push", outcome_of(state, i), gamma)[0]
                     for i in range(len(state["actions"]))], dtype=np.float32)


def outcome_of(state: dict, i: int) -> rules.Outcome:
    """The measured outcome of stored candidate i, as Runner._label builds it for a push."""
    return rules.measure_outcome(
        "push", False, False, bool(state["change"][i]), float(state["grasp_q_before"]),
        float(state["occupancy_before"]), float(state["occupancy_after"][i]),
        float(state["max_push_q_after"][i]), float(state["grasp_q_after"][i]), float(state["grasp_q_after"][i]),
        True, bool(state["goal_visible"][i]))


def mirror_push_sample(color: np.ndarray, depth: np.ndarray, goal_mask: np.ndarray, rotation: int,
                       pixels_row_col: np.ndarray, flip_cols: bool, flip_rows: bool,
                       num_rotations: int = utils.NUM_ROTATIONS) -> tuple:
    """The mirror image of a push sample: the same push in the mirrored scene.

    color (H, W, 3), depth (H, W), goal_mask (H, W): heightmaps; pixels_row_col (N, 2): push starts.
    A push of rotation r moves along (cos theta, sin theta) in (col, row) (utils.push_end_inside),
    so mirroring the columns sends theta to pi - theta (r -> R/2 - r) and mirroring the rows sends
    it to -theta (r -> -r), modulo R. The table, the gripper and the blocks are mirror-symmetric,
    so the mirrored push has the mirrored outcome and keeps its label. Rotating the scene by a
    multiple of 22.5 deg would teach nothing: the net already sees every rotation of its input."""
    h, w = depth.shape
    pixels = np.array(pixels_row_col, dtype=np.int64).reshape(-1, 2)
    rotation = int(rotation)
    if flip_cols:
        color, depth, goal_mask = color[:, ::-1], depth[:, ::-1], goal_mask[:, ::-1]
        pixels[:, 1] = w - 1 - pixels[:, 1]
        rotation = (num_rotations // 2 - rotation) % num_rotations
    if flip_rows:
        color, depth, goal_mask = color[::-1], depth[::-1], goal_mask[::-1]
        pixels[:, 0] = h - 1 - pixels[:, 0]
        rotation = (-rotation) % num_rotations
    return (np.ascontiguousarray(color), np.ascontiguousarray(depth), np.ascontiguousarray(goal_mask),
            rotation, pixels)


def train(trainer, states: list[dict], epochs: int, rng: np.random.Generator, gamma: float,
          label_rule: str = "paper", augment: bool = False) -> list[float]:
    """Fine-tune the push net: per step one state and one rotation, the mean Huber loss over that
    rotation's stored candidates (Trainer.fit_pixels, the step that trains an executed pixel).

    augment (not the paper's): each step shows the sample in one of its four mirror images
    (mirror_push_sample) with the colour channels in a random order, since the push net fits its
    training states' ranking but not new scenes' (block colours say nothing about a push)."""
    losses = []
    work = []
    for si, s in enumerate(states):
        labels = labels_of(s, gamma, label_rule)
        for rot in np.unique(s["actions"][:, 0]):
            pick = s["actions"][:, 0] == rot
            work.append((si, int(rot), s["actions"][pick, 1:], labels[pick]))
    for epoch in range(epochs):
        epoch_started = time.perf_counter()
        epoch_losses = []
        for k in rng.permutation(len(work)):
            si, rot, rows_cols, target = work[k]
            s = states[si]
            color, depth, goal_mask = s["color"], s["depth"], s["goal_mask"]
            if augment:
                flip_cols, flip_rows = rng.integers(0, 2, size=2).astype(bool)
                color, depth, goal_mask, rot, rows_cols = mirror_push_sample(
                    color, depth, goal_mask, rot, rows_cols, flip_cols, flip_rows)
                color = color[:, :, rng.permutation(3)]
            pixels = [(0, int(y), int(x)) for y, x in rows_cols]
            loss, _ = trainer.fit_pixels(color, depth, goal_mask, "push", [rot], pixels, target)
            epoch_losses.append(loss)
        losses.append(float(np.mean(epoch_losses)))
        print(json.dumps({"epoch": epoch + 1, "mean_loss": losses[-1], "steps": len(work),
                          "seconds": round(time.perf_counter() - epoch_started)}), flush=True)
    return losses


def score(trainer, states: list[dict], gamma: float, label_rule: str = "paper") -> dict:
    """How the net ranks the stored candidates of states it did not train on: per state, the
    Spearman correlation of push Q with the label, and the label and occupancy its pick got."""
    from scipy.stats import spearmanr

    rhos, pick_labels, pick_after, best_after = [], [], [], []
    ready_picks, any_ready = [], []
    for s in states:
        labels = labels_of(s, gamma, label_rule)
        ready = (labels if label_rule == "ready" else labels_of(s, gamma, "ready")) == READY_LABEL
        any_ready.append(bool(ready.any()))
        push_q, _ = trainer.forward(s["color"], s["depth"], s["goal_mask"], heads=("push",))
        q = np.array([push_q[r, y, x] for r, y, x in s["actions"]])
        if np.ptp(labels) > 0:
            rhos.append(spearmanr(q, labels).statistic)
        pick = int(np.argmax(q))
        pick_labels.append(float(labels[pick]))
        ready_picks.append(bool(ready[pick]))
        pick_after.append(float(s["occupancy_after"][pick]))
        best_after.append(float(s["occupancy_after"].min()))
    return {"states": len(states), "spearman_q_vs_label": float(np.nanmean(rhos)),
            "pick_label": float(np.mean(pick_labels)), "pick_occupancy_after": float(np.mean(pick_after)),
            "best_occupancy_after": float(np.mean(best_after)),
            "pick_reaches_threshold": float(np.mean(np.array(pick_after) <= rules.GOAL_OCCUPANCY_THRESHOLD)),
            "pick_leaves_goal_ready": float(np.mean(ready_picks)),
            "states_with_a_ready_candidate": float(np.mean(any_ready))}


# Bins of the goal's occupancy ratio a candidate push leaves (SPEC 3), for `labels`.
OCCUPANCY_AFTER_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 1.01)


def label_table(states: list[dict], gamma: float, bins: tuple[float, ...] = OCCUPANCY_AFTER_BINS) -> list[dict]:
    """What SPEC 5's push_only label pays, by the occupancy ratio a push leaves: per bin the number
    of outcomes, their mean label, the share rewarded +0.5, the mean label of those rewarded, and
    the mean next push Q (the future term) and goal grasp Q after. It shows whether the label
    prefers a push that frees the goal at once over one that frees it a little."""
    occupancy, rewards, labels, next_q, grasp_q = [], [], [], [], []
    for s in states:
        occupancy.append(np.asarray(s["occupancy_after"], float))
        pairs = [rules.reward_and_label("push_only", "push", outcome_of(s, i), gamma) for i in range(len(s["actions"]))]
        rewards.append(np.array([r for r, _ in pairs], float))
        labels.append(np.array([lab for _, lab in pairs], float))
        next_q.append(np.asarray(s["max_push_q_after"], float))
        grasp_q.append(np.asarray(s["grasp_q_after"], float))
    occupancy, rewards, labels, next_q, grasp_q = (np.concatenate(v) if v else np.zeros(0)
                                                   for v in (occupancy, rewards, labels, next_q, grasp_q))
    rewarded = rewards == rules.PUSH_ONLY_PUSH_REWARD
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (occupancy >= lo) & (occupancy < hi)
        mr = m & rewarded
        rows.append({"occupancy_after": [lo, hi], "outcomes": int(m.sum()),
                     "mean_label": float(labels[m].mean()) if m.any() else None,
                     "rewarded_share": float(rewarded[m].mean()) if m.any() else None,
                     "mean_label_rewarded": float(labels[mr].mean()) if mr.any() else None,
                     "mean_next_push_q": float(next_q[m].mean()) if m.any() else None,
                     "mean_grasp_q_after": float(grasp_q[m].mean()) if m.any() else None})
    return rows


def scene_range(text: str) -> range:
    """--scenes FIRST:LAST (LAST excluded) as a range; UserError (one line) otherwise."""
    from utils import UserError

    try:
        first, last = (int(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--scenes must be FIRST:LAST (integers, LAST excluded), got '{text}'") from None
    if not 0 <= first < last:
        raise UserError(f"--scenes needs 0 <= FIRST < LAST, got '{text}'")
    return range(first, last)


def load_state(path: Path) -> dict:
    """One collected state; UserError (one line) for a file `collect` did not write."""
    from utils import UserError

    try:
        state = dict(np.load(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a collected state ({e})") from None
    missing = {"color", "depth", "goal_mask", "actions", "occupancy_after"} - set(state)
    if missing:
        raise UserError(f"{path} is not a collected state (no {', '.join(sorted(missing))})")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("collect", "train", "labels"),
                        help="labels: what the push_only label pays by the occupancy a push leaves (no snapshot)")
    parser.add_argument("--snapshot", help="the snapshot whose nets judge (collect) or train")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--scenes", default="0:20", help="collect: scene seeds FIRST:LAST (LAST excluded)")
    parser.add_argument("--candidates_per_rotation", type=int, default=2)
    parser.add_argument("--min_start_occupancy", type=float, default=0.0,
                        help="collect: skip scenes whose goal starts less crowded than this (test cases: > 0.3)")
    parser.add_argument("--pushes_per_scene", type=int, default=3)
    parser.add_argument("--label_rule", choices=LABEL_RULES, default="paper",
                        help="train: 'paper' (SPEC 5 push_only); not the paper's: 'ready' (a push the test rule "
                             "follows with a grasp is labelled 1, terminal) or 'drop' (the occupancy drop, terminal)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--augment", action="store_true",
                        help="train: mirror images and colour-channel orders of each sample (not the paper's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout_every", type=int, default=10,
                        help="train: one scene in this many (seeds 9, 19, ... for 10; 0: none) is held out and "
                             "scored, not trained on")
    parser.add_argument("--out", default=None, help="train: the fine-tuned snapshot")
    args = parser.parse_args(argv)
    from trainer import trainer_for_snapshot
    from utils import UserError

    data_dir = Path(args.data_dir)
    started = time.perf_counter()
    try:
        if args.mode == "labels":
            paths = sorted(data_dir.glob("scene*.npz"))
            if not paths:
                raise UserError(f"no collected states in {data_dir}")
            table = label_table([load_state(p) for p in paths], Config().future_reward_discount)
            print(json.dumps({"states": len(paths), "by_occupancy_after": table}))
            return 0
        if args.snapshot is None:
            raise UserError(f"{args.mode} needs --snapshot FILE")
        if args.mode == "collect":
            scenes = scene_range(args.scenes)
            data_dir.mkdir(parents=True, exist_ok=True)
            trainer = trainer_for_snapshot(args.snapshot)
            end_margin_m = Config().push_end_margin_m
            for seed in scenes:
                if list(data_dir.glob(f"scene{seed:05d}-*.npz")) or (data_dir / f"scene{seed:05d}.none").exists():
                    continue
                n = collect_scene(seed, trainer, data_dir, args.candidates_per_rotation, args.pushes_per_scene,
                                  end_margin_m, args.min_start_occupancy)
                if n == 0:
                    (data_dir / f"scene{seed:05d}.none").touch()
                print(json.dumps({"scene": seed, "states": n, "seconds": round(time.perf_counter() - started)}),
                      flush=True)
            return 0
        if args.out is None:
            raise UserError("train needs --out FILE")
        trainer = trainer_for_snapshot(args.snapshot, stage="push_only")  # the push net trains, as in stage 2
        paths = sorted(data_dir.glob("scene*.npz"))
        if not paths:
            raise UserError(f"no collected states in {data_dir}")
        held = [args.holdout_every > 0 and int(p.name[5:10]) % args.holdout_every == args.holdout_every - 1
                for p in paths]
        states = [load_state(p) for p, h in zip(paths, held) if not h]
        held_out = [load_state(p) for p, h in zip(paths, held) if h]
        if not states:
            raise UserError(f"every collected state in {data_dir} is held out (--holdout_every)")
        gamma = Config().future_reward_discount
        all_labels = np.concatenate([labels_of(s, gamma, args.label_rule) for s in states])
        # SPEC 5's +0.5 whatever the label rule: the 'ready' and 'drop' labels say nothing of it.
        spec5_rewards = np.concatenate([spec5_push_rewards(s, gamma) for s in states])
        print(json.dumps({"states": len(states), "held_out_states": len(held_out), "candidates": int(all_labels.size),
                          "label_rule": args.label_rule, "mean_label": float(all_labels.mean()),
                          "spec5_rewarded_share": float(np.mean(spec5_rewards == rules.PUSH_ONLY_PUSH_REWARD))}), flush=True)
        before = score(trainer, held_out, gamma, args.label_rule) if held_out else None
        print(json.dumps({"held_out_before": before}), flush=True)
        losses = train(trainer, states, args.epochs, np.random.default_rng(args.seed), gamma, args.label_rule,
                       args.augment)
        trainer.save_snapshot(args.out)
        after = score(trainer, held_out, gamma, args.label_rule) if held_out else None
        print(json.dumps({"out": args.out, "label_rule": args.label_rule, "augment": args.augment, "losses": losses,
                          "held_out_before": before, "held_out_after": after,
                          "seconds": round(time.perf_counter() - started)}))
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
