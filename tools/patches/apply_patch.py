"""Apply a unified diff (``diff -ru`` / ``git diff`` output, paths with one leading component)
to a source tree, strictly: every hunk's context and removed lines must match exactly (no fuzz),
else nothing is written and the mismatch is reported. A tree that already holds the patched
text is left alone. Python only, so the bare GPU host needs neither ``patch`` nor ``git``.

    python tools/patches/apply_patch.py PATCH TREE [--check]
"""
import argparse
import os
import re
import sys
import tempfile
from typing import Dict, List, Tuple

HUNK = re.compile(r'^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@')
Hunk = Tuple[int, List[str], List[str]]  # (old start line, old lines, new lines)


def parse(text: str) -> Dict[str, List[Hunk]]:
    """File path (leading component stripped) -> its hunks, in order."""
    files: Dict[str, List[Hunk]] = {}
    lines = text.splitlines()
    i, path = 0, None
    while i < len(lines):
        line = lines[i]
        if line.startswith('+++ '):
            name = line[4:].split('\t')[0].strip()
            path = name.split('/', 1)[1] if '/' in name else name
            files[path] = []
        elif line.startswith('@@ ') and path is not None:
            m = HUNK.match(line)
            if not m:
                raise ValueError(f'bad hunk header: {line!r}')
            n_old = int(m.group(2) or 1)
            n_new = int(m.group(4) or 1)
            old, new = [], []
            i += 1
            while i < len(lines) and (len(old) < n_old or len(new) < n_new):
                body = lines[i]
                tag, rest = (body[:1], body[1:]) if body else (' ', '')
                if tag == ' ':
                    old.append(rest)
                    new.append(rest)
                elif tag == '-':
                    old.append(rest)
                elif tag == '+':
                    new.append(rest)
                elif tag != '\\':  # "\ No newline at end of file"
                    raise ValueError(f'{path}: unexpected line in hunk: {body!r}')
                i += 1
            if (len(old), len(new)) != (n_old, n_new):
                raise ValueError(f'{path}: truncated hunk at {line!r}')
            files[path].append((int(m.group(1)), old, new))
            continue
        i += 1
    if not files:
        raise ValueError('no file changes found in the patch')
    return files


def _find(src: List[str], block: List[str], hint: int, start: int) -> int:
    """Index of ``block`` in ``src`` at or after ``start``, nearest to ``hint``; -1 if absent."""
    hits = [k for k in range(start, len(src) - len(block) + 1) if src[k:k + len(block)] == block]
    return min(hits, key=lambda k: abs(k - hint)) if hits else -1


def patch_file(src: List[str], hunks: List[Hunk], path: str) -> Tuple[List[str], str]:
    """The patched lines and 'applied' / 'already applied'; raises on a mismatch."""
    out, pos, done = list(src), 0, 0
    for start, old, new in hunks:
        k = _find(out, old, start - 1 + (len(out) - len(src)), pos)
        if k < 0:
            if _find(out, new, start - 1, 0) >= 0:
                done += 1
                continue
            raise ValueError(f'{path}: hunk at line {start} does not match the source '
                             '(is this the right mmcv version?)')
        out[k:k + len(old)] = new
        pos = k + len(new)
    if done and done != len(hunks):
        raise ValueError(f'{path}: partly patched already; start from a fresh copy')
    return out, ('already applied' if done else 'applied')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('patch')
    p.add_argument('tree')
    p.add_argument('--check', action='store_true', help='only report, write nothing')
    args = p.parse_args(argv)
    with open(args.patch) as f:
        files = parse(f.read())
    results = {}
    for path, hunks in files.items():
        full = os.path.join(args.tree, path)
        if not os.path.isfile(full):
            print(f'error: {full} does not exist', file=sys.stderr)
            return 1
        with open(full) as f:
            text = f.read()
        try:
            lines, status = patch_file(text.split('\n'), hunks, path)
        except ValueError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 1
        results[full] = ('\n'.join(lines), status)
    for full, (text, status) in results.items():
        if status == 'applied' and not args.check:
            # a fresh temporary name (mmkd.utils.atomic's scheme; mmkd itself cannot be
            # imported here: this runs before mmcv is built)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(full)),
                                       prefix=f'.{os.path.basename(full)}.{os.getpid()}.',
                                       suffix='.mmkd-tmp')
            try:
                with os.fdopen(fd, 'w') as f:
                    f.write(text)
                os.chmod(tmp, os.stat(full).st_mode & 0o7777)  # keep the file's permissions
                os.replace(tmp, full)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
        print(f'{"would be " if args.check and status == "applied" else ""}{status}: {full}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
