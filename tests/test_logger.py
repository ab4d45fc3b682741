"""Tests of logger.py on real files in temporary directories."""
from __future__ import annotations

import datetime as _dt
import json
import re
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logger as logger_mod  # noqa: E402
from logger import Logger  # noqa: E402
from utils import UserError  # noqa: E402

SUBDIRS = ['info', 'data/color-images', 'data/depth-images', 'data/color-heightmaps',
           'data/depth-heightmaps', 'models', 'visualizations', 'transitions']


def new_logger(tmp_path: Path) -> Logger:
    return Logger(base_directory=tmp_path / 'logs', verbose=False)


def test_new_session_layout(tmp_path):
    lg = new_logger(tmp_path)
    d = lg.base_directory
    assert d.parent == tmp_path / 'logs'
    assert re.fullmatch(r'\d{4}-\d{2}-\d{2}\.\d{2}:\d{2}:\d{2}', d.name)
    for sub in SUBDIRS:
        assert (d / sub).is_dir(), sub
    assert logger_mod.is_session_directory(d)


def test_unique_session_dirs_in_same_second(tmp_path, monkeypatch):
    fixed = _dt.datetime(2021, 3, 9, 12, 0, 0)

    class FrozenDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    # Every logger below sees the same second, as two runs started together would.
    monkeypatch.setattr(logger_mod, 'datetime', types.SimpleNamespace(datetime=FrozenDatetime))
    dirs = [new_logger(tmp_path).base_directory for _ in range(3)]
    assert len(set(dirs)) == 3
    assert [p.name for p in dirs] == ['2021-03-09.12:00:00', '2021-03-09.12:00:00-1',
                                      '2021-03-09.12:00:00-2']


def test_explicit_new_session_dir_refuses_existing_session(tmp_path):
    lg = Logger(logging_directory=tmp_path / 'mine', verbose=False)
    assert lg.base_directory == tmp_path / 'mine'
    with pytest.raises(UserError, match='continue_logging'):
        Logger(logging_directory=tmp_path / 'mine', verbose=False)


def test_continue_logging_errors(tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        Logger(continue_logging=True, logging_directory=tmp_path / 'nope', verbose=False)
    (tmp_path / 'plain').mkdir()
    with pytest.raises(UserError, match='not a session directory'):
        Logger(continue_logging=True, logging_directory=tmp_path / 'plain', verbose=False)
    with pytest.raises(UserError):
        Logger(continue_logging=True, logging_directory=None, verbose=False)


def test_info_files_load_with_loadtxt(tmp_path):
    lg = new_logger(tmp_path)
    limits = np.array([[-0.724, -0.276], [-0.224, 0.224], [-0.0001, 0.4]])
    intr = np.array([[618.62, 0, 320], [0, 618.62, 240], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [-0.5, 0.1, 0.7]
    lg.save_heightmap_info(limits, 0.002)
    lg.save_camera_info(intr, pose, 1.0)
    info = lg.info_directory
    np.testing.assert_array_equal(np.loadtxt(info / 'heightmap-boundaries.txt'), limits)
    assert float(np.loadtxt(info / 'heightmap-resolution.txt')) == 0.002
    np.testing.assert_array_equal(np.loadtxt(info / 'camera-intrinsics.txt'), intr)
    np.testing.assert_array_equal(np.loadtxt(info / 'camera-pose.txt'), pose)
    assert float(np.loadtxt(info / 'camera-depth-scale.txt')) == 1.0
    loaded = lg.load_info()
    np.testing.assert_array_equal(loaded['workspace_limits_m'], limits)
    assert loaded['heightmap_resolution_m'] == 0.002

    lg.save_config({'stage': 'grasp_only', 'num_obj': 5, 'snapshot_file': Path('/x/y.pth')})
    assert json.loads((info / 'config.json').read_text()) == {
        'stage': 'grasp_only', 'num_obj': 5, 'snapshot_file': '/x/y.pth'}
    # A resumed run keeps the first config and adds its own.
    lg2 = Logger(continue_logging=True, logging_directory=lg.base_directory, verbose=False)
    p = lg2.save_config({'stage': 'push_only'})
    assert p.name.startswith('config-resume-')
    assert json.loads((info / 'config.json').read_text())['stage'] == 'grasp_only'
    assert not list(info.glob('.*.tmp'))  # no temporary files left behind


def test_color_png_round_trip_exact_and_rgb_order(tmp_path):
    lg = new_logger(tmp_path)
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    color[0, 0] = [255, 0, 0]  # pure red in RGB
    depth = rng.uniform(0.3, 1.5, size=(480, 640))
    lg.save_images(7, color, depth, '0')
    path = lg.color_images_directory / '000007.0.color.png'
    assert path.exists()
    # Any normal PNG viewer must see red: cv2 reads BGR, so red is the last channel there.
    assert cv2.imread(str(path))[0, 0].tolist() == [0, 0, 255]
    c2, _ = lg.load_images(7, '0')
    assert c2.dtype == np.uint8
    np.testing.assert_array_equal(c2, color)

    hm = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    lg.save_heightmaps(7, hm, np.zeros((224, 224)), '1')
    c3, _ = lg.load_heightmaps(7, '1')
    np.testing.assert_array_equal(c3, hm)

    with pytest.raises(TypeError):
        lg.save_visualization(1, 'bad', color.astype(np.float32))


def test_depth_image_round_trip_1e4(tmp_path):
    lg = new_logger(tmp_path)
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.0, 3.0, size=(48, 64))
    depth[0, 0] = np.nan
    depth[0, 1] = -0.2     # below zero: no valid depth
    depth[0, 2] = 10.0     # beyond the uint16 range in 1e-4 m (6.5535 m): clipped
    depth[0, 3] = 0.12345  # 1234.5 units
    lg.save_images(3, np.zeros((48, 64, 3), np.uint8), depth, '0')
    raw = cv2.imread(str(lg.depth_images_directory / '000003.0.depth.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert raw[0, 0] == 0 and raw[0, 1] == 0 and raw[0, 2] == 65535
    assert raw[0, 3] in (1234, 1235)
    _, d2 = lg.load_images(3, '0')
    assert d2.shape == depth.shape
    ok = np.ones(depth.shape, bool)
    ok[0, :3] = False
    assert np.max(np.abs(d2[ok] - depth[ok])) <= 0.5e-4 + 1e-7
    assert d2[0, 0] == 0 and d2[0, 1] == 0 and d2[0, 2] == pytest.approx(6.5535, abs=1e-6)


def test_depth_heightmap_round_trip_1e5(tmp_path):
    lg = new_logger(tmp_path)
    rng = np.random.default_rng(2)
    hm = rng.uniform(0.0, 0.3, size=(224, 224))
    hm[10:20, 10:20] = np.nan  # empty cells of the raw heightmap
    hm[0, 0] = 0.05
    lg.save_heightmaps(12, np.zeros((224, 224, 3), np.uint8), hm, '0')
    raw = cv2.imread(str(lg.depth_heightmaps_directory / '000012.0.depth.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[0, 0] == 5000  # 0.05 m in 1e-5 m units
    _, h2 = lg.load_heightmaps(12, '0')
    valid = np.isfinite(hm)
    assert np.max(np.abs(h2[valid] - hm[valid])) <= 0.5e-5 + 1e-7
    assert np.all(h2[~valid] == 0)


def test_append_only_across_resume(tmp_path):
    lg = new_logger(tmp_path)
    assert lg.read('executed-action').shape == (0, 4)
    assert lg.read('some-new-log').shape == (0,)
    assert lg.iteration == 0
    for i in range(3):
        lg.append('executed-action', [i % 2, 5, 100 + i, 50 + i])
        lg.append('predicted-value', 0.1 * i)
        lg.append('is-exploit', True)
    lg.append('clearance', 3)
    path = lg.log_path('executed-action')
    before = path.read_bytes()

    lg2 = Logger(continue_logging=True, logging_directory=lg.base_directory, verbose=False)
    assert lg2.iteration == 3
    assert lg2.trial_ends() == [3]
    for i in range(3, 5):
        lg2.append('executed-action', np.array([1, 2, 3 + i, 4]))
        lg2.append('predicted-value', 0.1 * i)
    ea = lg2.read('executed-action')
    assert ea.shape == (5, 4)
    np.testing.assert_array_equal(ea[:, 2], [100, 101, 102, 6, 7])  # in order, no duplicates
    assert path.read_bytes().startswith(before)  # the old bytes were never rewritten
    pv = lg2.read('predicted-value')
    assert pv.shape == (5, 1)
    np.testing.assert_array_equal(pv[:, 0], [0.1 * i for i in range(5)])  # full precision
    assert lg2.read('is-exploit')[:, 0].tolist() == [1, 1, 1]
    assert path.read_text().splitlines()[0] == '0 5 100 50'  # integers stay integers

    # Resume bookkeeping: is-exploit lags by two rows; pad_to only ever appends.
    state = lg2.resume_state()
    assert state['iteration'] == 5 and state['trial_ends'] == [3]
    assert state['mismatched'] == ['is-exploit']
    assert lg2.pad_to('is-exploit', 5) == 2
    ie = lg2.read('is-exploit')[:, 0]
    assert ie[:3].tolist() == [1, 1, 1] and np.all(np.isnan(ie[3:]))
    assert lg2.resume_state()['mismatched'] == []

    with pytest.raises(ValueError):
        lg2.append('executed-action', [1, 2, 3])  # wrong column count: a caller bug
    with pytest.raises(TypeError):
        lg2.append('predicted-value', 'abc')


def test_torn_last_line_is_dropped_not_misread(tmp_path):
    lg = new_logger(tmp_path)
    lg.append('reward-value', 1.5)
    lg.append('reward-value', 0)
    with open(lg.log_path('reward-value'), 'a') as f:
        f.write('0.2')  # a crash in the middle of a write: no newline
    lg2 = Logger(continue_logging=True, logging_directory=lg.base_directory, verbose=False)
    assert lg2.read('reward-value')[:, 0].tolist() == [1.5, 0]
    with pytest.warns(UserWarning, match='incomplete'):
        assert lg2.num_rows('reward-value') == 2
    lg2.append('reward-value', -0.5)
    assert lg2.read('reward-value')[:, 0].tolist() == [1.5, 0, -0.5]


def test_snapshot_paths_and_atomic_save(tmp_path):
    lg = new_logger(tmp_path)
    assert lg.snapshot_path(50, 'grasp_only') == lg.models_directory / 'snapshot-000050.grasp_only.pth'
    assert lg.backup_snapshot_path('push_only') == lg.models_directory / 'snapshot-backup.push_only.pth'

    def save(path: str) -> None:
        Path(path).write_bytes(b'weights')

    p = lg.save_snapshot(50, 'grasp_only', save)
    assert p.read_bytes() == b'weights'
    lg.save_snapshot(100, 'grasp_only', save)
    lg.save_snapshot(None, 'grasp_only', save)
    assert lg.backup_snapshot_path('grasp_only').exists()
    assert lg.latest_snapshot('grasp_only') == (100, lg.snapshot_path(100, 'grasp_only'))
    assert lg.latest_snapshot('push_only') is None

    def broken(path: str) -> None:
        Path(path).write_bytes(b'half')
        raise RuntimeError('disk full')

    with pytest.raises(RuntimeError):
        lg.save_snapshot(150, 'grasp_only', broken)
    assert not lg.snapshot_path(150, 'grasp_only').exists()
    assert sorted(x.name for x in lg.models_directory.iterdir()) == [
        'snapshot-000050.grasp_only.pth', 'snapshot-000100.grasp_only.pth',
        'snapshot-backup.grasp_only.pth']
    with pytest.raises(ValueError):
        lg.snapshot_path(1, '../escape')


def test_visualization_and_tensorboard(tmp_path):
    lg = new_logger(tmp_path)
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 1] = 200
    p = lg.save_visualization(4, 'push', img)
    assert p == lg.visualizations_directory / '000004.push.png'
    np.testing.assert_array_equal(logger_mod.read_color_png(p), img)

    assert not lg.tensorboard_directory.exists()  # created lazily
    lg.scalar('train/loss', 0.25, 1)
    lg.scalar('grasp/success_rate', 0.5, 1)
    lg.close()
    events = list(lg.tensorboard_directory.glob('events.out.tfevents.*'))
    assert events and events[0].stat().st_size > 0
