"""mmkd as a user installs it: a built wheel, installed non-editable into a throwaway environment
that reuses the already-installed stack, used from outside the source tree.

The wheel must carry the configs (``mmkd/.mim/configs``), the user tools and the synthetic teacher;
``mmkd::`` must resolve (in ``_base_``, in ``teacher=`` specs, and with close matches when a name is
wrong), and a DistillDetector built from an ``mmkd::`` config must train a step on the built-in
data with the teacher checkpoint the wheel carries.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest

from conftest import REPO

#: what a wheel build reads from the checkout (setup.py, MANIFEST.in)
SOURCES = ('setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'requirements.txt', 'mmkd',
           'configs', 'tools', 'checkpoints')
TEACHER = 'checkpoints/synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.pth'


def _run(cmd, cwd, env=None, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed ({proc.returncode}):\n{proc.stdout[-6000:]}'
    return proc.stdout


def _copy_source(dst):
    """The files a wheel build reads, from this checkout (uncommitted edits included, as a
    ``pip wheel .`` of the checkout would), without caches or build outputs."""
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim', '*.egg-info', 'patches')
    for name in SOURCES:
        src = osp.join(REPO, name)
        if osp.isdir(src):
            if name == 'checkpoints':  # only what the wheel carries, not downloaded COCO weights
                os.makedirs(osp.join(dst, name, 'synthetic'))
                shutil.copy(osp.join(src, 'README.md'), osp.join(dst, name))
                if osp.isfile(osp.join(REPO, TEACHER)):
                    shutil.copy(osp.join(REPO, TEACHER), osp.join(dst, TEACHER))
            else:
                shutil.copytree(src, osp.join(dst, name), ignore=ignore)
        else:
            shutil.copy(src, dst)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``(python, env)`` of a throwaway venv holding the mmkd wheel (non-editable); the rest of
    the stack (torch, mmcv, mmdet, ...) comes from the running environment through a ``.pth``."""
    tmp = tmp_path_factory.mktemp('install')
    src, dist, venv = tmp / 'src', tmp / 'dist', tmp / 'venv'
    src.mkdir()
    _copy_source(str(src))
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
          '--disable-pip-version-check', '-q', '-w', str(dist), str(src)], cwd=str(tmp))
    wheels = list(dist.glob('mmkd-*.whl'))
    assert len(wheels) == 1, wheels
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], cwd=str(tmp))
    python = str(venv / 'bin' / 'python')
    _run([sys.executable, '-m', 'pip', '--python', python, 'install', '--no-deps', '--no-index',
          '--disable-pip-version-check', '-q', str(wheels[0])], cwd=str(tmp))
    # reuse the installed stack: the running environment's site-packages, after the venv's own
    # (so the venv's non-editable mmkd wins over the checkout's editable one, whose finder .pth
    # is not processed from a path entry)
    purelib = _run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                   cwd=str(tmp)).strip()
    with open(osp.join(purelib, '_mmkd_test_stack.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'MMKD_FAULT')}
    env['OMP_NUM_THREADS'] = '1'
    return python, env, wheels[0], tmp


def test_wheel_carries_configs_tools_and_synthetic_teacher(installed):
    _, _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ('mmkd/.mim/configs/kd/faster_rcnn_r101_r50_pgm.py',
                 'mmkd/.mim/configs/_base_/distill_runtime.py',
                 'mmkd/.mim/configs/synthetic/kd_feat_kl_r34w32_r18w16_12e_synthetic.py',
                 'mmkd/.mim/tools/train.py', 'mmkd/.mim/tools/dist_train.sh',
                 'mmkd/.mim/checkpoints/README.md', 'mmkd/.mim/' + TEACHER,
                 'mmkd/tools/make_synthetic_data.py', 'mmkd/utils/torch_compat.py'):
        assert need in names, f'{need} missing from {wheel.name}'
    # the checkout's own setup/CI scripts and the tests stay out
    assert not [n for n in names if n.startswith('tests/') or 'setup_env.sh' in n]
    meta = next(n for n in names if n.endswith('.dist-info/METADATA'))
    requires = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith('Requires-Dist:') and 'extra ==' not in line]
    # ranges, never the pins of the tested stack
    assert any('torch>=2.0' in r for r in requires), requires
    assert any('mmcv' in r and '<2.2.0' in r for r in requires), requires
    assert not [r for r in requires if '==' in r or 'kornia' in r], requires


def test_wheel_install_resolves_mmkd_configs_and_trains_a_step(installed):
    """From a folder outside the checkout: ``mmkd::`` in ``_base_`` and in ``teacher=``, the
    error for a misspelt ``mmkd::`` name, and one training step of a DistillDetector on the
    built-in data with ``python -m mmkd.tools.train`` and the teacher checkpoint from the
    wheel."""
    python, env, _, tmp = installed
    work = tmp / 'user'
    work.mkdir()
    _run([python, '-m', 'mmkd.tools.make_synthetic_data', str(work / 'data'), '--num-train', '2',
          '--num-val', '1'], cwd=str(work), env=env)
    (work / 'my_kd.py').write_text(textwrap.dedent(f"""\
        _base_ = 'mmkd::synthetic/kd_feat_kl_r34w32_r18w16_12e_synthetic.py'
        model = dict(teacher='mmkd::synthetic/faster_rcnn_r34w32_fpn_36e_synthetic.py')
        train_dataloader = dict(batch_size=2, dataset=dict(data_root='{work}/data/'))
        train_cfg = dict(max_epochs=1, val_interval=100)
        val_cfg = None
        val_dataloader = None
        val_evaluator = None
        test_cfg = None
        test_dataloader = None
        test_evaluator = None
        """))
    (work / 'bad.py').write_text("_base_ = 'mmkd::synthetic/kd_feat_kl_r34w32_r18w16_12e.py'\n")
    script = textwrap.dedent(f"""\
        import os.path as osp, sys
        import mmkd
        from mmengine.config import Config
        from mmkd.utils.paths import REPO_ROOT
        venv = {str(tmp / 'venv')!r}
        assert mmkd.__file__.startswith(venv), mmkd.__file__
        assert REPO_ROOT == osp.join(osp.dirname(mmkd.__file__), '.mim'), REPO_ROOT
        try:
            Config.fromfile('bad.py')
            raise SystemExit('a misspelt mmkd:: config loaded')
        except FileNotFoundError as exc:
            msg = str(exc)
        assert 'mmkd::synthetic/kd_feat_kl_r34w32_r18w16_12e_synthetic.py' in msg, msg
        assert osp.join(REPO_ROOT, 'configs') in msg, msg
        cfg = Config.fromfile('my_kd.py')
        assert cfg.model.type == 'DistillDetector', cfg.model.type
        print('CONFIG OK', cfg.model.teacher_ckpt)
        """)
    out = _run([python, '-c', script], cwd=str(work), env=env)
    assert 'CONFIG OK checkpoints/synthetic/' in out, out[-3000:]
    # the user's command: mmkd's train tool from the wheel (tools/train.py in mmkd/.mim), one
    # iteration (2 images, batch 2, 1 epoch), teacher checkpoint from the wheel
    out = _run([python, '-m', 'mmkd.tools.train', 'my_kd.py', '--work-dir', 'work_dirs/my_kd'],
               cwd=str(work), env=env)
    assert (work / 'work_dirs/my_kd/epoch_1.pth').is_file(), out[-3000:]
    assert (work / 'work_dirs/my_kd/epoch_1_student.pth').is_file(), out[-3000:]
    # one training step with every loss computed (mmengine < 0.8 does not log an epoch's last
    # iteration when it is not a multiple of the log interval)
    assert 'loss balance over the last 1 iterations' in out, out[-3000:]
    assert osp.isfile(str(tmp / 'venv' / 'bin' / 'mmkd-train'))
    # nothing was written into the installed package
    mim = osp.join(str(tmp / 'venv'), 'lib')
    assert not [d for d, _, _ in os.walk(mim) if d.endswith(('work_dirs', 'data/synthetic'))]


def test_dist_launch_command(monkeypatch):
    """The torchrun command of ``python -m mmkd.tools.dist_train`` (the same rendezvous rules as
    tools/dist_launch.sh): one machine without PORT -> --standalone (torchrun binds a free port)."""
    from mmkd.tools.dist_launch import launch_command
    cmd = launch_command('train', 2, ['cfg.py', '--amp'], env={})
    assert cmd[1:] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m',
                       'mmkd.tools.train', 'cfg.py', '--amp', '--launcher', 'pytorch']
    multi = launch_command('test', 8, ['cfg.py', 'ckpt.pth'], env=dict(
        NNODES='2', NODE_RANK='1', MASTER_ADDR='10.1.2.3', PORT='29600'))
    assert multi[3:7] == ['--nnodes=2', '--node_rank=1', '--master_addr=10.1.2.3',
                          '--master_port=29600']
    assert multi[-4:] == ['cfg.py', 'ckpt.pth', '--launcher', 'pytorch']
    with pytest.raises(ValueError, match='choose from train, test'):
        launch_command('export', 1, [])
