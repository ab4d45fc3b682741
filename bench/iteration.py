#!/usr/bin/env python
"""One training iteration on the embedded simulator, phase by phase, old-style against ours (issue 8, item 3).

    python bench/iteration.py                         # tiny, stage grasp_only, 8 iterations each way
    python bench/iteration.py --backbone densenet121 --iterations 1 --stage push_grasp

Both styles run on the same MuJoCo scene (iterations alternate, old then ours), with one Trainer
(goal-conditioned net, the same weights; the goal is object 0 while it is on the table). Phases:
  render     Robot.get_camera_data: the 640x480 RGB-D frame
  heightmap  its projection (old: utils.get_heightmap_reference; ours: utils.get_heightmap),
             the valid map and the object masks (the goal mask)
  forward    the Q maps of this state. old: the old code's forwards, each 16 batch-1 calls with
             train-mode BN, both nets always (bench/forward.py's old_forward): one to choose the
             action and one on the next state for the previous action's label (3 per
             iteration with replay's below). ours: Trainer.forward once, only the heads the stage
             uses; the label reads the maps of this same forward
  backprop   the previous transition. old: one batch-1 forward+backward per trained rotation (a
             grasp trains two), train-mode BN; ours: Trainer.backprop (one batch of both)
  replay     remember the transition and one prioritised replay step. old: a full forward of the
             sample to refresh its priority, then an old-style backprop; ours: Trainer.replay
             (the training forward's Q is the new priority)
  physics    Robot.grasp (or push) of the best goal pixel
  logging    images, heightmaps, the goal mask and transition rows through logger.Logger
A third style, overlapped, is ours as main.py runs it with --overlap_learning (its default where
a core is free: CUDA, or fewer torch threads than cores): logging and
physics in a thread while backprop and replay run. Its phases overlap, so compare `wall` (the
iteration's wall-clock time; for old and ours it is about `total`, the sum of the phases).
Writes bench/results/iteration-<date>.json (--out) and prints it; --machine_load says what else ran.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('MUJOCO_GL', 'egl')
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402 (before EGL: the reverse order segfaults)
import torchvision  # noqa: E402,F401

import models  # noqa: E402
import trainer as T  # noqa: E402
import utils  # noqa: E402
from logger import Logger  # noqa: E402
from robot import Robot  # noqa: E402
from rules import best_pixel, masked_max  # noqa: E402
from simulation.mujoco_sim import MujocoSim  # noqa: E402
from utils import NUM_ROTATIONS  # noqa: E402

PHASES = ('render', 'heightmap', 'forward', 'backprop', 'replay', 'physics', 'logging')
STYLES = ('old', 'ours', 'overlapped')  # overlapped: ours with the physics in a thread during backprop + replay


def _bench_forward_module():
    spec = importlib.util.spec_from_file_location('bench_forward', ROOT / 'bench' / 'forward.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self, cuda: bool = False):
        self.phases = {name: 0.0 for name in PHASES}
        # CUDA kernels run asynchronously: without a sync a phase would be charged the previous one's kernels
        self.sync = torch.cuda.synchronize if cuda else (lambda: None)

    def __call__(self, name, function, *args, **kwargs):
        self.sync()
        started = time.perf_counter()
        result = function(*args, **kwargs)
        self.sync()
        self.phases[name] += time.perf_counter() - started
        return result


def old_backprop(trainer: T.Trainer, color, depth, mask, primitive, action, label) -> float:
    """The old code's training step: per trained rotation a batch-1 forward of both nets in train
    mode and a backward; one optimizer step."""
    if not trainer.trains(primitive):
        return 0.0
    model, h = trainer.model, color.shape[0]
    rot, row, col = action
    x = models.prepare_inputs(color, depth, mask, trainer.device)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if 'running_' in k or 'num_batches' in k}
    models.set_norm_mode(model, 'batch')
    model.train()
    total = 0.0
    try:
        trainer.optimizer.zero_grad(set_to_none=True)
        rotations = [rot] if primitive == 'push' else [rot, (rot + NUM_ROTATIONS // 2) % NUM_ROTATIONS]
        for r in rotations:
            q = model(x, h, [r], heads=('push', 'grasp'))[primitive][0, row, col]
            loss = torch.nn.functional.smooth_l1_loss(q, torch.tensor(float(label)))
            loss.backward()
            total += float(loss.item())
        trainer.optimizer.step()
    finally:
        model.eval()
        models.set_norm_mode(model, 'per_sample')
        model.load_state_dict(buffers, strict=False)
    return total / len(rotations)


class Session:
    def __init__(self, args, log_dir: Path):
        self.args = args
        self.rng = np.random.default_rng(args.seed)
        self.sim = MujocoSim(num_obj=args.num_obj, rng=self.rng)
        self.robot = Robot(self.sim)
        config = T.TrainerConfig(stage=args.stage, goal_conditioned=True, backbone=args.backbone, device=args.device,
                                 pretrained_weights='none', seed=0)
        self.trainer = T.Trainer(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            for head in (self.trainer.model.pushnet, self.trainer.model.graspnet):
                if not head[-1].weight.any():  # zero-initialised: every Q 0, every argmax the first pixel
                    torch.nn.init.kaiming_normal_(head[-1].weight)
        self.logger = Logger(logging_directory=log_dir, verbose=False)
        self.bench_forward = _bench_forward_module()
        self.pending = {style: None for style in STYLES}
        self.iteration = 0
        self.physics_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.heads = ('grasp',) if args.stage == 'grasp_only' else ('push', 'grasp')

    def observe(self, clock: Clock, style: str):
        color, depth = clock('render', self.robot.get_camera_data)
        project = utils.get_heightmap_reference if style == 'old' else utils.get_heightmap

        def perceive():
            color_hm, raw = project(color, depth, self.robot.intrinsics, self.robot.camera_pose,
                                    self.robot.workspace_limits_m, self.robot.heightmap_resolution_m)
            depth_hm = utils.valid_depth(raw)
            masks = self.robot.object_masks(color_hm, depth_hm)
            return color, depth, color_hm, depth_hm, masks

        return clock('heightmap', perceive)

    def forward(self, clock: Clock, style: str, color_hm, depth_hm, goal_mask):
        if style != 'old':
            return clock('forward', self.trainer.forward, color_hm, depth_hm, goal_mask, heads=self.heads)
        x = models.prepare_inputs(color_hm, depth_hm, goal_mask, self.trainer.device)
        return clock('forward', self.bench_forward.old_forward, self.trainer.model, x, color_hm.shape[0])

    def iterate(self, style: str) -> dict | None:
        """One iteration of `style`; None (and a new scene) when the goal has left the table."""
        cuda = str(self.trainer.device).startswith('cuda')
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        clock = Clock(cuda)
        trainer, robot = self.trainer, self.robot
        color, depth, color_hm, depth_hm, masks = self.observe(clock, style)
        if 0 not in masks or len(masks) < 2:
            self.robot.reset_scene(self.rng)
            self.pending = {style: None for style in STYLES}
            return None
        goal_mask = masks[0]
        push_q, grasp_q = self.forward(clock, style, color_hm, depth_hm, goal_mask)
        pending = self.pending[style]
        learn = None
        if pending is not None:
            if style == 'old':  # the old code's label: a full forward of the next state
                _, next_grasp_q = self.forward(clock, 'old', color_hm, depth_hm, goal_mask)
            else:
                next_grasp_q = grasp_q
            reward = 1.0 if pending['success'] else 0.0
            label = reward + trainer.gamma * masked_max(next_grasp_q, goal_mask) * (not pending['success'])
            p = pending

            def replay():
                trainer.remember(T.Transition(p['color_hm'], p['depth_hm'], p['mask'], 'grasp', p['action'],
                                              label, reward, p['predicted'], self.iteration))
                if style != 'old':
                    return trainer.replay('grasp', reward, self.rng)
                index = trainer.memory.sample('grasp', None, self.rng, other_than=reward)
                if index is None:
                    return None
                t = trainer.memory[index]
                x = models.prepare_inputs(t.color_heightmap, t.depth_heightmap, t.goal_mask, trainer.device)
                _, q = self.bench_forward.old_forward(trainer.model, x, t.color_heightmap.shape[0])
                trainer.memory.update_predicted(index, float(q[t.action]))
                return old_backprop(trainer, t.color_heightmap, t.depth_heightmap, t.goal_mask, t.primitive,
                                    t.action, t.label)

            def learn():
                step = old_backprop if style == 'old' else T.Trainer.backprop
                clock('backprop', step, trainer, p['color_hm'], p['depth_hm'], p['mask'], 'grasp', p['action'], label)
                clock('replay', replay)

        # The action comes from this state's forward, learned from or not (main.Runner._act).
        action, predicted = best_pixel(grasp_q, goal_mask)

        def log():
            self.logger.save_images(self.iteration, color, depth, '0')
            self.logger.save_heightmaps(self.iteration, color_hm, depth_hm, '0')
            self.logger.save_mask(self.iteration, 'goal', goal_mask)
            self.logger.append('executed-action', [1, *action])
            self.logger.append('predicted-value', [predicted])

        def act():
            clock('logging', log)
            return clock('physics', robot.grasp, action, depth_hm)

        if style == 'overlapped' and learn is not None:  # main.py's --overlap_learning
            physics = self.physics_thread.submit(act)
            learn()
            result = physics.result()
        else:
            if learn is not None:
                learn()
            result = act()
        self.pending[style] = {'color_hm': color_hm, 'depth_hm': depth_hm, 'mask': goal_mask, 'action': action,
                               'predicted': predicted, 'success': bool(result.success and result.object_index == 0)}
        self.iteration += 1
        clock.phases['wall'] = time.perf_counter() - started
        if cuda:  # the whole iteration's peak: forwards, backprop and replay (issue 8: at most 6 GB for DenseNet)
            clock.phases['cuda_max_allocated_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
        return clock.phases if pending is not None else None  # the first one has nothing to learn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbone', default='tiny')
    ap.add_argument('--stage', default='grasp_only', choices=['grasp_only', 'push_grasp'])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--iterations', type=int, default=8, help='measured iterations per style')
    ap.add_argument('--num_obj', type=int, default=5)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--machine_load', default=None)
    ap.add_argument('--out', default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(args, Path(tmp) / 'session')
        samples = {style: [] for style in STYLES}
        attempts = 0
        while min(len(v) for v in samples.values()) < args.iterations and attempts < 20 * args.iterations + 10:
            attempts += 1
            for style in STYLES:
                phases = session.iterate(style)
                if phases is not None and len(samples[style]) < args.iterations:
                    samples[style].append(phases)
        session.physics_thread.shutdown()
        session.sim.close()
    result = {'bench': 'iteration', 'date': datetime.date.today().isoformat(), 'backbone': args.backbone,
              'stage': args.stage, 'device': args.device, 'num_obj': args.num_obj,
              'machine': f'{platform.machine()} {os.cpu_count()} cpus', 'torch': torch.__version__,
              'omp_num_threads': os.environ.get('OMP_NUM_THREADS'), 'torch_threads': torch.get_num_threads(),
              'iterations': {k: len(v) for k, v in samples.items()}, 'load_average_1min': round(os.getloadavg()[0], 2)}
    if args.machine_load:
        result['machine_load'] = args.machine_load
    for style, rows in samples.items():
        if not rows:
            continue
        med = {name: round(statistics.median(r[name] for r in rows), 4) for name in PHASES}
        med['total'] = round(statistics.median(sum(r[name] for name in PHASES) for r in rows), 4)
        med['wall'] = round(statistics.median(r['wall'] for r in rows), 4)
        result[f'{style}_median_s'] = med
        if 'cuda_max_allocated_mb' in rows[0]:
            result[f'{style}_cuda_max_allocated_mb'] = round(max(r['cuda_max_allocated_mb'] for r in rows), 1)
    if samples['old'] and samples['ours']:
        result['ratio_old_over_ours'] = {name: round(result['old_median_s'][name] / result['ours_median_s'][name], 2)
                                         for name in (*PHASES, 'total', 'wall') if result['ours_median_s'][name] > 0}
    if samples['ours'] and samples['overlapped']:
        result['wall_ours_over_overlapped'] = round(result['ours_median_s']['wall'] /
                                                    result['overlapped_median_s']['wall'], 2)
    out = Path(args.out or ROOT / 'bench' / 'results' / f"iteration-{result['date']}-{args.backbone}.json")
    out.write_text(json.dumps(result, indent=1) + '\n')
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
