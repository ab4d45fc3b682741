"""Fully convolutional push/grasp Q networks (SPEC section 4).

One forward maps a top-down heightmap (colour, depth and, for the goal-conditioned net, the goal
mask) to two Q maps, push and grasp, each (R, H, W): one map per gripper rotation
theta_i = i * 22.5 deg, one value per heightmap pixel (row, col) = (y, x) of the robot base frame.

Input recipe (the old code's, kept exactly):
  1. zoom the H x H heightmaps 2x (nearest) and zero-pad them to P x P, P = 2H*sqrt(2) rounded up
     to a multiple of 32 (224 -> 448 -> 640), so no rotation crops the workspace;
  2. normalise: colour /255 then ImageNet mean/std; depth (d - 0.01) / 0.03; mask /255
     (the zero padding is normalised too, as before);
  3. for rotation i rotate the images by -theta_i (nearest, affine_grid/grid_sample,
     align_corners=True), run the trunks (stride 32) and the heads, rotate the (P/32)^2 head
     output back by +theta_i (nearest), upsample x16 (bilinear) to P/2 and crop the centre H x H.

Batch-norm semantics.  The old code kept the model in train mode and ran one rotation per call,
so every BatchNorm normalised each rotation by that rotation's own statistics.  Here every
BatchNorm2d is a `PerSampleBatchNorm2d` that does exactly that for a whole batch of rotations
(instance normalisation with the BN's affine parameters, via group_norm with one group per
channel), so all rotations run as ONE batched forward with the old numbers.  Norm modes:
  'per_sample' (default, faithful): per-rotation statistics.  Running statistics are updated only
      when the module is in train mode (training forwards), with the batch mean of the
      per-sample means and unbiased variances (what torch's instance_norm does); inference
      forwards (eval mode) leave them alone.  The old code also updated them during inference;
      they never influenced its outputs.
  'running': classic eval-mode BN with the stored running statistics, in training forwards too
      (they then stay fixed).  Faster; differs from the faithful numbers; only meaningful once
      running statistics have been learned in 'per_sample' training.
  'batch':   plain nn.BatchNorm2d behaviour (statistics over the whole batch); used by the tests
      to reproduce the old one-rotation-per-call loop.

Backbones: 'densenet121' (faithful: torchvision densenet121().features, 1024 ch), 'resnet18'
(conv1..layer4, 512 ch), 'tiny' (a 4-conv CNN, 64 ch, for tests and quick CPU runs).  All have
stride 32.  ImageNet weights are used when present locally and never downloaded.

Snapshots are plain state_dict files with one extra entry, META_KEY, naming the architecture and
the backbone; module names follow the old code (push_color_trunk.features..., pushnet.push-norm0
...) so the old code's bare state_dicts load too.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from utils import NUM_ROTATIONS, ROTATION_STEP_RAD, UserError

BACKBONES = ('densenet121', 'resnet18', 'tiny', 'tiny16', 'tiny16ctx')
LIGHT_BACKBONES = ('tiny', 'tiny16', 'tiny16ctx')  # no ImageNet weights: they start from random weights
ARCHITECTURES = ('goal_conditioned', 'goal_agnostic')
NORM_MODES = ('per_sample', 'running', 'batch')
PRECISIONS = ('fp32', 'bf16')

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEPTH_MEAN_M = 0.01
DEPTH_STD_M = 0.03
TRUNK_STRIDE = 32
UPSAMPLE_FACTOR = 16  # (P/32) * 16 = P/2 = the 1x heightmap scale plus padding
HEAD_CHANNELS = 64

META_KEY = '__meta__'
SNAPSHOT_FORMAT = 'goal-push-grasp-snapshot'
SNAPSHOT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Batch norm with per-sample statistics
# ----------------------------------------------------------------------------------------------
class PerSampleBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose statistics are taken per sample (see the module docstring).

    Same parameters, buffers and state_dict keys as nn.BatchNorm2d, so snapshots and ImageNet
    weights load unchanged.  `norm_mode` is one of NORM_MODES.
    """

    norm_mode: str = 'per_sample'

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> 'PerSampleBatchNorm2d':
        new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_mode == 'batch':
            return super().forward(x)
        if self.norm_mode == 'running':
            # A per-channel affine with the running statistics.  Written out rather than
            # F.batch_norm(training=False), which in a CPU profile of a resnet18 training step
            # took 12.7 s against 3.4 s for this form (slower convolutions around it).
            scale = self.weight * torch.rsqrt(self.running_var + self.eps)
            shift = self.bias - self.running_mean * scale
            return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)
        if self.training and self.track_running_stats:
            self._update_running_stats(x)
        # group_norm with one group per channel = instance norm with per-channel affine; it was
        # the fastest exact variant measured on CPU (instance_norm and hand-written var_mean
        # were 1.5-5x slower).
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)

    @torch.no_grad()
    def _update_running_stats(self, x: torch.Tensor) -> None:
        # What torch.instance_norm does with running stats: one momentum step towards the batch
        # mean of the per-sample means and unbiased variances.
        var, mean = torch.var_mean(x.detach().float(), dim=(2, 3), correction=1)
        m = self.momentum if self.momentum is not None else 0.1
        self.running_mean.mul_(1 - m).add_(mean.mean(0), alpha=m)
        self.running_var.mul_(1 - m).add_(var.mean(0), alpha=m)
        self.num_batches_tracked.add_(1)


def convert_batchnorms(module: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm2d below `module` (in place) by a PerSampleBatchNorm2d."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, PerSampleBatchNorm2d):
            setattr(module, name, PerSampleBatchNorm2d.from_batchnorm(child))
        else:
            convert_batchnorms(child)
    return module


def set_norm_mode(module: nn.Module, mode: str) -> None:
    """Set the statistics mode ('per_sample', 'running' or 'batch') of every BN below `module`."""
    if mode not in NORM_MODES:
        raise UserError(f"unknown norm mode '{mode}'; choose one of {', '.join(NORM_MODES)}")
    for m in module.modules():
        if isinstance(m, PerSampleBatchNorm2d):
            m.norm_mode = mode


# ----------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------
class Trunk(nn.Module):
    """One feature trunk: (N, 3, P, P) -> (N, C, P/32, P/32).  The `features` child keeps the
    old code's key names (push_color_trunk.features.conv0.weight ...)."""

    def __init__(self, features: nn.Module, out_channels: int, stride: int = TRUNK_STRIDE):
        super().__init__()
        self.features = features
        self.out_channels = out_channels
        self.stride = stride  # input pixels per output cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _tiny_features(stride: int = 32, context: bool = False) -> nn.Sequential:
    # A 4x4/4 patchify conv, three 3x3/2 convs and one 3x3/1 conv: stride 32, 64 channels, a
    # receptive field of 124 input px (62 heightmap px, 12 cm: a block and its neighbours).
    # About 0.5 s for a 16-rotation goal-conditioned forward on 2 CPU cores.
    # stride 16 ('tiny16'): the fourth conv keeps the resolution, so a Q cell is 8 heightmap px
    # (1.6 cm) instead of 16 (3.2 cm, a third of a block: measured, the masked argmax of the
    # stride-32 map then lands near the goal's edge); receptive field 92 input px (9 cm); about
    # 1.8x the compute.
    layers: list[tuple[str, nn.Module]] = []
    chans = [(3, 16, 4, 4, 0), (16, 32, 3, 2, 1), (32, 64, 3, 2, 1), (64, 64, 3, 2 if stride == 32 else 1, 1),
             (64, 64, 3, 1, 1)]
    # 'tiny16ctx': two more 3x3 convs at stride 16, dilated 2 and 4, widen the receptive field
    # from 92 to 284 input px (28 cm, +-14 cm around a cell) for about 30 % more compute. A push
    # moves 10 cm (SPEC 3): its Q at the start pixel must see what lies up to 10 cm ahead, which
    # tiny16's +-4.5 cm cannot.
    dilations = [1] * len(chans)
    if context:
        chans += [(64, 64, 3, 1, 2), (64, 64, 3, 1, 4)]
        dilations += [2, 4]
    for i, ((cin, cout, k, s, p), d) in enumerate(zip(chans, dilations)):
        layers += [(f'conv{i}', nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, bias=False)),
                   (f'norm{i}', nn.BatchNorm2d(cout)),
                   (f'relu{i}', nn.ReLU(inplace=True))]
    return nn.Sequential(OrderedDict(layers))


def build_trunk(backbone: str) -> Trunk:
    """A randomly initialised trunk of the named backbone (ImageNet weights come later)."""
    if backbone == 'densenet121':
        return Trunk(torchvision.models.densenet121(weights=None).features, 1024)
    if backbone == 'resnet18':
        r = torchvision.models.resnet18(weights=None)
        names = ('conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4')
        return Trunk(nn.Sequential(OrderedDict((n, getattr(r, n)) for n in names)), 512)
    if backbone == 'tiny':
        return Trunk(_tiny_features(), 64)
    if backbone == 'tiny16':
        return Trunk(_tiny_features(16), 64, stride=16)
    if backbone == 'tiny16ctx':
        return Trunk(_tiny_features(16, context=True), 64, stride=16)
    raise UserError(f"unknown backbone '{backbone}'; choose one of {', '.join(BACKBONES)}")


def _torchvision_weights_filename(backbone: str) -> Optional[str]:
    if backbone == 'densenet121':
        return os.path.basename(torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url)
    if backbone == 'resnet18':
        return os.path.basename(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    return None


def find_imagenet_weights(backbone: str) -> Optional[Path]:
    """The torchvision-cache copy of the backbone's ImageNet weights, or None (never downloads)."""
    name = _torchvision_weights_filename(backbone)
    if name is None:
        return None
    path = Path(torch.hub.get_dir()) / 'checkpoints' / name
    return path if path.is_file() else None


_DENSENET_OLD_KEY = re.compile(
    r'^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$')


def _trunk_state_from_imagenet(state: dict, backbone: str) -> dict:
    """Keys of a torchvision classification checkpoint -> keys of Trunk.features."""
    out = {}
    for key, value in state.items():
        m = _DENSENET_OLD_KEY.match(key)  # pre-2019 densenet files name 'norm.1' for 'norm1'
        if m:
            key = m.group(1) + m.group(2)
        if backbone == 'densenet121':
            if key.startswith('features.'):
                out[key[len('features.'):]] = value
            elif not key.startswith('classifier.'):
                out[key] = value
        else:
            if not key.startswith('fc.'):
                out[key] = value
    return out


_NOTICE_PRINTED = False


def load_imagenet_weights(trunks: Sequence[Trunk], backbone: str,
                          weights: Optional[str] = 'auto') -> Optional[Path]:
    """Copy ImageNet weights into every trunk; returns the file used, or None.

    weights: 'auto' looks in torchvision's cache (torch.hub.get_dir()/checkpoints); 'none' skips;
    any other string is a file path given by the user (a full torchvision checkpoint or a
    features-only state_dict).  Absent weights never fail: one notice line, random init.  A
    user-given path that does not exist or does not fit is a UserError.
    """
    global _NOTICE_PRINTED
    if backbone in LIGHT_BACKBONES or weights is None or weights == 'none':
        return None
    if weights == 'auto':
        path = find_imagenet_weights(backbone)
        if path is None:
            if not _NOTICE_PRINTED:
                print(f"notice: no ImageNet weights for {backbone} in "
                      f"{Path(torch.hub.get_dir()) / 'checkpoints'}; trunks start from random "
                      f"weights (nothing is downloaded)", flush=True)
                _NOTICE_PRINTED = True
            return None
    else:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"ImageNet weights file not found: {path}")
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # corrupt file, wrong format
        first = (str(exc).strip().splitlines() or [''])[0]
        raise UserError(f"cannot read ImageNet weights {path}: {type(exc).__name__}: {first}") from None
    state = _trunk_state_from_imagenet(state, backbone)
    for trunk in trunks:
        missing, unexpected = trunk.features.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith('num_batches_tracked')]
        if missing or unexpected:
            raise UserError(f"ImageNet weights {path} do not fit backbone {backbone} "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return path


# ----------------------------------------------------------------------------------------------
# Input recipe, rotations and output cropping (pure functions; tested on their own)
# ----------------------------------------------------------------------------------------------
def padded_size(heightmap_size: int) -> int:
    """P: side of the padded 2x-zoomed input, the diagonal rounded up to a multiple of 32."""
    return int(np.ceil(2 * heightmap_size * np.sqrt(2) / TRUNK_STRIDE) * TRUNK_STRIDE)


def check_heightmaps(color: np.ndarray, depth: np.ndarray, mask: Optional[np.ndarray]) -> None:
    """Raise ValueError (a caller bug, not user input) on wrong shapes, dtypes or NaN depth."""
    if color.ndim != 3 or color.shape[2] != 3 or color.dtype != np.uint8:
        raise ValueError(f'colour heightmap must be HxWx3 uint8 RGB, got {color.shape} {color.dtype}')
    h = color.shape[0]
    if color.shape[1] != h or h % 2:
        raise ValueError(f'heightmaps must be square with an even side, got {color.shape[:2]}')
    if depth.shape != (h, h):
        raise ValueError(f'depth heightmap must be {h}x{h}, got {depth.shape}')
    if np.isnan(depth).any():
        raise ValueError('depth heightmap has NaN: pass the valid map (NaN -> 0)')
    if mask is not None and mask.shape != (h, h):
        raise ValueError(f'goal mask must be {h}x{h}, got {mask.shape}')


def prepare_inputs(color: np.ndarray, depth: np.ndarray, mask: Optional[np.ndarray],
                   device: torch.device | str = 'cpu') -> torch.Tensor:
    """Heightmaps -> one normalised, zoomed, padded network input.

    color: (H, H, 3) uint8 RGB; depth: (H, H) float metres above the table, no NaN;
    mask: (H, H) uint8 0/255 (bool is read as 0/255) or None.
    Returns (1, 4 or 5, P, P) float32 on `device`: channels colour RGB (ImageNet-normalised),
    depth ((d - 0.01) / 0.03), and the mask (/255) when given.  Depth and mask stay one channel
    here; the net replicates them to 3 after rotating (rotating 1 channel is 3x cheaper).
    """
    check_heightmaps(color, depth, mask)
    h = color.shape[0]
    pad = (padded_size(h) - 2 * h) // 2
    chans = [torch.from_numpy(np.ascontiguousarray(color)).to(device).permute(2, 0, 1).float() / 255,
             torch.from_numpy(np.asarray(depth, np.float32)).to(device)[None]]
    if mask is not None:
        m = mask.astype(np.float32) * 255 if mask.dtype == bool else mask.astype(np.float32)
        chans.append(torch.from_numpy(m).to(device)[None] / 255)
    x = torch.cat(chans, 0)[None]                                     # (1, C, H, H)
    x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)     # 2x nearest zoom
    x = F.pad(x, (pad, pad, pad, pad))                                # zero pad, then normalise
    mean = torch.tensor(list(IMAGENET_MEAN) + [DEPTH_MEAN_M], device=x.device).view(1, 4, 1, 1)
    std = torch.tensor(list(IMAGENET_STD) + [DEPTH_STD_M], device=x.device).view(1, 4, 1, 1)
    x[:, :4] = (x[:, :4] - mean) / std
    return x


def rotation_matrices(rotations: Sequence[int], inverse: bool) -> torch.Tensor:
    """(N, 2, 3) affine_grid matrices of the old code.

    inverse=False: the matrix that rotates the input by -theta before the trunks,
    [[cos(-t), sin(-t), 0], [-sin(-t), cos(-t), 0]]; inverse=True: the one that rotates the head
    output back, [[cos t, sin t, 0], [-sin t, cos t, 0]].  Computed in float64 like the old code.
    """
    t = np.asarray(rotations, dtype=np.float64) * ROTATION_STEP_RAD
    if not inverse:
        t = -t
    c, s = np.cos(t), np.sin(t)
    z = np.zeros_like(t)
    mats = np.stack([np.stack([c, s, z], -1), np.stack([-s, c, z], -1)], 1)
    return torch.from_numpy(mats).float()


def rotate_images(x: torch.Tensor, rotations: Sequence[int], inverse: bool = False) -> torch.Tensor:
    """Rotate each of the N images of x (N, C, H, W) by its rotation (nearest, zeros outside,
    align_corners=True).  A (1, C, H, W) x is shared by all N rotations.

    inverse=False turns image content by -theta_i about the image centre (the old 'before'
    grid), inverse=True by +theta_i ('after'); one undoes the other.
    """
    n = len(rotations)
    if x.shape[0] == 1 and n > 1:
        x = x.expand(n, -1, -1, -1)
    theta = rotation_matrices(rotations, inverse).to(x.device)
    grid = F.affine_grid(theta, [n, x.shape[1], x.shape[2], x.shape[3]], align_corners=True)
    return F.grid_sample(x, grid.to(x.dtype), mode='nearest', padding_mode='zeros',
                         align_corners=True)


def unrotate_upsample_crop(logits: torch.Tensor, rotations: Sequence[int],
                           heightmap_size: int, upsample_factor: int = UPSAMPLE_FACTOR) -> torch.Tensor:
    """Head output (N, 1, P/32, P/32) -> Q maps (N, H, H) in the heightmap frame.

    Rotates back by +theta (nearest), upsamples x16 (bilinear; align_corners=False, the
    nn.Upsample default since torch 0.4, which the old code ran on), crops the centre H x H.
    """
    x = rotate_images(logits.float(), rotations, inverse=True)
    x = F.interpolate(x, scale_factor=upsample_factor, mode='bilinear', align_corners=False)
    start = (x.shape[-1] - heightmap_size) // 2
    return x[:, 0, start:start + heightmap_size, start:start + heightmap_size]


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
def _head(prefix: str, in_channels: int, zero_last: bool = False) -> nn.Sequential:
    head = nn.Sequential(OrderedDict([
        (f'{prefix}-norm0', nn.BatchNorm2d(in_channels)),
        (f'{prefix}-relu0', nn.ReLU(inplace=True)),
        (f'{prefix}-conv0', nn.Conv2d(in_channels, HEAD_CHANNELS, kernel_size=1, bias=False)),
        (f'{prefix}-norm1', nn.BatchNorm2d(HEAD_CHANNELS)),
        (f'{prefix}-relu1', nn.ReLU(inplace=True)),
        (f'{prefix}-conv1', nn.Conv2d(HEAD_CHANNELS, 1, kernel_size=1, bias=False)),
    ]))
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_last:
        # Every Q starts at 0 and rises only where labels lift it.  A random last conv gives a
        # light trunk from random weights Q maps whose spread inside the goal mask (sd 0.7-0.9,
        # measured) is larger than the signal, so the masked argmax picks noise.
        nn.init.zeros_(head[-1].weight)
    return head


class RotatedQNet(nn.Module):
    """Shared machinery of both nets: trunks, two heads, the batched rotation forward.

    Attributes: architecture ('goal_conditioned' | 'goal_agnostic'), backbone, goal_conditioned.
    """

    architecture = ''
    goal_conditioned = False

    def __init__(self, backbone: str = 'densenet121', pretrained: Optional[str] = 'auto'):
        super().__init__()
        if backbone not in BACKBONES:
            raise UserError(f"unknown backbone '{backbone}'; choose one of {', '.join(BACKBONES)}")
        self.backbone = backbone
        self.channels_last = False
        self.push_color_trunk = build_trunk(backbone)
        self.push_depth_trunk = build_trunk(backbone)
        self.grasp_color_trunk = build_trunk(backbone)
        self.grasp_depth_trunk = build_trunk(backbone)
        if self.goal_conditioned:
            self.mask_trunk = build_trunk(backbone)
        c = self.push_color_trunk.out_channels
        n_feat = 3 if self.goal_conditioned else 2
        # tiny16 and tiny16ctx (the light backbones the pipeline trains) start their Q maps at 0;
        # the others keep the paper's random (Kaiming) last conv.
        zero_last = backbone in ('tiny16', 'tiny16ctx')
        self.pushnet = _head('push', n_feat * c, zero_last=zero_last)
        self.graspnet = _head('grasp', n_feat * c, zero_last=zero_last)
        self.imagenet_weights = load_imagenet_weights(self.trunks(), backbone, pretrained)
        convert_batchnorms(self)

    @property
    def upsample_factor(self) -> int:
        """Head cells -> heightmap pixels: the trunk's stride on the 2x-zoomed input, halved."""
        return getattr(self.push_color_trunk, "stride", TRUNK_STRIDE) // 2

    # -- groups of modules, used for freezing -----------------------------------------------
    def trunks(self) -> list[Trunk]:
        return [m for m in self.children() if isinstance(m, Trunk)]

    def push_modules(self) -> list[nn.Module]:
        """The push net: its two trunks and its head."""
        return [self.push_color_trunk, self.push_depth_trunk, self.pushnet]

    def grasp_modules(self) -> list[nn.Module]:
        """The grasp net: its two trunks, its head and (goal-conditioned) the goal-mask trunk."""
        mods = [self.grasp_color_trunk, self.grasp_depth_trunk, self.graspnet]
        if self.goal_conditioned:
            mods.append(self.mask_trunk)
        return mods

    def set_channels_last(self, enabled: bool) -> None:
        self.channels_last = enabled
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, heightmap_size: int,
                rotations: Sequence[int] = tuple(range(NUM_ROTATIONS)),
                heads: Sequence[str] = ('push', 'grasp')) -> dict[str, torch.Tensor]:
        """Q maps for the given rotations, as one batched forward.

        inputs: (1, 4|5, P, P) from prepare_inputs of H x H heightmaps; heightmap_size: H.
        rotations: rotation indices (any order, repeats allowed).  heads: which of 'push',
        'grasp' to compute (the other head's trunks are skipped).
        Returns {'push': (N, H, H), 'grasp': (N, H, H)} float32, N = len(rotations).
        """
        if self.goal_conditioned and inputs.shape[1] != 5:
            raise ValueError('the goal-conditioned net needs a goal mask')
        rotations = [int(r) for r in rotations]
        x = rotate_images(inputs, rotations)                          # (N, C, P, P)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        color = x[:, 0:3].contiguous(memory_format=fmt)
        depth = x[:, 3:4].expand(-1, 3, -1, -1).contiguous(memory_format=fmt)
        extra = []
        if self.goal_conditioned:
            mask = x[:, 4:5].expand(-1, 3, -1, -1).contiguous(memory_format=fmt)
            extra = [self.mask_trunk(mask)]
        out = {}
        if 'push' in heads:
            feat = torch.cat([self.push_color_trunk(color), self.push_depth_trunk(depth)] + extra, 1)
            out['push'] = unrotate_upsample_crop(self.pushnet(feat), rotations, heightmap_size, self.upsample_factor)
        if 'grasp' in heads:
            feat = torch.cat([self.grasp_color_trunk(color), self.grasp_depth_trunk(depth)] + extra, 1)
            out['grasp'] = unrotate_upsample_crop(self.graspnet(feat), rotations, heightmap_size, self.upsample_factor)
        return out


class GoalConditionedNet(RotatedQNet):
    """Five trunks (push colour/depth, grasp colour/depth, goal mask); both heads see the mask."""

    architecture = 'goal_conditioned'
    goal_conditioned = True


class GoalAgnosticNet(RotatedQNet):
    """Four trunks, no mask: goal-agnostic VPG and the grasp-explore model."""

    architecture = 'goal_agnostic'
    goal_conditioned = False


def build_model(architecture: str, backbone: str = 'densenet121', pretrained: Optional[str] = 'auto',
                seed: Optional[int] = None) -> RotatedQNet:
    """Build a net.  With `seed`, its random initialisation is drawn from a torch generator
    seeded with it (the global torch RNG is saved and restored around it)."""
    cls = {'goal_conditioned': GoalConditionedNet, 'goal_agnostic': GoalAgnosticNet}.get(architecture)
    if cls is None:
        raise UserError(f"unknown architecture '{architecture}'; choose one of {', '.join(ARCHITECTURES)}")
    if seed is None:
        return cls(backbone, pretrained)
    # torchvision initialises through the global RNG; fork it so the seed stays local.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(backbone, pretrained)


def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for precision 'bf16', nothing for 'fp32'."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------------------------
# Snapshots
# ----------------------------------------------------------------------------------------------
def snapshot_meta(model: RotatedQNet) -> dict:
    return {'format': SNAPSHOT_FORMAT, 'version': SNAPSHOT_VERSION,
            'architecture': model.architecture, 'backbone': model.backbone,
            'torch': str(torch.__version__)}


def save_snapshot(model: RotatedQNet, path: str | os.PathLike) -> None:
    """Write the model's state_dict plus META_KEY to `path` atomically (tmp file + rename)."""
    state = OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
    state[META_KEY] = snapshot_meta(model)
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_snapshot(path: str | os.PathLike,
                  map_location: torch.device | str = 'cpu') -> tuple[Optional[dict], dict]:
    """(metadata or None, state_dict) of a snapshot file; UserError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"snapshot file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [''])[0]
        raise UserError(f"cannot read snapshot {path}: {type(exc).__name__}: {first}") from None
    if not isinstance(state, dict):
        raise UserError(f"snapshot {path} is not a state_dict (found {type(state).__name__})")
    state = dict(state)
    meta = state.pop(META_KEY, None)
    odd = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise UserError(f"snapshot {path} is not a network's state_dict (entry {odd[0]!r} is not a named tensor)")
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"snapshot {path} has unreadable metadata")
    if meta is not None and meta.get('format') != SNAPSHOT_FORMAT:
        raise UserError(f"snapshot {path} is not a {SNAPSHOT_FORMAT} file (its format is {meta.get('format')!r})")
    version = meta.get('version') if meta is not None else None
    if meta is not None and not (isinstance(version, int) and not isinstance(version, bool)
                                 and 1 <= version <= SNAPSHOT_VERSION):
        raise UserError(f"snapshot {path} has version {version!r}; this code reads versions 1..{SNAPSHOT_VERSION}")
    return meta, state


def infer_architecture(state: dict) -> tuple[str, str]:
    """(architecture, backbone) guessed from the keys of a bare state_dict."""
    arch = 'goal_conditioned' if any(k.startswith('mask_trunk.') for k in state) else 'goal_agnostic'
    if any('denseblock' in k for k in state):
        backbone = 'densenet121'
    elif any('.layer1.' in k for k in state):
        backbone = 'resnet18'
    elif any(k.startswith('push_color_trunk.features.conv4.') for k in state):
        backbone = 'tiny'
    else:
        backbone = 'unknown'
    return arch, backbone


def describe_snapshot(path: str | os.PathLike) -> tuple[str, str]:
    """(architecture, backbone) a snapshot holds: its metadata, else guessed from its keys.
    UserError (one line) when the file is unreadable or describes no known net."""
    meta, state = read_snapshot(path, 'cpu')
    if meta is not None:
        if not isinstance(meta, dict):
            raise UserError(f"snapshot {path} has unreadable metadata")
        arch, backbone = meta.get('architecture', '?'), meta.get('backbone', '?')
    else:
        arch, backbone = infer_architecture(_translate_old_keys(state))
    if arch not in ARCHITECTURES or backbone not in BACKBONES:
        raise UserError(f"snapshot {path} holds no known net (architecture {arch}, backbone {backbone})")
    return arch, backbone


def _translate_old_keys(state: dict) -> dict:
    """Old-code snapshots: full torchvision models as trunks (drop .classifier.*) and, in very
    old files, densenet 'norm.1'-style keys."""
    out = {}
    for k, v in state.items():
        if '.classifier.' in k:
            continue
        m = _DENSENET_OLD_KEY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def load_snapshot(model: RotatedQNet, path: str | os.PathLike,
                  map_location: torch.device | str | None = None) -> dict:
    """Load a snapshot into `model`; returns its metadata (inferred for a bare state_dict).

    Raises UserError, one line, when the snapshot holds another architecture or backbone, or
    when a bare state_dict's keys/shapes do not fit.
    """
    if map_location is None:
        map_location = next(model.parameters()).device
    meta, state = read_snapshot(path, map_location)
    if meta is not None:
        arch, backbone = meta.get('architecture', '?'), meta.get('backbone', '?')
    else:
        state = _translate_old_keys(state)
        arch, backbone = infer_architecture(state)
    if (arch, backbone) != (model.architecture, model.backbone):
        raise UserError(
            f"snapshot {path} holds a {arch} net with backbone {backbone}, but this run builds a "
            f"{model.architecture} net with backbone {model.backbone}; pass the matching "
            f"--backbone / goal-conditioning options or another snapshot")
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    bad_shape = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise UserError(
            f"snapshot {path} does not fit the {model.architecture}/{model.backbone} net: "
            f"{len(missing)} missing keys {missing[:2]}, {len(unexpected)} unexpected {unexpected[:2]}, "
            f"{len(bad_shape)} with other shapes {bad_shape[:2]}")
    model.load_state_dict(state, strict=False)
    return meta if meta is not None else {'architecture': arch, 'backbone': backbone}


def build_model_from_snapshot(path: str | os.PathLike, device: torch.device | str = 'cpu',
                              default_backbone: str = 'densenet121',
                              default_architecture: str = 'goal_agnostic') -> RotatedQNet:
    """Build the net a snapshot describes (defaults only for bare state_dicts whose backbone
    cannot be inferred) and load it; no ImageNet lookup."""
    meta, state = read_snapshot(path, 'cpu')
    if meta is not None:
        arch, backbone = meta.get('architecture', default_architecture), meta.get('backbone', default_backbone)
    else:
        arch, backbone = infer_architecture(_translate_old_keys(state))
        if backbone == 'unknown':
            backbone = default_backbone
    if arch not in ARCHITECTURES or backbone not in BACKBONES:
        raise UserError(f"snapshot {path} names an unknown net {arch}/{backbone}")
    model = build_model(arch, backbone, pretrained='none').to(device)
    load_snapshot(model, path, map_location=device)
    return model
