"""mmkd.utils.atomic: every file mmkd writes goes through a fresh temporary file and a rename."""
import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tool_env
from mmkd.utils.atomic import TEMP_SUFFIX, atomic_path, atomic_write, remove_stale_temps
from mmkd.utils.checkpoint import save_atomic
from mmkd.utils.torch_compat import safe_torch_load


def listing(folder):
    return sorted(os.listdir(folder))


def test_writes_text_and_bytes_and_creates_the_folder(tmp_path):
    dst = tmp_path / 'new' / 'sub' / 'a.json'
    with atomic_write(dst) as f:
        json.dump({'é': 1}, f, ensure_ascii=False)
    assert json.loads(dst.read_text(encoding='utf-8')) == {'é': 1}
    with atomic_write(str(dst), 'wb') as f:
        f.write(b'\x00\x01')
    assert dst.read_bytes() == b'\x00\x01'
    assert listing(dst.parent) == ['a.json']
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_users_own_tmp_files_are_never_touched(tmp_path):
    dst = tmp_path / 'X'
    users = {'X.tmp': b'mine', '.X.tmp': b'hidden mine', 'X.tmp.py': b'# mine',
             'X.mmkd-tmp': b'mine too', '.X.notes.mmkd-tmp': b'not a pid name'}
    for name, data in users.items():
        (tmp_path / name).write_bytes(data)
    for _ in range(2):
        with atomic_write(dst) as f:
            f.write('new')
    assert dst.read_text() == 'new'
    assert {n: (tmp_path / n).read_bytes() for n in users} == users
    assert listing(tmp_path) == sorted(list(users) + ['X'])


@pytest.mark.parametrize('mode', ['w', 'wb'])
def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, mode):
    dst = tmp_path / 'result.json'
    dst.write_text('old content')
    with pytest.raises(RuntimeError, match='disk on fire'):
        with atomic_write(dst, mode) as f:
            f.write('partial' if mode == 'w' else b'partial')
            f.flush()
            temps = [n for n in listing(tmp_path) if n.endswith(TEMP_SUFFIX)]
            assert len(temps) == 1 and temps[0].startswith('.result.json.')  # written there
            raise RuntimeError('disk on fire')
    assert dst.read_text() == 'old content'
    assert listing(tmp_path) == ['result.json']


def test_atomic_path_for_writers_that_take_a_path(tmp_path):
    dst = tmp_path / 'epoch_1.pth'
    with atomic_path(dst) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(TEMP_SUFFIX)
        assert not dst.exists()
        torch.save({'a': torch.ones(2)}, tmp)
    assert torch.equal(safe_torch_load(dst)['a'], torch.ones(2))
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dst) as tmp:
            torch.save({'a': torch.zeros(2)}, tmp)
            raise KeyboardInterrupt
    assert torch.equal(safe_torch_load(dst)['a'], torch.ones(2))
    assert listing(tmp_path) == ['epoch_1.pth']


def test_checkpoint_saving_goes_through_it(tmp_path):
    dst = tmp_path / 'student.pth'
    (tmp_path / 'student.pth.tmp').write_bytes(b'user file')
    save_atomic({'w': torch.arange(3)}, str(dst))
    assert torch.equal(safe_torch_load(dst)['w'], torch.arange(3))
    assert (tmp_path / 'student.pth.tmp').read_bytes() == b'user file'
    with pytest.raises(Exception):
        save_atomic({'w': lambda: 0}, str(dst))  # a lambda does not pickle: fails mid-write
    assert torch.equal(safe_torch_load(dst)['w'], torch.arange(3))
    assert listing(tmp_path) == ['student.pth', 'student.pth.tmp']


def test_invalid_mode():
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_write('x', 'a'):
            pass


KILLED_WRITER = r'''
import os, signal, sys
from mmkd.utils.atomic import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write('half of the new ')
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_writer_killed_mid_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path):
    dst = tmp_path / 'state.json'
    dst.write_text('old')
    proc = subprocess.run([sys.executable, '-c', KILLED_WRITER, str(dst)], cwd=REPO,
                          env=tool_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert dst.read_text() == 'old'
    (left, ) = [n for n in listing(tmp_path) if n != 'state.json']
    assert left.startswith('.state.json.') and left.endswith(TEMP_SUFFIX)
    assert (tmp_path / left).read_text() == 'half of the new '
    # a temporary file of another destination and one of a live writer are kept
    other = tmp_path / f'.state.json.bak.12345.abcdefgh{TEMP_SUFFIX}'
    other.write_text('x')
    live = tmp_path / f'.state.json.{os.getpid()}.abcdefgh{TEMP_SUFFIX}'
    live.write_text('y')
    remove_stale_temps(dst)  # the killed process's file goes (its pid has ended)
    assert listing(tmp_path) == sorted([other.name, live.name, 'state.json'])
    with atomic_write(dst) as f:
        f.write('new')
    assert dst.read_text() == 'new'
    assert listing(tmp_path) == sorted([other.name, live.name, 'state.json'])
