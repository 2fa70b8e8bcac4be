"""What differs across the supported stack: safe loading on torch without the allow-list (the
restricted unpickler mmkd uses before torch 2.4, exercised here on the running torch), mmengine's
own loads routed through it, ``mmkd::`` in mmengine configs, and the import-time checks of the
installed mmcv/mmdet."""
import io
import os.path as osp
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.runner.checkpoint import _load_checkpoint

import mmkd  # noqa: F401  (allow-list, mmengine loader, mmkd:: scope)
from mmkd.utils import torch_compat
from mmkd.utils.checkpoint import CorruptCheckpointError, load_checkpoint_file
from mmkd.utils.dependencies import (DependencyError, check_known_conflicts, check_mmcv_ops,
                                     check_versions)
from mmkd.utils.paths import REPO_ROOT


class _Evil:
    """Pickles as a call of ``os.system``-like code: must never run."""

    def __reduce__(self):
        return (print, ('PWNED: arbitrary code ran',))


def _training_checkpoint():
    hub = MessageHub.get_instance('mmkd_compat_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/lr', np.float32(0.01))
    return dict(meta=dict(epoch=np.int64(2), seed=np.array([1, 2])),
                message_hub=hub.state_dict(), state_dict={'w': torch.arange(4.0),
                                                          'mask': torch.ones(2, dtype=torch.bool)},
                device=torch.device('cpu'))


def _saved(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_restricted_unpickler_loads_mmengine_training_checkpoints():
    """torch < 2.4's path: the same types as torch >= 2.4's allow-list, HistoryBuffer included."""
    out = torch.load(_saved(_training_checkpoint()), pickle_module=torch_compat.restricted_pickle)
    assert out['message_hub']['log_scalars']['train/loss'].current() == 1.5
    assert out['meta']['epoch'] == 2 and out['meta']['seed'].tolist() == [1, 2]
    assert torch.equal(out['state_dict']['w'], torch.arange(4.0))
    assert out['state_dict']['mask'].dtype == torch.bool


@pytest.mark.parametrize('payload', [_Evil(), {'f': osp.join}, {'cls': subprocess.Popen}])
def test_restricted_unpickler_refuses_other_globals(payload, capsys):
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        torch.load(_saved({'x': payload}), pickle_module=torch_compat.restricted_pickle)
    assert 'PWNED' not in capsys.readouterr().out


def test_restricted_getattr_resolves_only_history_buffer_methods():
    """``builtins.getattr`` is the stand-in that resolves HistoryBuffer's statistics only."""
    from mmengine.logging.history_buffer import HistoryBuffer

    class GetattrCall:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        torch.load(_saved(GetattrCall()), pickle_module=torch_compat.restricted_pickle)


def test_old_torch_path_through_mmkd_and_mmengine_loaders(tmp_path, monkeypatch, capsys):
    """With torch < 2.4's behaviour forced, mmkd's loader and mmengine's local loader (load_from,
    resume, init_cfg Pretrained) both go through the restricted unpickler."""
    monkeypatch.setattr(torch_compat, 'HAS_SAFE_GLOBALS', False)
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get('pickle_module'))
        assert kwargs.get('weights_only') in (None, True)  # never turned off explicitly
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    good, evil = tmp_path / 'good.pth', tmp_path / 'evil.pth'
    torch.save(_training_checkpoint(), good)
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': _Evil()}, evil)
    assert load_checkpoint_file(str(good), 'resume')['meta']['epoch'] == 2
    assert _load_checkpoint(str(good), map_location='cpu')['meta']['epoch'] == 2
    assert calls and all(c is torch_compat.restricted_pickle for c in calls)
    with pytest.raises(CorruptCheckpointError, match='safe loading refuses'):
        load_checkpoint_file(str(evil), 'teacher')
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        _load_checkpoint(str(evil), map_location='cpu')
    assert 'PWNED' not in capsys.readouterr().out


def test_old_torch_path_refuses_torchscript(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_compat, 'HAS_SAFE_GLOBALS', False)
    path = tmp_path / 'scripted.pt'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(pickle.UnpicklingError, match='TorchScript'):
        torch_compat.safe_torch_load(str(path))


def test_mmkd_scope_in_base_and_close_matches(tmp_path):
    (tmp_path / 'ok.py').write_text("_base_ = 'mmkd::kd/faster_rcnn_r101_r50_pgm.py'\n")
    cfg = Config.fromfile(str(tmp_path / 'ok.py'))
    assert cfg.model.type == 'DistillDetector'
    # the inherited file behaves as a local _base_: no mmkd scope is injected
    assert cfg.model.get('_scope_') is None
    (tmp_path / 'bad.py').write_text("_base_ = 'mmkd::kd/faster_rcnn_r101_r50_pgn.py'\n")
    with pytest.raises(FileNotFoundError) as info:
        Config.fromfile(str(tmp_path / 'bad.py'))
    msg = str(info.value)
    assert osp.join(REPO_ROOT, 'configs') in msg and 'bad.py' in msg
    assert 'mmkd::kd/faster_rcnn_r101_r50_pgm.py' in msg


def test_version_errors_name_version_range_and_fix():
    with pytest.raises(DependencyError) as info:
        check_versions({'mmcv': '2.2.0', 'mmdet': '3.3.0', 'mmengine': '0.10.7', 'torch': '2.1.2'})
    msg = str(info.value)
    assert 'mmcv 2.2.0 is installed' in msg and '>= 2.0.0rc4, < 2.2.0' in msg
    assert 'mim install' in msg and msg.count(' is installed') == 1  # only mmcv is wrong
    with pytest.raises(DependencyError,
                       match=r'mmdet 2\.28\.2 is installed.*>= 3\.0\.0, < 3\.4\.0'):
        check_versions({'mmdet': '2.28.2'})
    with pytest.raises(DependencyError, match='mmengine is not installed'):
        check_versions({'mmengine': None})
    check_versions({'mmcv': '2.0.0rc4', 'mmdet': '3.0.0', 'mmengine': '0.7.1',
                    'torch': '2.0.0+cu118'})  # the oldest supported: no error


def test_old_mmengine_with_new_yapf_is_refused_with_the_fix():
    """mmengine < 0.8.5 passes verify=True to yapf, which yapf 0.40.2 removed (seen on the
    second stack: every training stopped in Config.pretty_text)."""
    with pytest.raises(DependencyError, match=r'mmengine 0\.7\.1 .*yapf 0\.40\.2.*'
                       r'pip install "yapf==0\.40\.1".*mmengine to >= 0\.8\.5'):
        check_known_conflicts({'mmengine': '0.7.1', 'yapf': '0.40.2'})
    check_known_conflicts({'mmengine': '0.7.1', 'yapf': '0.40.1'})
    check_known_conflicts({'mmengine': '0.8.5', 'yapf': '0.43.0'})
    check_known_conflicts({'mmengine': '0.10.7', 'yapf': None})


def test_mmcv_without_ops_error():
    def no_ext():
        raise ImportError('No module named mmcv._ext')

    with pytest.raises(DependencyError, match=r'without usable compiled ops.*mmcv\._ext.*MMCV'):
        check_mmcv_ops(no_ext)


def _import_mmkd_with(prelude: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(prelude) + '\nimport mmkd\n'
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, env={'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})


def test_import_mmkd_refuses_mmcv_without_compiled_ops():
    """A real ``import mmkd`` where mmcv's compiled extension cannot be imported (mmcv-lite, or
    a build without MMCV_WITH_OPS): a clear error before mmdet is imported."""
    proc = _import_mmkd_with("""
        import sys
        class NoExt:
            def find_spec(self, name, path=None, target=None):
                if name == 'mmcv._ext':
                    raise ImportError('mmcv._ext is missing (simulated mmcv-lite)')
        sys.meta_path.insert(0, NoExt())
        """)
    assert proc.returncode != 0
    assert 'DependencyError' in proc.stderr and 'without usable compiled ops' in proc.stderr
    assert 'MMCV_WITH_OPS=1' in proc.stderr


def test_import_mmkd_refuses_mmcv_out_of_range(tmp_path):
    """The installed metadata says mmcv 2.2.0 (outside mmdet 3.x's range)."""
    info = tmp_path / 'mmcv-2.2.0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: mmcv\nVersion: 2.2.0\n')
    proc = _import_mmkd_with(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        """)
    assert proc.returncode != 0
    assert 'mmcv 2.2.0 is installed' in proc.stderr
    assert '>= 2.0.0rc4, < 2.2.0' in proc.stderr and 'mim install' in proc.stderr
