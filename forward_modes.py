"""How a Trainer runs a multi-rotation forward: rotations in chunks, chosen per device (issue 8).

RotatedQNet.forward runs all the rotations it is given as one batch. Per-rotation batch-norm
statistics (models.PerSampleBatchNorm2d) make every rotation's numbers independent of the
others in its batch, so splitting the 16 rotations into chunks changes only speed and memory,
not the Q maps (up to the last bits of float32 convolution algorithms; bench/forward.py measures
both). bench/forward.py chose the defaults below: on this project's 2-core CPU (1 thread, float32,
DenseNet-121, 2026-12-02) a 16-rotation forward took 64 s in chunks of 1, 113 s in chunks of 4 and
179 s as one batch of 16, against 100 s for the old code's 16 batch-1 calls; a batch of 16 images
of 640x640 through DenseNet's concatenations moves gigabytes (2 GB more resident memory), one at a
time stays in cache. TrainerConfig(rotation_chunk=16) is the one-batch forward (the GPU default).
use_fast_inference_kernels below (DenseNet blocks without re-concatenation, a max pool without
indices) gives the same numbers bit for bit, about 10-15 % faster on the CPU.
"""
from __future__ import annotations

from typing import Sequence

import torch

from utils import NUM_ROTATIONS

# Rotations per batch when the config says 0 ('auto'), by device type (bench/results/forward-*.json).
DEFAULT_ROTATION_CHUNK = {'cpu': 1, 'cuda': NUM_ROTATIONS}


def resolve_rotation_chunk(chunk: int, device: torch.device | str) -> int:
    """The chunk size to use: `chunk` when > 0, else the device type's default."""
    if chunk < 0:
        raise ValueError(f'rotation chunk must be >= 0 (0 = per device), got {chunk}')
    if chunk:
        return int(chunk)
    return DEFAULT_ROTATION_CHUNK.get(torch.device(device).type, NUM_ROTATIONS)


def chunked_forward(model: torch.nn.Module, inputs: torch.Tensor, heightmap_size: int,
                    rotations: Sequence[int], heads: Sequence[str], chunk: int) -> dict[str, torch.Tensor]:
    """model(inputs, heightmap_size, rotations, heads), `chunk` rotations per call, concatenated."""
    rotations = [int(r) for r in rotations]
    if chunk <= 0 or len(rotations) <= chunk:
        return model(inputs, heightmap_size, rotations, heads=tuple(heads))
    parts = [model(inputs, heightmap_size, rotations[i:i + chunk], heads=tuple(heads))
             for i in range(0, len(rotations), chunk)]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


# -- Inference kernels for the CPU: the same numbers, fewer copies -------------------------------
def _dense_block_forward(block: torch.nn.Module, init_features: torch.Tensor) -> torch.Tensor:
    """torchvision's _DenseBlock.forward without its concatenations: every layer writes its new
    features into one preallocated buffer and reads the ones before it as a view of it (torchvision
    concatenates all previous features again in every layer: O(layers^2) copies). Same values.
    Inference only (autograd forbids writing into a tensor whose views it saved)."""
    from torchvision.models.densenet import _DenseBlock

    layers = list(block.values())
    if (torch.is_grad_enabled() or not init_features.is_contiguous()
            or any(layer.drop_rate > 0 for layer in layers)):
        return _DenseBlock.forward(block, init_features)
    n, c, h, w = init_features.shape
    total = c + sum(layer.conv2.out_channels for layer in layers)
    features = init_features.new_empty((n, total, h, w))
    features[:, :c] = init_features
    for layer in layers:
        bottleneck = layer.conv1(layer.relu1(layer.norm1(features[:, :c])))
        new = layer.conv2(layer.relu2(layer.norm2(bottleneck)))
        features[:, c:c + new.shape[1]] = new
        c += new.shape[1]
    return features


def _max_pool_forward(pool: torch.nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """MaxPool2d(3, 2, 1) as the maximum of 9 strided views of the -inf-padded input: the same
    values, without the CPU kernel's indices (measured 3-5x faster at 64 x 320 x 320)."""
    if torch.is_grad_enabled() or x.device.type != 'cpu' or not x.is_contiguous() or not x.is_floating_point():
        return torch.nn.MaxPool2d.forward(pool, x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=float('-inf'))
    h, w = (x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1
    out = None
    for dy in range(3):
        for dx in range(3):
            view = padded[:, :, dy:dy + 2 * h - 1:2, dx:dx + 2 * w - 1:2]
            out = view.clone() if out is None else torch.maximum(out, view, out=out)
    return out


def use_fast_inference_kernels(model: torch.nn.Module) -> torch.nn.Module:
    """Give every torchvision dense block and every 3x3/2 max pool (DenseNet's and ResNet's stem)
    of `model` the copy-free inference forwards above (per instance; weights and state_dict keys
    unchanged; training forwards, with gradients, take torchvision's own path)."""
    import types

    from torchvision.models.densenet import _DenseBlock

    for module in model.modules():
        if isinstance(module, _DenseBlock):
            module.forward = types.MethodType(_dense_block_forward, module)
        elif (isinstance(module, torch.nn.MaxPool2d) and _pair(module.kernel_size) == (3, 3)
              and _pair(module.stride) == (2, 2) and _pair(module.padding) == (1, 1)
              and _pair(module.dilation) == (1, 1) and not module.ceil_mode and not module.return_indices):
            module.forward = types.MethodType(_max_pool_forward, module)
    return model


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
