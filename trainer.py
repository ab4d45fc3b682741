"""Q-learning for goal-oriented push-grasping (SPEC section 5).

Contents, top to bottom (the reward, label, replay-candidate and choice rules themselves are
the pure functions of rules.py):
  * ReplayMemory: prioritised experience replay kept in memory, compactly, with save/load;
  * goal relabelling;
  * Trainer: the nets, freezing per stage, forward, backprop, replay, snapshots, resume.

Frames and units: heightmaps are H x H (224) with pixel (row, col) = (y, x) of the robot base
frame; an action is (rot, row, col) with rot the rotation index (theta = rot * 22.5 deg); Q maps
are (16, H, H) float32.  Randomness comes only from the np.random.Generator the caller passes and
from TrainerConfig.seed (network initialisation); nothing here touches global np.random.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import forward_modes
import models
from utils import NUM_ROTATIONS, UserError

# The rules of SPEC 5 live in rules.py; re-exported here for the callers that know them as trainer's.
from rules import *  # noqa: E402,F401,F403
from rules import (ALTERNATING_GRASP_LABELS, PRIMITIVES, REPLAY_CANDIDATES, STAGES, FUTURE_REWARD_DISCOUNT,  # noqa: E402
                   grasp_only_label, grasp_only_reward, grasp_success_reward, replay_target_reward)


# ==============================================================================================
# Prioritised experience replay
# ==============================================================================================
@dataclass
class Transition:
    """One training sample: a state, the action taken in it and its target.

    color_heightmap (H, H, 3) uint8 RGB; depth_heightmap (H, H) float32 m (valid map, no NaN);
    goal_mask (H, H) uint8 0/255 or None; primitive 'push' | 'grasp'; action (rot, row, col);
    label: Q target; reward; predicted: the net's Q for this action when last evaluated;
    iteration: the training iteration it came from.
    """

    color_heightmap: np.ndarray
    depth_heightmap: np.ndarray
    goal_mask: Optional[np.ndarray]
    primitive: str
    action: tuple[int, int, int]
    label: float
    reward: float
    predicted: float
    iteration: int


DEPTH_UNIT_M = 1e-5   # uint16 depth, as the depth heightmap PNGs: 0 .. 0.655 m, 10 um steps
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]


class ReplayMemory:
    """Bounded in-memory replay of transitions (SPEC 5 --experience_replay).

    Each entry keeps its heightmaps compactly: colour and uint16 depth (1e-5 m, the same
    quantisation as the logged depth heightmap PNGs the old code re-read) as in-memory PNGs and
    the goal mask as a PNG (compress=True).  Measured for 224 x 224: 3 KiB per entry for a
    noise-free rendered-like scene (2 ms to add, 0.5 ms to read back), 128 KiB with +-3 colour
    and 0.5 mm depth noise per pixel (6 ms / 2 ms).  Raw (compress=False): 147 KB colour +
    98 KB depth + 6 KB bit-packed mask = 251 KB.  Default capacity 10000 entries: at most
    about 1.3 GB compressed even for noisy images (2.5 GB raw); when full the oldest entry is
    dropped.  Entries are addressed by a stable index (the count of transitions added before
    it); an evicted index raises KeyError.
    """

    def __init__(self, capacity: int = 10000, compress: bool = True, max_bytes: Optional[int] = None):
        if capacity < 1:
            raise UserError(f'replay capacity must be >= 1, got {capacity}')
        if max_bytes is not None and max_bytes < 1:
            raise UserError(f'replay byte bound must be >= 1, got {max_bytes}')
        self.capacity = int(capacity)
        self.compress = bool(compress)
        # Second bound: heightmap payload bytes; the oldest entries go first when it is passed
        # (noisy real-camera heightmaps compress 40x worse than rendered ones).
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self._count = 0                                           # transitions ever added
        self._first = 0                                           # oldest index still held
        self._bytes = 0                                           # payload bytes held
        self._id = np.full(self.capacity, -1, np.int64)           # index held by each slot
        self._primitive = np.full(self.capacity, -1, np.int8)     # 0 push, 1 grasp
        self._action = np.zeros((self.capacity, 3), np.int32)
        self._label = np.zeros(self.capacity, np.float64)
        self._reward = np.zeros(self.capacity, np.float64)
        self._predicted = np.zeros(self.capacity, np.float64)
        self._iteration = np.zeros(self.capacity, np.int64)
        self._size = np.zeros(self.capacity, np.int32)            # heightmap side H
        self._payload: list[Optional[tuple[bytes, bytes, Optional[bytes]]]] = [None] * self.capacity

    # -- storage -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count - self._oldest()

    def _oldest(self) -> int:
        return max(self._first, self._count - self.capacity, 0)

    def __contains__(self, index: int) -> bool:
        return self._oldest() <= index < self._count

    def _slot(self, index: int) -> int:
        if index not in self:
            raise KeyError(f'replay entry {index} is not in memory (evicted or never added)')
        return index % self.capacity

    def _encode(self, color: np.ndarray, depth: np.ndarray, mask: Optional[np.ndarray]
                ) -> tuple[bytes, bytes, Optional[bytes]]:
        d16 = np.clip(np.round(np.asarray(depth, np.float64) / DEPTH_UNIT_M), 0, 65535).astype(np.uint16)
        m = None if mask is None else (np.asarray(mask) > 0)
        if self.compress:
            c = cv2.imencode('.png', np.ascontiguousarray(color), _PNG_FAST)[1].tobytes()
            d = cv2.imencode('.png', d16, _PNG_FAST)[1].tobytes()
            mb = None if m is None else cv2.imencode('.png', m.astype(np.uint8), _PNG_FAST)[1].tobytes()
        else:
            c, d = np.ascontiguousarray(color).tobytes(), d16.tobytes()
            mb = None if m is None else np.packbits(m).tobytes()
        return c, d, mb

    def _decode(self, slot: int) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        c, d, mb = self._payload[slot]
        h = int(self._size[slot])
        if self.compress:
            color = cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_UNCHANGED)
            d16 = cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED)
            mask = None if mb is None else cv2.imdecode(np.frombuffer(mb, np.uint8), cv2.IMREAD_UNCHANGED) * 255
        else:
            color = np.frombuffer(c, np.uint8).reshape(h, h, 3).copy()
            d16 = np.frombuffer(d, np.uint16).reshape(h, h)
            mask = None if mb is None else np.unpackbits(np.frombuffer(mb, np.uint8))[:h * h].reshape(h, h) * 255
        depth = (d16.astype(np.float64) * DEPTH_UNIT_M).astype(np.float32)
        return color, depth, None if mask is None else mask.astype(np.uint8)

    def add(self, t: Transition) -> int:
        """Store a transition; returns its index."""
        if t.primitive not in PRIMITIVES:
            raise ValueError(f"primitive must be 'push' or 'grasp', got {t.primitive!r}")
        models.check_heightmaps(t.color_heightmap, t.depth_heightmap, t.goal_mask)
        index = self._count
        slot = index % self.capacity
        if self._payload[slot] is not None:  # the ring overwrites the oldest entry
            self._bytes -= self._payload_bytes(self._payload[slot])
        self._id[slot] = index
        self._primitive[slot] = PRIMITIVES.index(t.primitive)
        self._action[slot] = t.action
        self._label[slot] = t.label
        self._reward[slot] = t.reward
        self._predicted[slot] = t.predicted
        self._iteration[slot] = t.iteration
        self._size[slot] = t.color_heightmap.shape[0]
        self._payload[slot] = self._encode(t.color_heightmap, t.depth_heightmap, t.goal_mask)
        self._bytes += self._payload_bytes(self._payload[slot])
        self._count += 1
        self._first = self._oldest()
        while self.max_bytes is not None and self._bytes > self.max_bytes and len(self) > 1:
            old = self._first % self.capacity
            self._bytes -= self._payload_bytes(self._payload[old])
            self._payload[old], self._id[old], self._primitive[old] = None, -1, -1
            self._first += 1
        return index

    @staticmethod
    def _payload_bytes(payload: tuple) -> int:
        return sum(len(part) for part in payload if part is not None)

    def __getitem__(self, index: int) -> Transition:
        slot = self._slot(index)
        color, depth, mask = self._decode(slot)
        return Transition(color, depth, mask, PRIMITIVES[self._primitive[slot]],
                          tuple(int(v) for v in self._action[slot]), float(self._label[slot]),
                          float(self._reward[slot]), float(self._predicted[slot]),
                          int(self._iteration[slot]))

    def update_predicted(self, index: int, value: float) -> None:
        """Record the net's new Q for a replayed entry (its surprise changes with it)."""
        self._predicted[self._slot(index)] = value

    @property
    def nbytes(self) -> int:
        """Bytes of stored heightmap payloads (the metadata arrays are negligible)."""
        return self._bytes

    # -- sampling ------------------------------------------------------------------------------
    def candidates(self, primitive: str, target_reward: Optional[float],
                   other_than: Optional[float] = None) -> np.ndarray:
        """Indices of stored entries of `primitive` whose reward is target_reward
        (replay_target_reward says which), or, with other_than, differs from it."""
        code = PRIMITIVES.index(primitive)
        if other_than is None:
            rewards = np.abs(self._reward - target_reward) <= 1e-6
        else:
            rewards = np.abs(self._reward - other_than) > 1e-6
        return self._id[(self._id >= 0) & (self._primitive == code) & rewards]

    def sample(self, primitive: str, target_reward: Optional[float], rng: np.random.Generator,
               other_than: Optional[float] = None) -> Optional[int]:
        """Pick one entry to replay, as VPG does, or None when there is no candidate.

        Candidates: same primitive, reward == target_reward (or != other_than).  They are ranked by surprise
        |predicted - label| ascending (ties: older first) and the rank is drawn as
        round(rng.power(2) * (n - 1)): density 2x on [0, 1], so high surprise is preferred.
        """
        ids = self.candidates(primitive, target_reward, other_than)
        if ids.size == 0:
            return None
        slots = ids % self.capacity
        surprise = np.abs(self._predicted[slots] - self._label[slots])
        order = np.lexsort((ids, surprise))
        rank = int(np.round(rng.power(2) * (ids.size - 1)))
        return int(ids[order[rank]])

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything as numpy arrays (payloads concatenated into one byte array + lengths)."""
        order = np.array(sorted(i for i in self._id if i >= 0), np.int64)
        slots = order % self.capacity
        parts, lengths = [], np.zeros((len(order), 3), np.int64)
        for j, s in enumerate(slots):
            c, d, m = self._payload[s]
            lengths[j] = (len(c), len(d), -1 if m is None else len(m))
            parts += [c, d, m or b'']
        blob = np.frombuffer(b''.join(parts), np.uint8) if parts else np.zeros(0, np.uint8)
        return {'capacity': np.int64(self.capacity), 'compress': np.bool_(self.compress),
                'count': np.int64(self._count), 'ids': order,
                'max_bytes': np.int64(-1 if self.max_bytes is None else self.max_bytes),
                'primitive': self._primitive[slots], 'action': self._action[slots],
                'label': self._label[slots], 'reward': self._reward[slots],
                'predicted': self._predicted[slots], 'iteration': self._iteration[slots],
                'size': self._size[slots], 'lengths': lengths, 'blob': blob}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        max_bytes = int(state['max_bytes']) if 'max_bytes' in state else -1
        self.__init__(int(state['capacity']), bool(state['compress']), None if max_bytes < 0 else max_bytes)
        self._count = int(state['count'])
        ids = np.asarray(state['ids'])
        self._first = int(ids.min()) if ids.size else self._count
        blob = np.asarray(state['blob']).tobytes()
        pos = 0
        for j, index in enumerate(np.asarray(state['ids'])):
            s = int(index) % self.capacity
            lc, ld, lm = (int(v) for v in state['lengths'][j])
            c, d = blob[pos:pos + lc], blob[pos + lc:pos + lc + ld]
            pos += lc + ld
            m = None
            if lm >= 0:
                m = blob[pos:pos + lm]
                pos += lm
            self._payload[s] = (c, d, m)
            self._bytes += self._payload_bytes(self._payload[s])
            self._id[s] = index
            for name in ('primitive', 'action', 'label', 'reward', 'predicted', 'iteration', 'size'):
                getattr(self, '_' + name)[s] = state[name][j]

    def save(self, path: str | os.PathLike) -> None:
        """Write to an .npz file (no pickle) atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + '.tmp.npz')
        np.savez(tmp, **self.state_dict())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> 'ReplayMemory':
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f'cannot read replay memory {path}: {exc}') from None
        memory = cls(int(state['capacity']), bool(state['compress']))
        memory.load_state_dict(state)
        return memory


def relabel_grasp_transition(t: Transition, grasped_object_mask: np.ndarray,
                             next_max_grasp_q: float = 0.0, gamma: float = FUTURE_REWARD_DISCOUNT,
                             predicted: float = 0.0) -> Transition:
    """SPEC 5 goal relabelling (stage grasp_only): a successful grasp of a non-goal object is
    also a successful grasp of a goal that is that object.

    Returns the extra transition: same state and action, goal mask = the grasped object's mask
    at that time (H, H uint8 0/255), reward 1 (grasp_only_reward(True)), label by
    grasp_only_label with next_max_grasp_q (the grasped object left the scene, so 0 unless the
    caller knows better).  predicted: the net never scored this goal; 0 makes its surprise
    |label|, so it is replayed early.
    """
    reward = grasp_only_reward(True)
    return dataclasses.replace(
        t, goal_mask=np.asarray(grasped_object_mask, np.uint8), primitive='grasp', reward=reward,
        label=grasp_only_label(True, reward, next_max_grasp_q, gamma), predicted=float(predicted))


# ==============================================================================================
# Trainer
# ==============================================================================================
@dataclass
class TrainerConfig:
    """Everything the Trainer needs; field names follow the command-line flags.

    stage: 'grasp_only' | 'push_only' | 'push_grasp'.  goal_conditioned: build the five-trunk
    goal-conditioned net (--grasp_goal_conditioned) rather than goal-agnostic VPG.
    goal_oriented: the task has a goal (--goal_conditioned: replay draws goal grasps only).
    reward_stage: whose reward rules label the transitions (default: stage).  backbone:
    'densenet121' (faithful) | 'resnet18' | 'tiny'.  device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'.
    pretrained_weights: 'auto' (torchvision cache) | 'none' | a file path; ignored when
    snapshot_file is given.  precision 'fp32' | 'bf16' (autocast), channels_last, norm_mode
    'per_sample' (faithful) | 'running': speed options, see models.py; rotation_chunk: rotations
    per batch of a multi-rotation forward, 0 = the device's default (forward_modes.py; the Q maps
    are the same).  replay_capacity /
    replay_compress / replay_max_bytes: ReplayMemory's bounds.  seed: network initialisation.
    """

    stage: str = 'grasp_only'
    goal_conditioned: bool = True
    goal_oriented: bool = True
    reward_stage: Optional[str] = None
    replay_candidates: str = 'paper'
    backbone: str = 'densenet121'
    device: str = 'auto'
    future_reward_discount: float = FUTURE_REWARD_DISCOUNT
    alternating_training: bool = False
    alternating_grasp_labels: str = 'push_only'
    cooperative_training: bool = False
    pretrained_weights: str = 'auto'
    snapshot_file: Optional[str] = None
    explore_snapshot_file: Optional[str] = None
    precision: str = 'fp32'
    channels_last: bool = False
    norm_mode: str = 'per_sample'
    rotation_chunk: int = 0
    learning_rate: float = 1e-4
    weight_decay: float = 2e-5
    adam_betas: tuple[float, float] = (0.9, 0.99)
    replay_capacity: int = 10000
    replay_compress: bool = True
    replay_max_bytes: Optional[int] = None
    seed: int = 1234

    def validate(self) -> None:
        """Raise UserError (one line) on a bad value."""
        choices = {'stage': STAGES, 'backbone': models.BACKBONES, 'precision': models.PRECISIONS,
                   'norm_mode': ('per_sample', 'running'), 'replay_candidates': REPLAY_CANDIDATES,
                   'alternating_grasp_labels': ALTERNATING_GRASP_LABELS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name} must be one of {', '.join(allowed)}, got '{getattr(self, name)}'")
        if not (isinstance(self.rotation_chunk, int) and self.rotation_chunk >= 0):
            raise UserError(f'--rotation_chunk must be an integer >= 0 (0: per device), got {self.rotation_chunk}')
        if not 0.0 <= self.future_reward_discount <= 1.0:
            raise UserError(f'--future_reward_discount must be in [0, 1], got {self.future_reward_discount}')


def trainable_nets(stage: str, alternating_training: bool = False,
                   cooperative_training: bool = False) -> tuple[bool, bool]:
    """(push net trains, grasp net trains) per SPEC 5.

    | stage      | flags                 | push net | grasp net (incl. goal-mask trunk) |
    |------------|-----------------------|----------|-----------------------------------|
    | grasp_only | any                   | frozen   | trains                            |
    | push_only  | none                  | trains   | frozen (the discriminator)        |
    | push_only  | alternating (wins)    | frozen   | trains                            |
    | push_only  | cooperative           | trains   | trains                            |
    | push_grasp | any                   | trains   | trains                            |
    """
    if stage == 'grasp_only':
        return False, True
    if stage == 'push_only':
        if alternating_training:
            return False, True
        return True, bool(cooperative_training)
    if stage == 'push_grasp':
        return True, True
    raise UserError(f"unknown stage '{stage}'")


@dataclass
class ReplayResult:
    """One replay step: the entry replayed, its loss, its label and the Q it had before."""

    index: int
    loss: float
    label: float
    predicted: float


class Trainer:
    """The Q nets of one run and how they learn.

    Typical iteration (main.py):
        push_q, grasp_q = trainer.forward(color, depth, goal_mask)       # one 16-rotation pass
        ... label the previous transition with maxima of these maps (reward_and_label) ...
        trainer.backprop(prev_color, prev_depth, prev_mask, prev_primitive, prev_action, label)
        trainer.remember(Transition(...));  trainer.replay(prev_primitive, reward, rng)
        trainer.iteration += 1
    """

    def __init__(self, config: TrainerConfig):
        config.validate()
        self.config = config
        self.device = self._resolve_device(config.device)
        if self.device.type == 'cpu':
            # Subnormal floats (under 1.2e-38) slow x86 CPU kernels many times over, and a net's
            # weights and activations drift into that range as it fine-tunes: with them a 3-epoch
            # push_dense snapshot took 0.129 s a training step instead of 0.088 s, and a 6-epoch
            # run's fifth epoch had not ended after 32 minutes against 11 for each earlier one.
            # Flushed to zero, nothing above 1e-38 changes. Process-wide: every entry point that
            # computes Q builds a Trainer.
            torch.set_flush_denormal(True)
        self.gamma = config.future_reward_discount
        self.rotation_chunk = forward_modes.resolve_rotation_chunk(config.rotation_chunk, self.device)
        self.iteration = 0

        arch = 'goal_conditioned' if config.goal_conditioned else 'goal_agnostic'
        pretrained = 'none' if config.snapshot_file else config.pretrained_weights
        self.model = models.build_model(arch, config.backbone, pretrained, seed=config.seed).to(self.device)
        if config.snapshot_file:
            models.load_snapshot(self.model, config.snapshot_file, map_location=self.device)
        self._configure_speed(self.model)

        self.explore_model: Optional[models.RotatedQNet] = None
        if config.explore_snapshot_file:
            self.explore_model = models.build_model_from_snapshot(
                config.explore_snapshot_file, self.device, default_backbone=config.backbone)
            if self.explore_model.goal_conditioned:
                raise UserError(f'explore snapshot {config.explore_snapshot_file} holds a '
                                f'goal-conditioned net; --grasp_explore needs a goal-agnostic grasp net')
            self._configure_speed(self.explore_model)
            self.explore_model.requires_grad_(False).eval()

        self.train_push, self.train_grasp = trainable_nets(
            config.stage, config.alternating_training, config.cooperative_training)
        self._frozen_modules = ([] if self.train_push else self.model.push_modules()) + \
                               ([] if self.train_grasp else self.model.grasp_modules())
        for m in self._frozen_modules:
            m.requires_grad_(False)
        self.optimizer = self._make_optimizer()
        self.model.eval()
        self.memory = ReplayMemory(config.replay_capacity, config.replay_compress, config.replay_max_bytes)

    def _make_optimizer(self) -> Optional[torch.optim.Optimizer]:
        config = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                betas=tuple(config.adam_betas)) if params else None

    @staticmethod
    def _resolve_device(name: str) -> torch.device:
        if name == 'auto':
            return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"unknown device '{name}'; use auto, cpu or cuda") from None
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
        return device

    def _configure_speed(self, model: models.RotatedQNet) -> None:
        models.set_norm_mode(model, self.config.norm_mode)
        forward_modes.use_fast_inference_kernels(model)  # same numbers, fewer copies (inference only)
        if self.config.channels_last:
            model.set_channels_last(True)

    def _autocast(self):
        return models.autocast_context(self.device, self.config.precision)

    def trains(self, primitive: str) -> bool:
        """Whether backprop on this primitive updates anything in this stage."""
        if primitive not in PRIMITIVES:
            raise ValueError(f"primitive must be 'push' or 'grasp', got {primitive!r}")
        return self.train_push if primitive == 'push' else self.train_grasp

    # -- inference -----------------------------------------------------------------------------
    def _inputs(self, model: models.RotatedQNet, color: np.ndarray, depth: np.ndarray,
                goal_mask: Optional[np.ndarray]) -> torch.Tensor:
        if model.goal_conditioned and goal_mask is None:
            raise ValueError('the goal-conditioned net needs a goal mask')
        return models.prepare_inputs(color, depth, goal_mask if model.goal_conditioned else None, self.device)

    @torch.no_grad()
    def forward(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray,
                goal_mask: Optional[np.ndarray] = None,
                rotations: Optional[Sequence[int]] = None,
                heads: Sequence[str] = PRIMITIVES) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """Push and grasp Q maps, each (R, H, W) float32 (R = 16 or len(rotations)); a map whose
        head is not in `heads` is None and its trunks do not run (stage grasp_only never pushes).

        color (H, H, 3) uint8 RGB, depth (H, H) float32 m (no NaN), goal_mask (H, H) uint8 0/255
        (required by the goal-conditioned net, ignored by the goal-agnostic one).  Inference only:
        no gradients, running BN statistics untouched.
        """
        rotations = list(range(NUM_ROTATIONS)) if rotations is None else list(rotations)
        x = self._inputs(self.model, color_heightmap, depth_heightmap, goal_mask)
        self.model.eval()
        with self._autocast():
            out = forward_modes.chunked_forward(self.model, x, color_heightmap.shape[0], rotations, heads,
                                                self.rotation_chunk)
        as_numpy = lambda name: out[name].float().cpu().numpy().astype(np.float32) if name in out else None  # noqa: E731
        return as_numpy('push'), as_numpy('grasp')

    @torch.no_grad()
    def explore_grasp_q(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray) -> np.ndarray:
        """Grasp Q (16, H, W) of the goal-agnostic explore model (--grasp_explore); mask it with
        the goal mask (best_pixel(q, goal_mask)) to pick the exploration grasp."""
        if self.explore_model is None:
            raise UserError('--grasp_explore needs --load_explore_snapshot --explore_snapshot_file FILE')
        x = self._inputs(self.explore_model, color_heightmap, depth_heightmap, None)
        with self._autocast():
            out = forward_modes.chunked_forward(self.explore_model, x, color_heightmap.shape[0],
                                                range(NUM_ROTATIONS), ('grasp',), self.rotation_chunk)
        return out['grasp'].float().cpu().numpy().astype(np.float32)

    # -- learning ------------------------------------------------------------------------------
    def _train_step(self, color: np.ndarray, depth: np.ndarray, goal_mask: Optional[np.ndarray],
                    primitive: str, action: Sequence[int], label: float) -> tuple[float, float]:
        """One Adam step on the Huber loss at the executed pixel; returns (loss, Q before)."""
        if primitive not in PRIMITIVES:
            raise ValueError(f"primitive must be 'push' or 'grasp', got {primitive!r}")
        rot, row, col = (int(v) for v in action)
        h = color.shape[0]
        if not (0 <= rot < NUM_ROTATIONS and 0 <= row < h and 0 <= col < h):
            raise ValueError(f'action {tuple(action)} outside {NUM_ROTATIONS} rotations x {h} x {h}')
        # The jaw is symmetric: a grasp is also trained at the opposite rotation, same label.
        rotations = [rot] if primitive == 'push' else [rot, (rot + NUM_ROTATIONS // 2) % NUM_ROTATIONS]
        loss, q = self.fit_pixels(color, depth, goal_mask, primitive, rotations,
                                  [(i, row, col) for i in range(len(rotations))], [label] * len(rotations))
        return loss, float(q[0])

    def fit_pixels(self, color: np.ndarray, depth: np.ndarray, goal_mask: Optional[np.ndarray], primitive: str,
                   rotations: Sequence[int], pixels: Sequence[Sequence[int]],
                   labels: Sequence[float]) -> tuple[float, np.ndarray]:
        """One Adam step on the mean Huber loss at several pixels of one state's maps, whatever
        this stage freezes (the caller checks trains()); returns (loss, the Q at each pixel before).

        rotations: the rotations to compute; pixels: (index into rotations, row, col) per label.
        _train_step trains one executed pixel this way; bench/push_dense.py every stored
        candidate of a state and rotation at once."""
        h = color.shape[0]
        index = torch.as_tensor(np.asarray(pixels, dtype=np.int64).reshape(-1, 3), device=self.device)
        x = self._inputs(self.model, color, depth, goal_mask)
        self.model.train()
        for m in self._frozen_modules:  # frozen nets keep their running statistics too
            m.eval()
        try:
            with self._autocast():
                q_maps = self.model(x, h, list(rotations), heads=(primitive,))[primitive]
                q = q_maps[index[:, 0], index[:, 1], index[:, 2]].float()
            target = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=q.device)
            loss = F.smooth_l1_loss(q, target)  # the mean over the pixels
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        finally:
            self.model.eval()
        return float(loss.item()), q.detach().cpu().numpy()

    def backprop(self, color_heightmap: np.ndarray, depth_heightmap: np.ndarray,
                 goal_mask: Optional[np.ndarray], primitive: str, action: Sequence[int],
                 label: float) -> float:
        """Train on one transition; returns the Huber loss (before the step).

        action (rot, row, col); label: the Q target.  Push: the loss at pixel (row, col) of
        rotation rot.  Grasp: the mean of that loss at rot and at (rot + 8) % 16.  Returns 0.0
        and changes nothing when this primitive's net is frozen in this stage (see trains()).
        """
        if not self.trains(primitive):
            return 0.0
        return self._train_step(color_heightmap, depth_heightmap, goal_mask, primitive, action, label)[0]

    def remember(self, transition: Transition) -> int:
        """Add a transition to the replay memory; returns its index."""
        return self.memory.add(transition)

    def replay(self, primitive: str, current_reward: float,
               rng: np.random.Generator) -> Optional[ReplayResult]:
        """One prioritised replay step (SPEC 5): sample an entry of `primitive` whose reward is
        the one replay_target_reward names for current_reward (the paper's candidates), train on
        it with its stored label, and record as its new
        predicted value the Q at its action that this training forward computed (before the
        step), so no extra 16-rotation forward runs.  None when nothing to replay or that net
        is frozen."""
        if not self.trains(primitive):
            return None
        if self.config.replay_candidates == 'other_reward':
            index = self.memory.sample(primitive, None, rng, other_than=current_reward)
        else:
            target = replay_target_reward(primitive, current_reward,
                                          grasp_success_reward(self.config.reward_stage or self.config.stage,
                                                               self.config.alternating_training,
                                                               self.config.alternating_grasp_labels),
                                          self.config.goal_oriented)
            if target is None:
                return None
            index = self.memory.sample(primitive, target, rng)
        if index is None:
            return None
        t = self.memory[index]
        loss, q_before = self._train_step(t.color_heightmap, t.depth_heightmap, t.goal_mask,
                                          t.primitive, t.action, t.label)
        self.memory.update_predicted(index, q_before)
        return ReplayResult(index, loss, t.label, q_before)

    # -- snapshots and resume ------------------------------------------------------------------
    def save_snapshot(self, path: str | os.PathLike) -> None:
        """Model weights + architecture/backbone metadata (models.save_snapshot)."""
        models.save_snapshot(self.model, path)

    def load_snapshot(self, path: str | os.PathLike) -> None:
        """Load model weights (any device); UserError on another architecture or backbone."""
        models.load_snapshot(self.model, path, map_location=self.device)

    def reload_snapshot(self) -> None:
        """Back to config.snapshot_file's weights (testing: the old code did this at the end of
        every trial, since it also trained while testing).  No-op without a snapshot file."""
        if self.config.snapshot_file:
            self.load_snapshot(self.config.snapshot_file)

    def restore_snapshot(self) -> None:
        """Back to config.snapshot_file's weights and a fresh optimiser (Adam's moments of one
        trial must not steer the next): the end of a test trial under test learning."""
        self.reload_snapshot()
        self.optimizer = self._make_optimizer()

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: iteration, model, optimizer, replay memory."""
        return {'iteration': self.iteration,
                'model': self.model.state_dict(),
                'optimizer': None if self.optimizer is None else self.optimizer.state_dict(),
                'memory': self.memory.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state['iteration'])
        self.model.load_state_dict(state['model'])
        if self.optimizer is not None and state.get('optimizer') is not None:
            self.optimizer.load_state_dict(state['optimizer'])
        self.memory.load_state_dict(state['memory'])

    def save_state(self, directory: str | os.PathLike, extra: Optional[dict] = None) -> None:
        """Write model.pth, optimizer.pth, replay.npz and trainer.json into `directory`.

        extra: JSON-serialisable caller state to restore with it (exploration counters,
        episode numbers, rng.bit_generator.state ...).  Each file is written atomically.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.save_snapshot(d / 'model.pth')
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), d / 'optimizer.pth.tmp')
            os.replace(d / 'optimizer.pth.tmp', d / 'optimizer.pth')
        self.memory.save(d / 'replay.npz')
        info = {'iteration': self.iteration, 'stage': self.config.stage,
                'architecture': self.model.architecture, 'backbone': self.model.backbone,
                'extra': extra or {}}
        (d / 'trainer.json.tmp').write_text(json.dumps(info, indent=1))
        os.replace(d / 'trainer.json.tmp', d / 'trainer.json')

    def load_state(self, directory: str | os.PathLike) -> dict:
        """Restore what save_state wrote; returns its `extra` dict."""
        d = Path(directory)
        if not (d / 'trainer.json').is_file():
            raise UserError(f'no trainer state in {d} (trainer.json missing)')
        info = json.loads((d / 'trainer.json').read_text())
        self.load_snapshot(d / 'model.pth')
        if self.optimizer is not None and (d / 'optimizer.pth').is_file():
            try:
                self.optimizer.load_state_dict(
                    torch.load(d / 'optimizer.pth', map_location=self.device, weights_only=True))
            except ValueError as exc:  # saved under another stage / freezing
                raise UserError(f"optimizer state in {d} does not fit stage {self.config.stage}: {exc}") from None
        if (d / 'replay.npz').is_file():
            self.memory = ReplayMemory.load(d / 'replay.npz')
            self.memory.max_bytes = self.config.replay_max_bytes  # this run's bound, not the saved one
        self.iteration = int(info['iteration'])
        return info.get('extra', {})


def trainer_for_snapshot(snapshot_file: str | os.PathLike, device: str = 'cpu', stage: str = 'push_grasp') -> Trainer:
    """A Trainer for a snapshot (the benches' nets): its backbone read from the file; stage
    push_grasp (both heads exist and train) to evaluate it, another stage to fine-tune what that
    stage trains (trainable_nets). UserError (one line) for a missing or foreign file."""
    if not Path(snapshot_file).is_file():
        raise UserError(f'no snapshot file {snapshot_file}')
    _, backbone = models.describe_snapshot(snapshot_file)
    return Trainer(TrainerConfig(stage=stage, backbone=backbone, snapshot_file=str(snapshot_file),
                                 device=device))
