"""What a training iteration computes (issue 8): rotation chunks leave the Q maps alone, at most two
full 16-rotation forwards run per iteration, and a frozen, unused push net's trunks never run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import forward_modes
import main
import trainer as T
from utils import NUM_ROTATIONS


def _scene(size: int = 224):
    rng = np.random.default_rng(0)
    color = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    depth = np.zeros((size, size), np.float32)
    depth[60:100, 80:120] = 0.05
    mask = np.zeros((size, size), np.uint8)
    mask[60:100, 80:120] = 255
    return color, depth, mask


def test_rotation_chunks_give_the_same_q_maps():
    color, depth, mask = _scene()
    maps = {}
    for chunk in (16, 5, 4, 1):
        trainer = T.Trainer(T.TrainerConfig(stage='push_grasp', backbone='tiny', device='cpu',
                                            pretrained_weights='none', seed=0, rotation_chunk=chunk))
        with torch.no_grad():  # a random last conv: the tiny heads start at 0 everywhere
            torch.manual_seed(1)
            for head in (trainer.model.pushnet, trainer.model.graspnet):
                torch.nn.init.normal_(head[-1].weight)
        assert trainer.rotation_chunk == chunk
        maps[chunk] = trainer.forward(color, depth, mask)
    assert maps[16][0].shape == (NUM_ROTATIONS, 224, 224) and np.abs(maps[16][1]).max() > 0
    for chunk in (5, 4, 1):
        for ours, reference in zip(maps[chunk], maps[16]):
            np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
            assert (ours.reshape(16, -1).argmax(1) == reference.reshape(16, -1).argmax(1)).all()


def test_rotation_chunk_defaults_per_device():
    assert forward_modes.resolve_rotation_chunk(0, 'cpu') == forward_modes.DEFAULT_ROTATION_CHUNK['cpu']
    assert forward_modes.resolve_rotation_chunk(0, 'cuda') == forward_modes.DEFAULT_ROTATION_CHUNK['cuda']
    assert forward_modes.resolve_rotation_chunk(16, 'cpu') == 16
    with pytest.raises(T.UserError):
        T.TrainerConfig(rotation_chunk=-1).validate()


@pytest.fixture
def trunk_calls(monkeypatch):
    """Rotations each trunk computed, with and without gradients, in every Trainer built."""
    calls = {}
    original = T.Trainer.__init__

    def counting_init(self, config):
        original(self, config)
        for name in ('push_color_trunk', 'grasp_color_trunk'):
            def hook(module, inputs, output, name=name):
                key = (name, 'train' if torch.is_grad_enabled() else 'inference')
                calls[key] = calls.get(key, 0) + inputs[0].shape[0]
            getattr(self.model, name).register_forward_hook(hook)

    monkeypatch.setattr(T.Trainer, '__init__', counting_init)
    return calls


FAST = ["--backbone", "tiny", "--cpu", "--random_seed", "3", "--grasp_goal_conditioned", "--goal_conditioned"]


def _run(tmp_path: Path, *argv: str) -> int:
    assert main.main([*argv, "--logs_dir", str(tmp_path / "logs")]) == 0
    (session,) = (tmp_path / "logs").iterdir()
    return len((session / "transitions" / "executed-action.log.txt").read_text().splitlines())


def test_push_grasp_iteration_runs_one_full_forward(tmp_path, trunk_calls):
    """The old code ran three 16-rotation forwards per iteration (choose, label, replay priority)."""
    iterations = _run(tmp_path, "--stage", "push_grasp", "--num_obj", "4", "--goal_obj_idx", "1",
                      "--experience_replay", "--max_iterations", "4", *FAST)
    # One forward per observation: each iteration's, plus at most one per scene start and the last.
    inference = trunk_calls[('grasp_color_trunk', 'inference')]
    assert inference % NUM_ROTATIONS == 0
    assert inference <= 2 * NUM_ROTATIONS * iterations
    assert trunk_calls[('push_color_trunk', 'inference')] == inference
    # Training: 1 (push) or 2 (grasp) rotations per backprop, the same per replay step.
    trained = trunk_calls.get(('grasp_color_trunk', 'train'), 0) + trunk_calls.get(('push_color_trunk', 'train'), 0)
    assert trained <= 2 * 2 * iterations


def test_grasp_only_never_runs_the_push_trunks(tmp_path, trunk_calls):
    _run(tmp_path, "--stage", "grasp_only", "--num_obj", "3", "--goal_obj_idx", "1", "--experience_replay",
         "--max_iterations", "3", *FAST)
    assert trunk_calls[('grasp_color_trunk', 'inference')] > 0
    assert ('push_color_trunk', 'inference') not in trunk_calls and ('push_color_trunk', 'train') not in trunk_calls


@pytest.mark.parametrize("backbone", ["densenet121", "resnet18"])
def test_fast_inference_kernels_give_the_same_numbers(backbone):
    import copy

    import models

    torch.manual_seed(0)
    trunk = models.build_trunk(backbone)
    models.convert_batchnorms(trunk)
    trunk.eval()
    fast = forward_modes.use_fast_inference_kernels(copy.deepcopy(trunk))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(fast(x), trunk(x))
        assert torch.equal(fast(x[:1]), trunk(x[:1]))
    # With gradients: torchvision's own path, and the gradients flow.
    y = fast(x.requires_grad_())
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
