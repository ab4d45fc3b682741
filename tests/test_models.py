"""Tests of models.py on CPU with the tiny backbone (no weights are downloaded)."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from utils import NUM_ROTATIONS, UserError  # noqa: E402

torch.set_num_threads(1)   # one thread per test process (tests/conftest.py)
H = 224


def scene(seed: int = 0, size: int = H):
    """A random-looking but structured heightmap triple: blocks on a table."""
    rng = np.random.default_rng(seed)
    color = np.full((size, size, 3), 40, np.uint8)
    depth = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.uint8)
    for k in range(6):
        r, c = rng.integers(10, size - 40, 2)
        h, w = rng.integers(12, 30, 2)
        color[r:r + h, c:c + w] = rng.integers(0, 255, 3)
        depth[r:r + h, c:c + w] = rng.uniform(0.02, 0.1)
        if k == 0:
            mask[r:r + h, c:c + w] = 255
    return color, depth, mask


@pytest.fixture(scope='module')
def inputs():
    color, depth, mask = scene()
    return {'goal_conditioned': models.prepare_inputs(color, depth, mask),
            'goal_agnostic': models.prepare_inputs(color, depth, None)}


SMALL = 112   # the pipeline works for any even square size; smaller runs 4x faster


# ---------------------------------------------------------------------------------------------
# Batched forward == the old loop of 16 batch-1 train-mode forwards
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,size', [('goal_conditioned', H), ('goal_agnostic', SMALL)])
def test_batched_forward_equals_old_loop(arch, size):
    net = models.build_model(arch, 'tiny', seed=1)
    # Give the BN affine parameters non-trivial values so a wrong normalisation shows.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)

    color, depth, mask = scene(size=size)
    x = models.prepare_inputs(color, depth, mask if net.goal_conditioned else None)
    net.eval()
    with torch.no_grad():
        batched = net(x, size)

    old = copy.deepcopy(net)
    models.set_norm_mode(old, 'batch')   # plain nn.BatchNorm2d, as the old code ran it
    old.train()
    with torch.no_grad():
        loop = [old(x, size, [i]) for i in range(NUM_ROTATIONS)]
    for head in ('push', 'grasp'):
        ref = torch.cat([o[head] for o in loop])
        assert batched[head].shape == (NUM_ROTATIONS, size, size)
        assert (batched[head] - ref).abs().max().item() < 1e-4
        assert ref.abs().max().item() > 0.1   # not a trivially zero map

    # The comparison has teeth: whole-batch statistics give other numbers.
    with torch.no_grad():
        wrong = old(x, size, [0, 1, 2, 3])
    assert (wrong['push'] - batched['push'][:4]).abs().max().item() > 1e-2


def test_subset_of_rotations_matches_full(inputs):
    net = models.build_model('goal_conditioned', 'tiny', seed=2).eval()
    x = inputs['goal_conditioned']
    with torch.no_grad():
        full = net(x, H)
        sub = net(x, H, [3, 11], heads=('grasp',))
    assert set(sub) == {'grasp'}
    assert torch.allclose(sub['grasp'], full['grasp'][[3, 11]], atol=1e-5)


def test_running_stats_updated_only_in_train_mode(inputs):
    net = models.build_model('goal_conditioned', 'tiny', seed=3)
    bn = net.pushnet[0]
    before = bn.running_mean.clone()
    net.eval()
    with torch.no_grad():
        net(inputs['goal_conditioned'], H, [0, 1])
    assert torch.equal(bn.running_mean, before)
    net.train()
    with torch.no_grad():
        net(inputs['goal_conditioned'], H, [0, 1])
    assert not torch.equal(bn.running_mean, before)


def test_speed_modes_run_and_stay_close(inputs):
    net = models.build_model('goal_conditioned', 'tiny', seed=4).eval()
    x = inputs['goal_conditioned']
    rots = [0, 5]
    with torch.no_grad():
        ref = net(x, H, rots)['grasp']
        with models.autocast_context('cpu', 'bf16'):
            bf = net(x, H, rots)['grasp']
        net.set_channels_last(True)
        cl = net(x, H, rots)['grasp']
        net.set_channels_last(False)
        models.set_norm_mode(net, 'running')
        run = net(x, H, rots)['grasp']
    scale = ref.abs().max().item()
    assert bf.dtype == torch.float32
    # bfloat16 is a speed option, not a faithful one: per-sample normalisation of nearly
    # constant feature maps amplifies its rounding (about 10 % mean error at random init).
    corr = np.corrcoef(bf.flatten().numpy(), ref.flatten().numpy())[0, 1]
    assert corr > 0.9
    # channels_last changes the summation order only; the same amplification makes that ~1e-3.
    assert (cl - ref).abs().max().item() < 5e-3 * scale
    assert run.shape == ref.shape and torch.isfinite(run).all()
    with pytest.raises(UserError):
        models.set_norm_mode(net, 'bogus')


# ---------------------------------------------------------------------------------------------
# Rotations: the pipeline maps a response back to its pixel
# ---------------------------------------------------------------------------------------------
def _blob_centroid(img: torch.Tensor) -> np.ndarray:
    a = img.detach().numpy()
    rows, cols = np.nonzero(a > 0.5 * a.max())
    return np.array([rows.mean(), cols.mean()])


@pytest.mark.parametrize('size', [640, 65])
def test_rotate_images_moves_blob_analytically(size):
    centre = (size - 1) / 2
    q_row, q_col = centre - 0.3 * size, centre + 0.2 * size
    img = torch.zeros(1, 1, size, size)
    r0, c0 = int(round(q_row)), int(round(q_col))
    img[0, 0, r0 - 1:r0 + 2, c0 - 1:c0 + 2] = 1.0
    ctr = torch.zeros(1, 1, size, size)
    cc = int(np.floor(centre))
    ctr[0, 0, cc:cc + 2 if size % 2 == 0 else cc + 1, cc:cc + 2 if size % 2 == 0 else cc + 1] = 1.0
    rots = list(range(NUM_ROTATIONS))
    out = models.rotate_images(img, rots)
    back = models.rotate_images(out, rots, inverse=True)
    out_ctr = models.rotate_images(ctr, rots)
    for i in rots:
        t = i * 2 * np.pi / NUM_ROTATIONS
        # affine_grid samples input at A p with A = [[cos t, -sin t], [sin t, cos t]] (x=col,
        # y=row, normalised coordinates), so content at q lands at p = A^T q.
        qx, qy = r0 * 0 + (c0 - centre), (r0 - centre)
        px, py = np.cos(t) * qx + np.sin(t) * qy, -np.sin(t) * qx + np.cos(t) * qy
        expected = np.array([py + centre, px + centre])
        assert np.linalg.norm(_blob_centroid(out[i, 0]) - expected) <= 2.0, i
        assert np.linalg.norm(_blob_centroid(back[i, 0]) - [r0, c0]) <= 1.0, i
        assert np.linalg.norm(_blob_centroid(out_ctr[i, 0]) - [centre, centre]) <= 1.0, i


class _PoolMask(nn.Module):
    """A stand-in trunk: the mask channel averaged over 32 x 32 cells (stride 32)."""

    def forward(self, x):
        return F.avg_pool2d(x[:, :1], models.TRUNK_STRIDE)


class _Pick(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.channel = channel

    def forward(self, x):
        return x[:, self.channel:self.channel + 1]


def _identity_like_net():
    net = models.build_model('goal_conditioned', 'tiny', seed=0)
    for name in ('push_color_trunk', 'push_depth_trunk', 'grasp_color_trunk', 'grasp_depth_trunk',
                 'mask_trunk'):
        setattr(net, name, _PoolMask())
    net.pushnet = _Pick(2)   # cat(colour, depth, mask) -> the mask feature
    net.graspnet = _Pick(2)
    return net.eval()


def _peak_centre(q: np.ndarray) -> np.ndarray:
    """Centroid of the pixels at the maximum (bilinear upsampling makes a 2 x 2 plateau)."""
    rows, cols = np.nonzero(q >= q.max() - 1e-6 * abs(q.max()))
    return np.array([rows.mean(), cols.mean()])


def test_full_forward_returns_response_at_its_pixel():
    """A goal mask blob goes through zoom, pad, rotate, stride 32, unrotate, upsample and crop
    and must come back at its pixel for every rotation."""
    net = _identity_like_net()
    # A 16 x 16 blob filling exactly one stride-32 cell of the padded input: heightmap rows
    # 32..47 -> padded rows 96 + 64 .. 96 + 95 = cell 5; cols 160..175 -> cell 13.
    target = np.array([39.5, 167.5])
    color, depth, _ = scene()
    mask = np.zeros((H, H), np.uint8)
    mask[32:48, 160:176] = 255
    x = models.prepare_inputs(color, depth, mask)
    with torch.no_grad():
        q = net(x, H)['grasp'].numpy()
    errors = [np.linalg.norm(_peak_centre(q[i]) - target) for i in range(NUM_ROTATIONS)]
    # 0 and 180 deg map the grid onto itself: the cell comes back exactly (sub-pixel).
    assert errors[0] <= 0.5 and errors[NUM_ROTATIONS // 2] <= 0.5, errors
    # Other angles: the input rotation and the output rotation (both nearest) undo each other
    # for a cell-aligned blob to within a pixel (measured: <= 0.7 px).  A rotation in the wrong
    # direction misses by 70+ px.
    assert max(errors) <= 2, errors

    # Teeth: swapping the direction of the output rotation moves the peak far away.
    orig = models.rotate_images

    def swapped(x, rotations, inverse=False):
        return orig(x, rotations, inverse=not inverse) if x.shape[1] == 1 else orig(x, rotations, inverse)

    models.rotate_images = swapped
    try:
        with torch.no_grad():
            q_bad = net(x, H)['grasp'].numpy()
    finally:
        models.rotate_images = orig
    # (0 and 180 deg are their own inverses.)
    bad = [np.linalg.norm(_peak_centre(q_bad[i]) - target)
           for i in range(1, NUM_ROTATIONS) if i != NUM_ROTATIONS // 2]
    assert min(bad) > 40


def test_prepare_inputs_recipe():
    color, depth, mask = scene(size=H)
    x = models.prepare_inputs(color, depth, mask)
    p = models.padded_size(H)
    assert p == 640 and x.shape == (1, 5, p, p)
    pad = (p - 2 * H) // 2
    r, c = 50, 60
    # 2x nearest zoom: heightmap pixel (r, c) -> padded pixels (pad + 2r .. +1, pad + 2c .. +1)
    for dr in (0, 1):
        for dc in (0, 1):
            pix = x[0, :, pad + 2 * r + dr, pad + 2 * c + dc]
            for ch in range(3):
                want = (color[r, c, ch] / 255 - models.IMAGENET_MEAN[ch]) / models.IMAGENET_STD[ch]
                assert abs(pix[ch].item() - want) < 1e-5
            assert abs(pix[3].item() - (depth[r, c] - 0.01) / 0.03) < 1e-5
            assert abs(pix[4].item() - mask[r, c] / 255) < 1e-6
    # Zero padding is normalised like the old code (pad first, then normalise).
    assert abs(x[0, 3, 0, 0].item() - (0 - 0.01) / 0.03) < 1e-6
    assert abs(x[0, 0, 0, 0].item() - (0 - 0.485) / 0.229) < 1e-5
    with pytest.raises(ValueError):
        bad = depth.copy()
        bad[0, 0] = np.nan
        models.prepare_inputs(color, bad, mask)


# ---------------------------------------------------------------------------------------------
# Snapshots and weights
# ---------------------------------------------------------------------------------------------
def test_snapshot_round_trip(tmp_path, inputs):
    a = models.build_model('goal_conditioned', 'tiny', seed=5).eval()
    b = models.build_model('goal_conditioned', 'tiny', seed=6).eval()
    x = inputs['goal_conditioned']
    path = tmp_path / 'snap.pth'
    models.save_snapshot(a, path)
    meta = models.load_snapshot(b, path, map_location='cpu')
    assert meta['architecture'] == 'goal_conditioned' and meta['backbone'] == 'tiny'
    with torch.no_grad():
        assert torch.equal(a(x, H, [2])['push'], b(x, H, [2])['push'])
    c = models.build_model_from_snapshot(path, 'cpu')
    assert isinstance(c, models.GoalConditionedNet) and c.backbone == 'tiny'


def test_snapshot_wrong_architecture_or_backbone(tmp_path):
    agnostic = models.build_model('goal_agnostic', 'tiny', seed=0)
    models.save_snapshot(agnostic, tmp_path / 'agnostic.pth')
    conditioned = models.build_model('goal_conditioned', 'tiny', seed=0)
    with pytest.raises(UserError) as err:
        models.load_snapshot(conditioned, tmp_path / 'agnostic.pth')
    msg = str(err.value)
    assert 'goal_agnostic' in msg and 'goal_conditioned' in msg and '\n' not in msg

    resnet = models.build_model('goal_conditioned', 'resnet18', pretrained='none', seed=0)
    models.save_snapshot(resnet, tmp_path / 'resnet.pth')
    with pytest.raises(UserError) as err:
        models.load_snapshot(conditioned, tmp_path / 'resnet.pth')
    assert 'resnet18' in str(err.value) and 'tiny' in str(err.value)

    # Bare state_dicts: checked by keys, in both directions.
    torch.save(resnet.state_dict(), tmp_path / 'bare_resnet.pth')
    with pytest.raises(UserError) as err:
        models.load_snapshot(conditioned, tmp_path / 'bare_resnet.pth')
    assert 'resnet18' in str(err.value) and 'tiny' in str(err.value)

    with pytest.raises(UserError):
        models.load_snapshot(conditioned, tmp_path / 'missing.pth')


def test_bare_state_dict_and_old_code_keys(tmp_path, inputs):
    a = models.build_model('goal_conditioned', 'tiny', seed=7).eval()
    state = dict(a.state_dict())
    # The old code's trunks were whole torchvision models: extra classifier weights.
    state['push_color_trunk.classifier.weight'] = torch.zeros(1000, 64)
    torch.save(state, tmp_path / 'bare.pth')
    b = models.build_model('goal_conditioned', 'tiny', seed=8).eval()
    models.load_snapshot(b, tmp_path / 'bare.pth')
    x = inputs['goal_conditioned']
    with torch.no_grad():
        assert torch.equal(a(x, H, [1])['grasp'], b(x, H, [1])['grasp'])

    state = dict(a.state_dict())
    state['pushnet.push-conv0.weight'] = torch.zeros(32, 192, 1, 1)
    torch.save(state, tmp_path / 'bad_shape.pth')
    with pytest.raises(UserError, match='other shapes'):
        models.load_snapshot(b, tmp_path / 'bad_shape.pth')


def test_imagenet_weights_never_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    monkeypatch.setattr(models, '_NOTICE_PRINTED', False)
    net = models.build_model('goal_agnostic', 'resnet18', pretrained='auto', seed=0)
    models.build_model('goal_agnostic', 'resnet18', pretrained='auto', seed=0)
    out = capsys.readouterr().out
    assert net.imagenet_weights is None
    assert out.count('notice:') == 1 and len(out.strip().splitlines()) == 1

    # A local torchvision checkpoint (here: random weights standing in for ImageNet ones).
    ref = __import__('torchvision').models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / 'resnet18.pth')
    net = models.build_model('goal_agnostic', 'resnet18', pretrained=str(tmp_path / 'resnet18.pth'))
    assert torch.equal(net.grasp_depth_trunk.features.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert torch.equal(net.push_color_trunk.features.bn1.running_var, ref.bn1.running_var)
    # ... and the same file found in the torchvision cache under its usual name.
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    (tmp_path / 'resnet18.pth').rename(tmp_path / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth')
    net = models.build_model('goal_agnostic', 'resnet18', pretrained='auto')
    assert net.imagenet_weights is not None
    assert torch.equal(net.push_depth_trunk.features.conv1.weight, ref.conv1.weight)

    with pytest.raises(UserError):
        models.build_model('goal_agnostic', 'resnet18', pretrained=str(tmp_path / 'nope.pth'))


def test_structure_and_init():
    net = models.build_model('goal_conditioned', 'tiny', seed=0)
    assert net.pushnet[2].in_channels == 3 * 64 and net.pushnet[5].out_channels == 1
    assert torch.equal(net.graspnet[0].weight, torch.ones(192))
    assert torch.equal(net.graspnet[3].bias, torch.zeros(64))
    assert net.mask_trunk in net.grasp_modules() and net.mask_trunk not in net.push_modules()
    agn = models.build_model('goal_agnostic', 'tiny', seed=0)
    assert not hasattr(agn, 'mask_trunk') and agn.pushnet[2].in_channels == 128
    # Same seed, same weights; the global torch RNG is left alone.
    state = torch.random.get_rng_state()
    again = models.build_model('goal_conditioned', 'tiny', seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(again.pushnet[2].weight, net.pushnet[2].weight)
    with pytest.raises(UserError):
        models.build_model('goal_conditioned', 'vgg')


def test_tiny16_has_stride_16_cells_and_its_q_maps_start_at_zero(tmp_path):
    color, depth, mask = scene()
    net = models.build_model('goal_conditioned', 'tiny16', seed=1)
    assert net.upsample_factor == 8 and models.build_model('goal_agnostic', 'tiny', seed=1).upsample_factor == 16
    x = models.prepare_inputs(color, depth, mask)
    with torch.no_grad():
        out = net.eval()(x, H, [0, 5], heads=('grasp', 'push'))
    assert out['grasp'].shape == (2, H, H) and out['push'].shape == (2, H, H)
    # tiny16 starts every Q at 0 (the last head conv is zero), so untrained noise does
    # not decide the masked argmax.
    assert float(out['grasp'].abs().max()) == 0.0 and float(out['push'].abs().max()) == 0.0
    # The receptive fields differ: one cell of the 16-stride map moves when the input moves by
    # 16 zoomed pixels, not 32.
    feat = net.grasp_depth_trunk(torch.zeros(1, 3, 640, 640))
    assert feat.shape[-1] == 640 // 16
    path = tmp_path / 'tiny16.pth'
    models.save_snapshot(net, path)
    again = models.build_model_from_snapshot(path, 'cpu')
    assert again.backbone == 'tiny16' and again.upsample_factor == 8


def _receptive_field_px(trunk: torch.nn.Module, size: int = 640) -> int:
    """Width in input px of the region whose pixels change the centre output cell (by gradient)."""
    trunk = trunk.eval()
    for m in trunk.modules():  # constant weights: no zero-crossing ReLU hides a dependence
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.constant_(m.weight, 0.01)
    x = torch.zeros(1, 3, size, size, requires_grad=True)
    out = trunk(x + 1.0)
    c = out.shape[-1] // 2
    out[0, :, c, c].sum().backward()
    cols = torch.nonzero(x.grad[0].abs().sum(dim=(0, 1)) > 0).flatten()
    return int(cols.max() - cols.min() + 1)


def test_tiny16ctx_sees_a_whole_push_length_and_keeps_tiny16s_cells(tmp_path):
    # A push moves 0.1 m (SPEC 3) = 100 input px (1 mm each on the 2x-zoomed input): its Q at the
    # start cell must see 100 px ahead, i.e. a field of more than 200 px centred on the cell.
    narrow = _receptive_field_px(models.build_trunk('tiny16'))
    wide = _receptive_field_px(models.build_trunk('tiny16ctx'))
    assert narrow < 100 < 200 < wide
    net = models.build_model('goal_conditioned', 'tiny16ctx', seed=1)
    assert net.upsample_factor == 8
    color, depth, mask = scene()
    with torch.no_grad():
        out = net.eval()(models.prepare_inputs(color, depth, mask), H, [0, 5], heads=('grasp', 'push'))
    assert out['push'].shape == (2, H, H) and float(out['push'].abs().max()) == 0.0
    path = tmp_path / 'ctx.pth'
    models.save_snapshot(net, path)
    again = models.build_model_from_snapshot(path, 'cpu')
    assert again.backbone == 'tiny16ctx' and again.upsample_factor == 8
