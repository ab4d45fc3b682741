#!/usr/bin/env python
"""How much faster can an exact float32 forward be on this machine?  A roofline (issue 8).

    python bench/roofline.py                       # densenet121 and tiny16, torch's default threads
    python bench/roofline.py --backbones densenet121 --threads 1

bench/forward.py measures the old 16-call loop against the project's forward. This bench asks
what any faithful float32 implementation could gain over that loop on this CPU: it counts the
floating-point operations of one trunk on the net's real input (torch.utils.flop_counter, the
P x P padded 2x-zoomed heightmap of models.padded_size), times that trunk the old way (batch 1,
train-mode BatchNorm, torchvision's modules), and divides by the machine's float32 peak as a
large matrix product reaches it (torch.mm of 4096 x 4096, the best case for the same BLAS/oneDNN
kernels). A 16-rotation forward must do 16 x trunks x those operations whatever its kernels, so

    old / ours  <=  (old seconds per trunk) / (trunk FLOP / peak FLOP/s)  =  peak / achieved

is the most that chunking, memory formats, fused kernels or compilation can give while keeping
the same arithmetic (the same count of multiply-adds in float32). Only fewer operations (skipped
trunks, bf16/int8 arithmetic, a different algorithm) can go beyond it. Prints JSON, and writes
bench/results/roofline-<date>.json (--out).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import models  # noqa: E402
from utils import NUM_ROTATIONS, heightmap_shape  # noqa: E402

MATMUL_SIDE = 4096  # large enough that the product runs at the kernels' peak, small enough for 1 s


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(repeats: int) -> float:
    """float32 GFLOP/s of a 4096^3 matrix product (2 n^3 operations)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, generator=g)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, generator=g)
    return 2 * MATMUL_SIDE ** 3 / median_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def trunk_row(backbone: str, input_side_px: int, peak_gflops: float, repeats: int) -> dict:
    """One trunk the old way (batch 1, train-mode BN) against the float32 peak."""
    torch.manual_seed(0)
    trunk = models.build_trunk(backbone).train()  # torchvision's BatchNorm2d, as the old code ran it
    x = torch.randn(1, 3, input_side_px, input_side_px)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            trunk(x)
        flop = counter.get_total_flops()
        seconds = median_seconds(lambda: trunk(x), repeats)
    achieved = flop / seconds / 1e9
    n_trunks = 5  # the goal-conditioned net: push and grasp colour/depth, goal mask (models.GoalConditionedNet)
    forward_flop = n_trunks * NUM_ROTATIONS * flop
    return {'backbone': backbone, 'input_px': input_side_px,
            'trunk_gflop': round(flop / 1e9, 2), 'trunk_old_s': round(seconds, 4),
            'trunk_achieved_gflops': round(achieved, 1),
            'fraction_of_peak': round(achieved / peak_gflops, 3),
            'goal_conditioned_16_rotation_gflop': round(forward_flop / 1e9, 1),
            'old_16_rotation_s_estimate': round(n_trunks * NUM_ROTATIONS * seconds, 2),
            'exact_fp32_16_rotation_s_lower_bound': round(forward_flop / 1e9 / peak_gflops, 2),
            'max_exact_fp32_speedup_over_old': round(peak_gflops / achieved, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbones', nargs='+', default=['densenet121', 'tiny16'])
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--machine_load', default=None, help='what else the machine was running')
    ap.add_argument('--out', default=None)
    args = ap.parse_args()
    if args.threads < 0 or args.repeats < 1:
        print('error: --threads must be >= 0 and --repeats >= 1', file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    side = models.padded_size(heightmap_shape()[0])
    peak = matmul_peak_gflops(args.repeats)
    result = {'bench': 'roofline', 'date': datetime.date.today().isoformat(),
              'machine': f'{platform.machine()} {os.cpu_count()} cpus', 'torch': torch.__version__,
              'torch_threads': torch.get_num_threads(), 'matmul_fp32_peak_gflops': round(peak, 1),
              'rows': [trunk_row(b, side, peak, args.repeats) for b in args.backbones],
              'load_average_1min': round(os.getloadavg()[0], 2)}
    if args.machine_load:
        result['machine_load'] = args.machine_load
    out = Path(args.out or ROOT / 'bench' / 'results' / f"roofline-{result['date']}.json")
    out.write_text(json.dumps(result, indent=1) + '\n')
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
