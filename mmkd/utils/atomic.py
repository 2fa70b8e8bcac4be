"""Atomic file writing: every file mmkd writes goes through a temporary file and a rename.

A process killed at any point (SIGKILL, node failure) leaves either the old file or the
complete new one under the final name, never a truncated file:

    with atomic_write('results.json') as f:          # text ('w') or bytes ('wb')
        json.dump(obj, f)

    with atomic_path('epoch_1.pth') as tmp:          # for writers that take a path
        something_that_writes(tmp)

The temporary file is a fresh, hidden name in the destination's folder
(``.NAME.<pid>.<random>.mmkd-tmp``, created by :func:`tempfile.mkstemp`), so a user's own
``NAME.tmp`` is never touched and two writers never share a temporary file. The data is flushed
and fsync'ed before :func:`os.replace` moves it onto the destination; on any error the temporary
file is removed and the old destination stays as it was. Temporary files of the same
destination left by a killed mmkd process (their process is gone) are removed at the next write.
"""
from __future__ import annotations

import contextlib
import glob
import os
import os.path as osp
import re
import tempfile
from typing import IO, Iterator, Optional, Union

from .faults import fault_point

#: Ending of mmkd's temporary files (``.NAME.<pid>.<random>.mmkd-tmp``).
TEMP_SUFFIX = '.mmkd-tmp'
PathLike = Union[str, 'os.PathLike[str]']


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_for(dst: PathLike) -> str:
    """Create and return a fresh, empty hidden temporary file next to ``dst``
    (``.NAME.<pid>.<random>.mmkd-tmp``, normal file permissions)."""
    dst = os.fspath(dst)
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(dst)),
                               prefix=f'.{osp.basename(dst)}.{os.getpid()}.',
                               suffix=TEMP_SUFFIX)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    return tmp


def _writer_gone(tmp: str, dst: str) -> bool:
    """Whether ``tmp`` is a temporary file of ``dst`` whose writer has ended: the pid in its
    name runs no more on this machine (names without a pid are from older mmkd versions)."""
    m = re.fullmatch(rf'\.{re.escape(osp.basename(dst))}\.(?:(\d+)\.)?[a-z0-9_]{{8}}'
                     rf'{re.escape(TEMP_SUFFIX)}', osp.basename(tmp))
    if m is None:
        return False  # another file's temporary (``dst`` + more), or not one of mmkd's
    if m.group(1) is None:
        return True
    pid = int(m.group(1))
    if pid == os.getpid():
        return False  # possibly being written by another thread of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


def remove_stale_temps(dst: PathLike) -> None:
    """Remove the temporary files of ``dst`` that killed mmkd processes left behind (only the
    names :func:`temp_path_for` creates, and only when their process has ended)."""
    dst = os.fspath(dst)
    pattern = osp.join(osp.dirname(osp.abspath(dst)),
                       f'.{glob.escape(osp.basename(dst))}.*{TEMP_SUFFIX}')
    for tmp in glob.glob(pattern):
        if _writer_gone(tmp, dst):
            _remove_quietly(tmp)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (best effort: not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomic(tmp: str, dst: PathLike) -> None:
    """Move the completely written (and fsync'ed) ``tmp`` onto ``dst`` in one step."""
    # test-only: the one in-library kill point of tests/test_faults.py (mmkd/utils/faults.py):
    # a file complete under its temporary name, not yet renamed (no hook runs in between)
    fault_point('file_replace')
    dst = os.fspath(dst)
    os.replace(tmp, dst)
    _fsync_dir(osp.dirname(osp.abspath(dst)))


@contextlib.contextmanager
def _atomic(dst: PathLike, sync_file: bool) -> Iterator[str]:
    dst = os.fspath(dst)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    remove_stale_temps(dst)
    tmp = temp_path_for(dst)
    try:
        yield tmp
        if sync_file:
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
        replace_atomic(tmp, dst)
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_path(dst: PathLike) -> 'contextlib.AbstractContextManager[str]':
    """Context manager giving a temporary path next to ``dst`` for a writer that takes a path
    (e.g. mmengine's checkpoint saving); when the block ends without error the file written
    there is fsync'ed and renamed onto ``dst``, otherwise removed (``dst`` is left as it was).
    The writer must not infer the format from the name's extension (the temporary name ends
    in ``.mmkd-tmp``)."""
    return _atomic(dst, sync_file=True)


@contextlib.contextmanager
def atomic_write(dst: PathLike, mode: str = 'w',
                 encoding: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file next to ``dst`` for writing; when the block ends without error it
    is flushed, fsync'ed and renamed onto ``dst``, otherwise removed (``dst`` is left as it was).

    Args:
        dst: the file to (re)write; its folder is created if missing.
        mode: ``'w'`` (text, ``encoding`` defaults to UTF-8) or ``'wb'`` (bytes).
        encoding: text encoding (``'w'`` only).
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    if mode == 'wb' and encoding is not None:
        raise ValueError("atomic_write: encoding is for mode 'w' only")
    with _atomic(dst, sync_file=False) as tmp:
        with open(tmp, mode, encoding=(encoding or 'utf-8') if mode == 'w' else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
