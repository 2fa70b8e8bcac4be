"""Fault injection: trainings killed with SIGKILL (like a node failure) at exact points, then
resumed with ``--resume``. Each chain must end with the weights of an uninterrupted run, or stop
with a clear message, and never touch a file the user put in the work dir.

The kill points are deterministic: ``MMKD_FAULT_AT=POINT:N`` makes the process kill itself the
N-th time it reaches POINT (``mmkd/utils/faults.py``: the test-only ``FaultInjectionHook`` at hook
points and at the teacher backbone's forward, and one seam between a file's complete write and
its rename); nothing here waits for a timer. Tiny data (12 images of 96 px, 4 iterations per
epoch), 2 epochs.
"""
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import KD_CFG, REPO, data_options, run_tool, tool_env
from mmkd.utils.torch_compat import safe_torch_load

PGM_CFG = 'configs/synthetic/kd_pgm_r34w32_r18w16_12e_synthetic.py'
EPOCHS = 2


def train_args(config, work, data, teacher_ckpt, extra=()):
    return ['tools/train.py', config, '--work-dir', str(work), '--cfg-options',
            *data_options(data), f'model.teacher_ckpt={teacher_ckpt}',
            f'train_cfg.max_epochs={EPOCHS}', 'train_cfg.val_interval=1',
            'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1', *extra]


def killed(args, point):
    """Run ``args`` until the seam kills it at ``point`` (``NAME:N``); returns its output."""
    proc = subprocess.run([sys.executable] + args, cwd=REPO, capture_output=True, text=True,
                          env=tool_env({'MMKD_FAULT_AT': point}), timeout=600)
    assert proc.returncode == -signal.SIGKILL, (
        f'{point}: expected SIGKILL, got exit {proc.returncode}\n{proc.stdout[-3000:]}\n'
        f'{proc.stderr[-3000:]}')
    return proc.stdout + proc.stderr


def weights(path):
    return safe_torch_load(path)['state_dict']


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f'{len(differ)} tensors differ from the uninterrupted run: {differ[:5]}'


class Sentinels:
    """Files a user put in the work dir: an exported student, notes, and a twin of another run
    named like one of this run's (its full checkpoint does not exist)."""

    def __init__(self, work, student_file):
        work.mkdir(parents=True, exist_ok=True)
        self.files = [work / 'baseline_student.pth', work / 'notes.txt',
                      work / 'epoch_1_student.pth']
        shutil.copyfile(student_file, self.files[0])
        self.files[1].write_text('results of last week, do not lose\n')
        shutil.copyfile(student_file, self.files[2])
        self.before = self.snapshot()

    def snapshot(self):
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in self.files}

    def check(self, when):
        assert self.snapshot() == self.before, f'a user file changed ({when})'


def no_partial_files(work):
    leftovers = [n for n in os.listdir(work) if n.endswith('.mmkd-tmp')]
    assert not leftovers, leftovers


@pytest.fixture(scope='module')
def reference(tmp_path_factory, synthetic_data, teacher_ckpt):
    """The uninterrupted run of the distillation config."""
    work = tmp_path_factory.mktemp('reference')
    run_tool(train_args(KD_CFG, work, synthetic_data, teacher_ckpt))
    return work


def test_killed_during_eval_mid_iteration_and_checkpoint_save_resumes_exactly(
        reference, tmp_path, synthetic_data, teacher_ckpt):
    work = tmp_path / 'chain'
    users = Sentinels(work, reference / 'epoch_2_student.pth')
    args = train_args(KD_CFG, work, synthetic_data, teacher_ckpt)

    # 1. during the evaluation after epoch 1 (epoch_1.pth is already saved)
    log = killed(args, 'val_iter:1')
    assert 'Epoch(val) [1][1/2]' in log and 'Epoch(val) [1][2/2]' not in log
    assert (work / 'epoch_1.pth').is_file() and not (work / 'epoch_2.pth').exists()
    users.check('killed during evaluation')

    # 2. resumed, then killed in the middle of the second iteration of epoch 2 (after the
    #    student's forward, at the teacher's)
    log = killed(args + ['--resume'], 'teacher_forward:2')
    assert 'resume checkpoint' in log and 'Epoch(train) [2][1/4]' in log
    assert 'Epoch(train) [2][2/4]' not in log
    users.check('killed mid-iteration')

    # 3. resumed, then killed while epoch_2.pth is written (complete under its temporary name,
    #    not yet renamed): no epoch_2.pth at all, never a truncated one
    log = killed(args + ['--resume'], 'file_replace:1')
    assert 'Epoch(train) [2][4/4]' in log
    assert not (work / 'epoch_2.pth').exists()
    (left, ) = [n for n in os.listdir(work) if n.endswith('.mmkd-tmp')]
    assert left.startswith('.epoch_2.pth.') and (work / left).stat().st_size > 0
    assert open(work / 'last_checkpoint').read().strip().endswith('epoch_1.pth')
    users.check('killed while saving')

    # 4. resumed to the end: the weights of the uninterrupted run, bit for bit
    proc = run_tool(args + ['--resume'])
    assert 'Epoch(train) [1]' not in proc.stdout  # it resumed from epoch 1's checkpoint
    assert_same_weights(reference / 'epoch_2.pth', work / 'epoch_2.pth')
    assert_same_weights(reference / 'epoch_2_student.pth', work / 'epoch_2_student.pth')
    users.check('after the resumed run')
    # mmengine >= 0.8 records last_ckpt before saving, so the resumed run knows epoch_1.pth and
    # its twin hook meets the user's epoch_1_student.pth (older mmengine: it never looks at it)
    resumed_info = safe_torch_load(work / 'epoch_1.pth')['message_hub']['runtime_info']
    if str(resumed_info.get('last_ckpt', '')).endswith('epoch_1.pth'):
        assert f'{work / "epoch_1_student.pth"} exists and was not written by this hook' in \
            proc.stdout + proc.stderr
    no_partial_files(work)


def test_truncated_newest_checkpoint_stops_with_the_previous_good_one(reference, tmp_path,
                                                                     synthetic_data,
                                                                     teacher_ckpt):
    """A newest checkpoint broken outside mmkd (disk, copy): --resume says so and names the
    previous good checkpoint; resuming from that one reaches the uninterrupted weights."""
    work = tmp_path / 'broken'
    users = Sentinels(work, reference / 'epoch_2_student.pth')
    for name in ('epoch_1.pth', 'epoch_2.pth'):
        shutil.copyfile(reference / name, work / name)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    data = (work / 'epoch_2.pth').read_bytes()
    (work / 'epoch_2.pth').write_bytes(data[:len(data) // 3])
    args = train_args(KD_CFG, work, synthetic_data, teacher_ckpt)
    proc = run_tool(args + ['--resume'], expect_fail=True)
    err = proc.stderr
    assert 'CorruptCheckpointError' in err and str(work / 'epoch_2.pth') in err
    assert 'truncated' in err and f'--resume {work / "epoch_1.pth"}' in err
    assert 'weights_only=False' not in err and 'Epoch(train)' not in proc.stdout
    run_tool(args + ['--resume', str(work / 'epoch_1.pth')])
    assert_same_weights(reference / 'epoch_2.pth', work / 'epoch_2.pth')
    users.check('after the resumed run')


def test_killed_during_the_offline_pgm_pass_resumes_exactly(tmp_path, synthetic_data,
                                                            teacher_ckpt):
    ref = tmp_path / 'reference'
    run_tool(train_args(PGM_CFG, ref, synthetic_data, teacher_ckpt))
    work = tmp_path / 'chain'
    users = Sentinels(work, ref / 'epoch_2_student.pth')
    args = train_args(PGM_CFG, work, synthetic_data, teacher_ckpt)
    # killed right after epoch 1 and its checkpoints, then resumed: the new process's PGM pass
    # before epoch 2 runs the teacher again (its cache is gone), and is killed at its first
    # teacher forward
    log = killed(args, 'train_epoch:1')
    assert 'PGM: prototypes for epoch 0' in log and (work / 'epoch_1.pth').is_file()
    log = killed(args + ['--resume'], 'teacher_forward:1')
    # the pass before epoch 2 had started (resumed, no iteration yet) and had not ended
    assert 'resume checkpoint' in log and 'Epoch(train) [2]' not in log
    assert 'PGM: prototypes for epoch 1' not in log
    users.check('killed during the PGM pass')
    run_tool(args + ['--resume'])
    assert_same_weights(ref / 'epoch_2.pth', work / 'epoch_2.pth')
    users.check('after the resumed run')
    no_partial_files(work)
