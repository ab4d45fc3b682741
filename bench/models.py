#!/usr/bin/env python
"""Speed and memory of the Q networks, one JSON line per (backbone, mode).

    python bench/models.py                                  # tiny and resnet18 on CPU, < 3 min
    python bench/models.py --backbone densenet121 --device cuda --repeats 3
    python bench/models.py --backbone tiny --modes fp32 bf16+channels_last

Modes (models.py / TrainerConfig options):
  fp32                faithful: float32, per-sample BatchNorm statistics (the reference)
  bf16                bfloat16 autocast
  channels_last       channels_last memory format
  bf16+channels_last  both (only when asked with --modes)
  running_bn          eval-mode BatchNorm with running statistics (not faithful; with the
                      random/ImageNet running statistics of an untrained net its Q maps differ)
Each line holds: seconds per 16-rotation goal-conditioned forward, seconds per grasp training
step (2 rotations, forward + backward + Adam), peak memory (torch.cuda.max_memory_allocated on
GPU; process ru_maxrss on CPU, each configuration runs in its own process so that figure is its
own), and how far its Q maps are from the fp32 ones of the same weights (max abs difference and
the fraction of rotations whose best grasp pixel is the same).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file is itself called models.py: put the project root first so `import models` below finds
# the project module, not this script.
sys.path[0] = str(ROOT)

MODES = {
    'fp32': dict(precision='fp32', channels_last=False, norm_mode='per_sample'),
    'bf16': dict(precision='bf16', channels_last=False, norm_mode='per_sample'),
    'channels_last': dict(precision='fp32', channels_last=True, norm_mode='per_sample'),
    'bf16+channels_last': dict(precision='bf16', channels_last=True, norm_mode='per_sample'),
    'running_bn': dict(precision='fp32', channels_last=False, norm_mode='running'),
}

DEFAULT_MODES = ['fp32', 'bf16', 'channels_last', 'running_bn']   # keeps the CPU default < 3 min


def synthetic_scene(size: int = 224):
    """Blocks on a table: colour uint8 RGB, depth float32 m, goal mask uint8 0/255."""
    import numpy as np
    rng = np.random.default_rng(0)
    color = np.full((size, size, 3), 60, np.uint8)
    depth = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.uint8)
    for k in range(10):
        r, c = rng.integers(20, size - 45, 2)
        h, w = rng.integers(12, 25, 2)
        color[r:r + h, c:c + w] = rng.integers(0, 255, 3)
        depth[r:r + h, c:c + w] = rng.uniform(0.025, 0.1)
        if k == 0:
            mask[r:r + h, c:c + w] = 255
    return color, depth, mask


def run_one(backbone: str, mode: str, device: str, repeats: int, ref_file: str) -> dict:
    import numpy as np
    import torch

    import trainer as T

    cfg = T.TrainerConfig(stage='push_grasp', goal_conditioned=True, backbone=backbone, device=device,
                          pretrained_weights='none', seed=0, **MODES[mode])
    tr = T.Trainer(cfg)
    cuda = tr.device.type == 'cuda'

    def sync():
        if cuda:
            torch.cuda.synchronize()

    color, depth, mask = synthetic_scene()
    tr.forward(color, depth, mask, rotations=[0])          # warm-up (kernel selection)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        push_q, grasp_q = tr.forward(color, depth, mask)
    sync()
    forward_s = (time.perf_counter() - t0) / repeats

    # Compare with the fp32 maps of the same weights (written by the fp32 run, which goes first).
    deviation = {}
    if mode == 'fp32':
        np.save(ref_file, grasp_q)
    elif os.path.exists(ref_file):
        ref = np.load(ref_file)
        best = lambda q: q.reshape(q.shape[0], -1).argmax(1)  # noqa: E731
        deviation = {'max_abs_diff_vs_fp32': float(np.abs(grasp_q - ref).max()),
                     'ref_abs_max': float(np.abs(ref).max()),
                     'same_best_pixel_fraction': float((best(grasp_q) == best(ref)).mean())}

    action = (3, 100, 120)
    tr.backprop(color, depth, mask, 'push', action, 1.0)   # warm-up (1 rotation: cheaper)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        tr.backprop(color, depth, mask, 'grasp', action, 1.0)
    sync()
    step_s = (time.perf_counter() - t0) / repeats

    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
        peak_kind = 'cuda_max_memory_allocated'
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
        peak_kind = 'ru_maxrss'
    return {'backbone': backbone, 'mode': mode, 'device': str(tr.device),
            'device_name': torch.cuda.get_device_name(tr.device) if cuda else 'cpu',
            'threads': torch.get_num_threads(), 'repeats': repeats,
            'forward_16_rotations_s': round(forward_s, 4), 'train_step_s': round(step_s, 4),
            'peak_memory_mb': round(peak_mb, 1), 'peak_memory_kind': peak_kind, **deviation}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbone', nargs='+', default=['tiny', 'resnet18'],
                    choices=['tiny', 'resnet18', 'densenet121'])
    ap.add_argument('--device', default='auto', help='auto | cpu | cuda')
    ap.add_argument('--repeats', type=int, default=None,
                    help='timed repeats per measurement (default 3 on GPU, 1 on CPU)')
    ap.add_argument('--modes', nargs='+', default=DEFAULT_MODES, choices=list(MODES),
                    help=f"default: {' '.join(DEFAULT_MODES)}")
    ap.add_argument('--_one', help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._one:  # child process: one configuration
        job = json.loads(args._one)
        print(json.dumps(run_one(**job)), flush=True)
        return 0

    import torch
    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    repeats = args.repeats or (3 if device.startswith('cuda') else 1)
    modes = ['fp32'] + [m for m in args.modes if m != 'fp32'] if 'fp32' in args.modes else args.modes
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbone:
            ref_file = os.path.join(tmp, f'{backbone}-fp32.npy')
            for mode in modes:
                job = dict(backbone=backbone, mode=mode, device=device, repeats=repeats, ref_file=ref_file)
                proc = subprocess.run([sys.executable, __file__, '--_one', json.dumps(job)],
                                      capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
                if proc.returncode == 0 and lines:
                    print(lines[-1], flush=True)
                else:
                    status = 1
                    err = (proc.stderr.strip().splitlines() or ['no output'])[-1]
                    print(json.dumps({'backbone': backbone, 'mode': mode, 'device': device,
                                      'error': err}), flush=True)
    return status


if __name__ == '__main__':
    sys.exit(main())
