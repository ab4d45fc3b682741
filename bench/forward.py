#!/usr/bin/env python
"""A 16-rotation forward, the old code's way against the project's, in one process (issue 8, item 1).

    python bench/forward.py                                   # tiny, CPU (and CUDA when present)
    python bench/forward.py --backbones densenet121 --repeats 1 --devices cpu
    python bench/forward.py --backbones tiny densenet121 --modes default fp32-chunk16 bf16-cl-chunk4

old: written out here as the reference, what the old code did per action: 16 sequential calls,
one rotation each, float32, the model in train mode so that every BatchNorm normalises by that
call's own statistics (the running statistics it updates are restored afterwards).
ours: the project's path, same weights, same input (the goal-conditioned net on the synthetic
scene of bench/models.py). 'default' is Trainer.forward with the default TrainerConfig for the
device; the other modes set the speed options by hand:
    fp32-chunkN      float32, per-rotation BN statistics, N rotations per batch (faithful)
    fp32-cl-chunkN   the same in channels_last memory format
    bf16-cl-chunkN   bfloat16 autocast, channels_last (not bit-faithful: see the agreement)
    running-chunkN   eval-mode BN with running statistics (not faithful; random weights here)
Old and ours are timed interleaved, chunk of rotations by chunk (old then ours, then the other
way round), so that both see the same load; each (backbone, device, mode) gets the median over
--repeats of the 16-rotation totals of both sides (after a warm-up of one chunk each), the ratio
old/ours, peak memory during a call (RSS sampled every 5 ms by a thread, above the resident size
before it; on CUDA torch.cuda.max_memory_allocated), the max abs difference of the push and
grasp Q maps from the old ones and the fraction of the 32 maps (16 rotations x 2 heads) whose
best pixel is the same. 'default' also runs the inference kernels of forward_modes.py.
Writes bench/results/forward-<date>.json (--out) and prints it. Say what else ran with
--machine_load: ratios measured in one process stay valid on a busy machine, seconds do not.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import forward_modes  # noqa: E402
import models  # noqa: E402
import trainer as T  # noqa: E402
from utils import NUM_ROTATIONS  # noqa: E402

DEFAULT_MODES = ['default', 'fp32-chunk16', 'fp32-chunk4', 'fp32-chunk1', 'bf16-cl-chunk16', 'bf16-cl-chunk4']
MODE_RE = re.compile(r'^(fp32|fp32-cl|bf16-cl|bf16|running)-chunk(\d+)$')


def synthetic_scene():
    spec = importlib.util.spec_from_file_location('bench_models', ROOT / 'bench' / 'models.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path[:] = [p for p in sys.path if p != str(ROOT)] + [str(ROOT)]
    return module.synthetic_scene()


class PeakRSS:
    """Peak resident set size while the block runs, sampled every 5 ms by a thread (MiB)."""

    def __init__(self):
        self._page = os.sysconf('SC_PAGE_SIZE')

    def _rss(self) -> int:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def above_base_mb(self) -> float:
        return (self.peak - self.base) / 2 ** 20


def old_forward(model: models.RotatedQNet, x: torch.Tensor, h: int,
                rotations=tuple(range(NUM_ROTATIONS))) -> tuple[np.ndarray, np.ndarray]:
    """The old code's forward: one call of batch 1 per rotation, float32, train-mode BatchNorm."""
    buffers = {k: v.clone() for k, v in model.state_dict().items() if 'running_' in k or 'num_batches' in k}
    models.set_norm_mode(model, 'batch')
    model.train()
    upsample = getattr(model, 'upsample_factor', models.UPSAMPLE_FACTOR)
    unrotate = (lambda y, r: models.unrotate_upsample_crop(y, r, h, upsample)) if upsample != models.UPSAMPLE_FACTOR \
        else (lambda y, r: models.unrotate_upsample_crop(y, r, h))
    push, grasp = [], []
    try:
        with torch.no_grad():
            for r in rotations:
                xr = models.rotate_images(x, [r])
                color = xr[:, 0:3].contiguous()
                depth = xr[:, 3:4].repeat(1, 3, 1, 1)
                mask = model.mask_trunk(xr[:, 4:5].repeat(1, 3, 1, 1))
                feat = torch.cat([model.push_color_trunk(color), model.push_depth_trunk(depth), mask], 1)
                push.append(unrotate(model.pushnet(feat), [r]))
                feat = torch.cat([model.grasp_color_trunk(color), model.grasp_depth_trunk(depth), mask], 1)
                grasp.append(unrotate(model.graspnet(feat), [r]))
    finally:
        model.eval()
        models.set_norm_mode(model, 'per_sample')
        model.load_state_dict(buffers, strict=False)
    return torch.cat(push).numpy(), torch.cat(grasp).numpy()


def ours_forward(model: models.RotatedQNet, x: torch.Tensor, h: int, mode: str,
                 rotations=tuple(range(NUM_ROTATIONS))) -> tuple[np.ndarray, np.ndarray]:
    kind, chunk = MODE_RE.match(mode).groups()
    model.eval()
    models.set_norm_mode(model, 'running' if kind == 'running' else 'per_sample')
    model.set_channels_last(kind.endswith('-cl'))
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), models.autocast_context(device, 'bf16' if kind.startswith('bf16') else 'fp32'):
            out = forward_modes.chunked_forward(model, x, h, rotations, ('push', 'grasp'), int(chunk))
    finally:
        model.set_channels_last(False)
        models.set_norm_mode(model, 'per_sample')
    return out['push'].float().cpu().numpy(), out['grasp'].float().cpu().numpy()


def agreement(q: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> dict:
    best = lambda m: m.reshape(m.shape[0], -1).argmax(1)  # noqa: E731
    same = np.concatenate([best(a) == best(b) for a, b in zip(q, ref)])
    return {'max_abs_diff': float(max(np.abs(a - b).max() for a, b in zip(q, ref))),
            'q_abs_max': float(max(np.abs(b).max() for b in ref)),
            'same_best_pixel': f'{int(same.sum())}/{same.size}', 'same_best_pixel_fraction': float(same.mean())}


def bench_backbone(backbone: str, device: str, modes: list[str], repeats: int) -> list[dict]:
    color, depth, mask = synthetic_scene()
    h = color.shape[0]
    model = models.build_model('goal_conditioned', backbone, pretrained='none', seed=0).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for head in (model.pushnet, model.graspnet):  # a zero-initialised last conv: all Q maps 0
            if not head[-1].weight.any():
                torch.nn.init.kaiming_normal_(head[-1].weight)
    model.eval()
    x = models.prepare_inputs(color, depth, mask, device)
    cuda = torch.device(device).type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(run):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as rss:
            sync()
            started = time.perf_counter()
            result = run()
            sync()
            seconds = time.perf_counter() - started
        return seconds, (torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else rss.above_base_mb), result

    rows, old = [], None
    base = {'backbone': backbone, 'device': device, 'threads': torch.get_num_threads(), 'repeats': repeats}
    peak_kind = 'cuda_max_memory_allocated_mb' if cuda else 'rss_peak_above_start_mb'
    for mode in modes:
        if mode == 'default':
            config = T.TrainerConfig(stage='push_grasp', goal_conditioned=True, backbone=backbone, device=device,
                                     pretrained_weights='none', seed=0)
            trainer = T.Trainer(config)
            trainer.model.load_state_dict(model.state_dict())
            trainer.model.eval()
            chunk = trainer.rotation_chunk
            ours = lambda rotations: trainer.forward(color, depth, mask, rotations=rotations)  # noqa: E731
            described = {'rotation_chunk': chunk, 'precision': config.precision,
                         'channels_last': config.channels_last, 'norm_mode': config.norm_mode,
                         'fast_inference_kernels': True}
        else:
            if not MODE_RE.match(mode):
                raise SystemExit(f'unknown mode {mode}')
            chunk = int(MODE_RE.match(mode).group(2))
            ours = lambda rotations, mode=mode: ours_forward(model, x, h, mode, rotations)  # noqa: E731
            described = {}
        chunks = [list(range(i, min(i + chunk, NUM_ROTATIONS))) for i in range(0, NUM_ROTATIONS, chunk)]
        old_forward(model, x, h, chunks[0][:1])  # warm-ups: kernel selection, the first chunk's shapes
        ours(chunks[0])
        # Interleaved chunk by chunk (old then ours, then ours then old): both see the same load.
        old_totals, ours_totals, old_peak, ours_peak = [], [], 0.0, 0.0
        for repeat in range(repeats):
            t_old = t_ours = 0.0
            q_old, q_ours = [], []
            for k, rotations in enumerate(chunks):
                order = ('old', 'ours') if (k + repeat) % 2 == 0 else ('ours', 'old')
                for side in order:
                    if side == 'old':
                        seconds, peak, q = timed(lambda: old_forward(model, x, h, rotations))
                        t_old, old_peak = t_old + seconds, max(old_peak, peak)
                        q_old.append(q)
                    else:
                        seconds, peak, q = timed(lambda: ours(rotations))
                        t_ours, ours_peak = t_ours + seconds, max(ours_peak, peak)
                        q_ours.append(q)
            old_totals.append(t_old)
            ours_totals.append(t_ours)
        q_old = tuple(np.concatenate([q[i] for q in q_old]) for i in range(2))
        q_ours = tuple(np.concatenate([q[i] for q in q_ours]) for i in range(2))
        if old is None:
            old = q_old
        old_s, ours_s = statistics.median(old_totals), statistics.median(ours_totals)
        rows.append({**base, 'mode': mode, **described, 'median_s': round(ours_s, 4),
                     'times_s': [round(t, 4) for t in ours_totals], peak_kind: round(ours_peak, 1),
                     'old_median_s': round(old_s, 4), 'old_times_s': [round(t, 4) for t in old_totals],
                     f'old_{peak_kind}': round(old_peak, 1), 'ratio_old_over_ours': round(old_s / ours_s, 2),
                     **agreement(q_ours, q_old)})
        print(json.dumps(rows[-1]), flush=True)
        if mode == 'default':
            del trainer
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbones', nargs='+', default=['tiny'])
    ap.add_argument('--devices', nargs='+', default=None, help='default: cpu, and cuda when present')
    ap.add_argument('--modes', nargs='+', default=DEFAULT_MODES)
    ap.add_argument('--repeats', type=int, default=3, help='timed forwards per mode (densenet121 on a CPU: 1)')
    ap.add_argument('--machine_load', default=None, help='what else the machine was running')
    ap.add_argument('--out', default=None)
    args = ap.parse_args()
    devices = args.devices or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    result = {'bench': 'forward', 'date': datetime.date.today().isoformat(),
              'machine': f'{platform.machine()} {os.cpu_count()} cpus', 'torch': torch.__version__,
              'omp_num_threads': os.environ.get('OMP_NUM_THREADS'), 'torch_threads': torch.get_num_threads(),
              'cuda_device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              'input': 'goal-conditioned net, random weights (seed 0), bench/models.py synthetic scene',
              'rows': []}
    if args.machine_load:
        result['machine_load'] = args.machine_load
    out = Path(args.out or ROOT / 'bench' / 'results' / f"forward-{result['date']}.json")
    for device in devices:
        for backbone in args.backbones:
            result['rows'] += bench_backbone(backbone, device, args.modes, args.repeats)
            result['load_average_1min'] = round(os.getloadavg()[0], 2)
            out.write_text(json.dumps(result, indent=1) + '\n')  # after each backbone: a long run keeps its rows
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
