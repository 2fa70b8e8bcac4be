"""Checkpoint safety: weights_only loading allowed exactly, clear errors for every broken file on
every load path, hints read from the actual mismatch, strict resume, atomic writes."""
import io
import os
import os.path as osp
import signal
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from torch import nn

import mmkd  # noqa: F401  installs the allow-list
from conftest import KD_CFG, REPO
from mmkd.utils import resolve_path
from mmkd.utils.checkpoint import (CheckpointError, CheckpointMismatchError,
                                   CheckpointNotFoundError, CorruptCheckpointError,
                                   check_resume_checkpoint, export_student_checkpoint,
                                   load_checkpoint_file, load_strict, publish_checkpoint,
                                   save_atomic)
from mmkd.utils.torch_compat import safe_torch_load


def _roundtrip(obj):
    """Save, then load through mmkd's safe loader (torch's ``weights_only`` with mmkd's
    allow-list on torch >= 2.4, mmkd's restricted unpickler before)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return safe_torch_load(buf)


def test_message_hub_state_loads_with_weights_only():
    hub = MessageHub.get_instance('mmkd-test-ckpt')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(2.5))
    hub.update_info('best', np.float32(0.3))
    state = _roundtrip(dict(message_hub=hub.state_dict(),
                            meta=dict(seed=np.int64(3), arr=np.arange(3))))
    buf = state['message_hub']['log_scalars']['train/loss']
    assert buf.mean() == pytest.approx(2.0)
    assert buf.statistics('max') == 2.5  # statistics methods restored
    assert state['meta']['arr'].tolist() == [0, 1, 2]


class _GetattrPayload:
    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


class _EvalPayload:
    def __reduce__(self):
        return (eval, ('1+1', ))


@pytest.mark.parametrize('payload', [_GetattrPayload(), _EvalPayload()])
def test_other_globals_stay_forbidden(payload):
    with pytest.raises(Exception) as err:
        _roundtrip({'x': payload})
    assert 'refusing getattr' in str(err.value) or 'Unsupported global' in str(err.value)


# ---- every load path names a bad file and never suggests unsafe loading ----------------------
UNSAFE_ADVICE = ('weights_only=False', 'weights_only` set to `False', 'add_safe_globals',
                 'safe_globals')


def _bad_files(tmp_path, good_path):
    """name -> (path, words the error must use) for the kinds of broken file users meet."""
    good = open(good_path, 'rb').read()
    files = {
        'empty': (b'', 'empty'),
        'truncated': (good[:len(good) // 2], 'truncated or corrupt'),
        'random': (np.random.default_rng(0).bytes(4096), 'not a PyTorch checkpoint'),
        'text': (b'this is not a checkpoint\n', 'not a PyTorch checkpoint'),
    }
    out = {}
    for name, (data, words) in files.items():
        path = tmp_path / f'{name}.pth'
        path.write_bytes(data)
        out[name] = (str(path), words)
    evil = tmp_path / 'code.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': _EvalPayload()}, evil)
    out['code'] = (str(evil), 'refuses')
    return out


def _check_message(err, path, words):
    msg = str(err)
    assert path in msg, msg
    assert words in msg, msg
    assert not any(a in msg for a in UNSAFE_ADVICE), msg
    # no torch error (and its weights_only advice) chained below mmkd's; mmengine < 0.8's
    # registry re-raises a build error with the original (mmkd's own) error as its context
    link = err
    while True:
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
        if link is None:
            break
        assert isinstance(link, CheckpointError), f'torch text chained: {link!r}'


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory, teacher_ckpt):
    return _bad_files(tmp_path_factory.mktemp('bad'), teacher_ckpt)


@pytest.mark.parametrize('kind', ['empty', 'truncated', 'random', 'text', 'code'])
def test_unloadable_files_name_file_and_cause_on_every_load_path(kind, bad_files, tmp_path):
    from mmdet.registry import MODELS
    path, words = bad_files[kind]
    # the shared loader, load_strict (teacher, student_ckpt, tools/test.py, export --config)
    for call in (lambda: load_checkpoint_file(path, 'teacher'),
                 lambda: load_strict(nn.Linear(1, 1), path, 'test'),
                 lambda: export_student_checkpoint(path, str(tmp_path / 'o.pth')),
                 lambda: publish_checkpoint(path, str(tmp_path / 'p.pth')),
                 lambda: check_resume_checkpoint(nn.Linear(1, 1), path)):
        with pytest.raises(CorruptCheckpointError) as err:
            call()
        _check_message(err.value, path, words)
    assert not (tmp_path / 'o.pth').exists() and not (tmp_path / 'p.pth').exists()
    # the DistillDetector's teacher and student_ckpt (one kind: building is the slow part)
    cfg = Config.fromfile(osp.join(REPO, KD_CFG)).model
    for key in ('teacher_ckpt', 'student_ckpt') if kind == 'truncated' else ():
        with pytest.raises(CorruptCheckpointError) as err:
            MODELS.build(dict(cfg, **{key: path}))
        _check_message(err.value, path, words)
    # the benchmark's look at the shipped teacher
    from mmkd.benchmark.runs import shipped_teacher_status
    with pytest.raises(CorruptCheckpointError) as err:
        shipped_teacher_status(str(tmp_path), path)
    _check_message(err.value, path, words)


def test_missing_checkpoint_is_both_documented_errors(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(CheckpointNotFoundError) as err:
        load_strict(nn.Linear(1, 1), missing, 'teacher')
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, CheckpointError)
    assert missing in str(err.value) and 'checkpoints/README.md' in str(err.value)


def test_missing_file_lists_close_local_matches(tmp_path):
    (tmp_path / 'epoch_12.pth').write_bytes(b'x')
    (tmp_path / 'unrelated.txt').write_bytes(b'x')
    with pytest.raises(CheckpointNotFoundError, match=r'Close matches: .*epoch_12\.pth'):
        load_checkpoint_file(str(tmp_path / 'epoch_21.pth'))
    with pytest.raises(FileNotFoundError, match=r'Close matches: .*kd_feat_kl_r34w32_r18w16_12e'
                                                r'_synthetic\.py'):
        resolve_path('configs/synthetic/kd_feat_kl_r34w32_r18w16_12e_synthtic.py', 'config')


# ---- the likely cause is read from the actual mismatch ---------------------------------------
def _net(width=8, blocks=2, head=False):
    layers = OrderedDict(stem=nn.Conv2d(3, width, 3),
                         layer1=nn.Sequential(*[nn.Conv2d(width, width, 3)
                                                for _ in range(blocks)]))
    if head:
        layers['mask_head'] = nn.Conv2d(width, 1, 1)
    return nn.Sequential(layers)


def _mismatch(tmp_path, saved, model):
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': saved.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_strict(model, path, 'teacher')
    msg = str(err.value)
    assert path in msg
    return msg.split('Likely cause:')[1]


def test_likely_cause_width(tmp_path):
    cause = _mismatch(tmp_path, _net(width=16), _net(width=8))
    assert 'width' in cause and 'stem.weight' in cause and 'mask head' not in cause


def test_likely_cause_depth(tmp_path):
    cause = _mismatch(tmp_path, _net(blocks=3), _net(blocks=2))
    assert 'depth' in cause and 'layer1 has 3 blocks in the checkpoint and 2 in the config' \
        in cause
    cause = _mismatch(tmp_path, _net(blocks=2), _net(blocks=3))
    assert 'layer1 has 2 blocks in the checkpoint and 3 in the config' in cause


def test_likely_cause_missing_or_extra_head(tmp_path):
    cause = _mismatch(tmp_path, _net(), _net(head=True))
    assert 'lacks entirely (mask_head)' in cause
    cause = _mismatch(tmp_path, _net(head=True), _net())
    assert 'the checkpoint has modules the config lacks (mask_head)' in cause


# ---- resume: strict, up front --------------------------------------------------------------
class _Distill(nn.Module):
    """The key layout of a DistillDetector: ``student.*`` and ``distill_losses.*``."""

    def __init__(self, adapter_out=8, loss='loss_kd_fpn'):
        super().__init__()
        self.student = _net()
        self.distill_losses = nn.ModuleDict({loss: nn.Conv2d(8, adapter_out, 1)})


def _training_ckpt(model, path):
    torch.save(dict(meta=dict(epoch=1, iter=4), state_dict=model.state_dict(),
                    message_hub=dict(log_scalars={}, runtime_info={}, resumed_keys={}),
                    optimizer={}), path)
    return str(path)


def test_resume_checks_every_key_and_shape(tmp_path):
    model = _Distill()
    ok = _training_ckpt(_Distill(), tmp_path / 'ok.pth')
    assert 'message_hub' in check_resume_checkpoint(model, ok)
    other = _training_ckpt(_Distill(loss='loss_pkd'), tmp_path / 'other.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        check_resume_checkpoint(model, other)
    msg = str(err.value)
    assert other in msg and 'another distillation config' in msg
    assert "['loss_pkd']" in msg and "['loss_kd_fpn']" in msg
    wide = _training_ckpt(_Distill(adapter_out=16), tmp_path / 'wide.pth')
    with pytest.raises(CheckpointMismatchError, match='distill_losses.loss_kd_fpn.weight'):
        check_resume_checkpoint(model, wide)


def test_resume_refuses_a_student_twin_and_a_plain_weights_file(tmp_path):
    model = _Distill()
    full = _training_ckpt(model, tmp_path / 'epoch_1.pth')
    twin = export_student_checkpoint(full, str(tmp_path / 'epoch_1_student.pth'), twin=True)
    with pytest.raises(CheckpointMismatchError) as err:
        check_resume_checkpoint(model, twin)
    msg = str(err.value)
    assert 'student-only file' in msg and f'student_ckpt={twin}' in msg
    assert osp.realpath(full) in msg  # names the full checkpoint to resume from
    plain = tmp_path / 'weights.pth'
    torch.save({'state_dict': model.state_dict()}, plain)
    with pytest.raises(CheckpointMismatchError, match='not an mmengine training checkpoint'):
        check_resume_checkpoint(model, str(plain))


def test_corrupt_newest_checkpoint_names_the_previous_good_one(tmp_path):
    model = _Distill()
    for e in (1, 2, 3):
        _training_ckpt(model, tmp_path / f'epoch_{e}.pth')
    newest = tmp_path / 'epoch_3.pth'
    newest.write_bytes(newest.read_bytes()[:100])
    (tmp_path / 'epoch_2.pth').write_bytes(b'')  # the one before is broken as well
    with pytest.raises(CorruptCheckpointError) as err:
        check_resume_checkpoint(model, str(newest), work_dir=str(tmp_path))
    msg = str(err.value)
    assert str(newest) in msg and 'truncated' in msg
    assert f'--resume {tmp_path / "epoch_1.pth"}' in msg


# ---- atomic writes ---------------------------------------------------------------------------
def test_save_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    dst = tmp_path / 'x.pth'
    save_atomic({'a': torch.ones(3)}, str(dst))
    save_atomic({'a': torch.zeros(3)}, str(dst))
    assert torch.equal(safe_torch_load(dst)['a'], torch.zeros(3))
    assert os.listdir(tmp_path) == ['x.pth']
    assert oct(dst.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_killed_export_leaves_the_old_file_whole(tmp_path):
    """SIGKILL after the new file is written to its temporary name, before the rename."""
    model = _Distill()
    src = _training_ckpt(model, tmp_path / 'epoch_1.pth')
    dst = tmp_path / 'student.pth'
    dst.write_bytes(b'previous contents')
    code = ('import mmkd; from mmkd.utils.checkpoint import export_student_checkpoint; '
            f'export_student_checkpoint({src!r}, {str(dst)!r})')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO,
                                   MMKD_FAULT_AT='file_replace:1'))
    assert proc.returncode == -signal.SIGKILL
    assert dst.read_bytes() == b'previous contents'
    export_student_checkpoint(src, str(dst))  # the next write cleans the stale temporary up
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth', 'student.pth']
    assert safe_torch_load(dst)['state_dict'].keys() == \
        _net().state_dict().keys()


def test_export_refuses_to_overwrite_its_input(tmp_path):
    src = _training_ckpt(_Distill(), tmp_path / 'epoch_1.pth')
    before = open(src, 'rb').read()
    with pytest.raises(ValueError, match='is the input checkpoint itself'):
        export_student_checkpoint(src, src)
    link = tmp_path / 'same.pth'
    os.link(src, link)  # another name for the same file
    with pytest.raises(ValueError, match='is the input checkpoint itself'):
        export_student_checkpoint(src, str(link))
    assert open(src, 'rb').read() == before


def test_memory_mapped_load_reads_legacy_files_too(tmp_path):
    """mmap=True (metadata peeks: twins, benchmark, load_from) also reads pre-1.6 files."""
    legacy = tmp_path / 'legacy.pth'
    torch.save({'meta': {'epoch': 3}, 'state_dict': {'w': torch.ones(2)}}, legacy,
               _use_new_zipfile_serialization=False)
    ckpt = load_checkpoint_file(str(legacy), mmap=True)
    assert ckpt['meta'] == {'epoch': 3} and torch.equal(ckpt['state_dict']['w'], torch.ones(2))
