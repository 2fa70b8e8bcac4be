"""auto_balance through tools/train.py: an uninterrupted run and a run stopped inside the
measurement window, then again after it and resumed each time, end with bit-identical weights,
the same chosen scales and the same loss_balance.json."""
import json

import torch

from conftest import KD_CFG, data_options, run_tool
from mmkd.utils.torch_compat import safe_torch_load

#: 12 images, 3 per batch: 4 iterations per epoch; the window (6) ends inside epoch 2.
WINDOW = 6


def _args(work, data, teacher_ckpt, epochs, resume=False):
    return ['tools/train.py', KD_CFG, '--work-dir', str(work), '--cfg-options',
            *data_options(data), f'model.teacher_ckpt={teacher_ckpt}',
            f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=10',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5',
            'default_hooks.logger.interval=1', 'param_scheduler.0.end=4',
            f'model.auto_balance.iters={WINDOW}', 'model.auto_balance.target_ratio=0.02',
            'model.balance_report.final_iters=3'] + (['--resume'] if resume else [])


def _ckpt(path):
    return safe_torch_load(path)


def _assert_same_weights(a, b):
    sa, sb = a['state_dict'], b['state_dict']
    assert sa.keys() == sb.keys()
    bad = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not bad, bad[:10]


def test_auto_balance_resume_inside_and_after_the_window_is_exact(tmp_path, synthetic_data,
                                                                  teacher_ckpt):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    proc = run_tool(_args(straight, synthetic_data, teacher_ckpt, 3))
    log = proc.stdout + proc.stderr
    assert f'loss balance over iterations 0-{WINDOW - 1}: detection loss' in log, log[-3000:]
    assert 'auto_balance scale' in log or '(scale ' in log

    run_tool(_args(split, synthetic_data, teacher_ckpt, 1))
    mid = _ckpt(split / 'epoch_1.pth')['meta']['loss_balance']
    assert mid['step'] == 4 and mid['terms']
    assert all(t['n'] == 4 and not t['decided'] for t in mid['terms'].values())  # mid-window

    proc = run_tool(_args(split, synthetic_data, teacher_ckpt, 2, resume=True))
    assert 'loss balance: state restored from the checkpoint (step 4' in proc.stdout + proc.stderr
    a2, b2 = _ckpt(straight / 'epoch_2.pth'), _ckpt(split / 'epoch_2.pth')
    _assert_same_weights(a2, b2)
    sa, sb = a2['meta']['loss_balance'], b2['meta']['loss_balance']
    assert sb['step'] == 8 and all(t['decided'] for t in sb['terms'].values())
    assert sa['terms'] == sb['terms']  # the chosen scales, bit for bit

    run_tool(_args(split, synthetic_data, teacher_ckpt, 3, resume=True))  # after the window
    a3, b3 = _ckpt(straight / 'epoch_3.pth'), _ckpt(split / 'epoch_3.pth')
    _assert_same_weights(a3, b3)
    assert a3['meta']['loss_balance'] == b3['meta']['loss_balance']

    ra = json.loads((straight / 'loss_balance.json').read_text())
    rb = json.loads((split / 'loss_balance.json').read_text())
    assert ra == rb
    assert set(ra) == {'version', 'measured_iters', 'detection_loss', 'terms', 'final'}
    assert ra['version'] == 1 and ra['measured_iters'] == WINDOW and ra['detection_loss'] > 0
    assert set(ra['terms']) == {'loss_kd_fpn', 'loss_kd_roi_kl'} == set(ra['final'])
    for term in ra['terms'].values():
        assert set(term) == {'ratio', 'scale', 'warned'}
        assert term['scale'] == min(1.0, 0.02 / term['ratio'])
    assert any(t['scale'] < 1.0 for t in ra['terms'].values())
