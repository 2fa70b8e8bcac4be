#!/usr/bin/env python
"""Mutation check: plant known bugs in mmkd's loss code, one at a time, and see the tests fail.

Every mutation below is an exact source edit (``anchor`` -> ``replacement``) that must match its
file exactly once; the check refuses to run if any anchor is missing or ambiguous, so an edit
elsewhere in the library shows up here instead of silently testing nothing.

The working tree is never modified: the repository (tracked and untracked, non-ignored files;
with ``--ref``, the files of that commit) is copied to a temporary folder, the tests run there
with ``PYTHONPATH`` pointing at the copy (the check verifies that ``mmkd`` is imported from
it), and each mutated file is restored in the copy before the next mutation
(``try/finally``). The golden fixtures are taken from
``$MMKD_GOLDEN_DIR`` or ``../shared/golden`` beside the checkout and required
(``MMKD_REQUIRE_GOLDEN=1``), so a golden test can never pass by skipping.

First the selected tests run on the unmutated copy and must pass; then each mutation runs its
own selection of tests. A mutation is *killed* when its tests fail, *survived* when they pass.

Usage::

    python tools/mutation_check.py                 # all mutations, Markdown summary table
    python tools/mutation_check.py --list          # names, files and test selections
    python tools/mutation_check.py -m dicod_loc_norm -m mgd_no_mask   # a subset
    python tools/mutation_check.py --json out.json # also write the results as JSON
    python tools/mutation_check.py --ref HEAD      # the last commit, not the working tree

Exit status: 0 when every mutation is killed, 1 when one survives, 2 on a setup error (anchor
not found, failing baseline, mmkd imported from the wrong place).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: tests that start training runs or other processes; mutation runs leave them out
SLOW = ('not two_optimisers_step_and_resume and not dist_train and not train_cls_teacher_tool')


@dataclass
class Mutation:
    """One planted bug.

    Attributes:
        name: short id (``-m`` selects by it).
        path: file, relative to the repository root.
        anchor: exact source text that must occur once in ``path``.
        replacement: what the anchor becomes.
        tests: pytest arguments selecting the tests to run (files or node ids).
        what: one line saying what the mutation does.
    """

    name: str
    path: str
    anchor: str
    replacement: str
    tests: Sequence[str]
    what: str
    deselect: str = SLOW
    result: Dict[str, object] = field(default_factory=dict)


GK = 'mmkd/models/methods/global_knowledge/'
GK_TESTS = ('tests/test_gk_losses.py', 'tests/test_gk_one_stage.py',
            'tests/golden/test_golden_gk.py')
ICD_TESTS = ('tests/test_icd.py', 'tests/golden/test_golden_icd.py')
DSIG_TESTS = ('tests/test_dsig.py', 'tests/golden/test_golden_dsig.py')
GID_TESTS = ('tests/test_gid.py', 'tests/golden/test_golden_gid.py')
DICOD_TESTS = ('tests/test_dicod.py', 'tests/golden/test_golden_dicod.py')
PEER_TESTS = ('tests/test_peer_losses.py', 'tests/golden/test_golden_peers.py')

MUTATIONS: List[Mutation] = [
    # ---- the ten planted changes of issue 20 ------------------------------------------------
    Mutation('gk_soft_no_r', GK + 'robust_distilling.py',
             "        return soft_label_kl(rec.cls_score[idx], t_out['cls_score'], "
             "self.temperature,\n                             'classmean', weight=r)",
             "        return soft_label_kl(rec.cls_score[idx], t_out['cls_score'], "
             "self.temperature,\n                             'classmean', weight=None)",
             GK_TESTS, 'GK soft label (two-stage): robustness weight r dropped'),
    Mutation('gk_robustness_no_abs', GK + 'prototype_generation.py',
             'r = 1.0 - (ss - st).abs()', 'r = 1.0 - (ss - st)',
             GK_TESTS, 'GK robustness: .abs() dropped from 1 - |ss - st|'),
    Mutation('icd_temperature_multiplies', 'mmkd/models/methods/icd/decoder.py',
             'probs = (logits / temperature).softmax(-1)',
             'probs = (logits * temperature).softmax(-1)',
             ICD_TESTS, 'ICD token weights: logits multiplied by T instead of divided'),
    Mutation('icd_no_sqrt_d', 'mmkd/models/methods/icd/decoder.py',
             'q = self.split_heads(self.q_proj(queries)) / math.sqrt(self.head_dims)',
             'q = self.split_heads(self.q_proj(queries))',
             ICD_TESTS, 'ICD attention: the 1/sqrt(d) scaling of q dropped'),
    Mutation('dsig_all_negatives', 'mmkd/models/methods/dsig/instance_graph.py',
             "hard = neg[mine_hard_backgrounds(t_out['cls_score'][neg], "
             "self.mining_threshold)]",
             'hard = neg',
             DSIG_TESTS, 'DSIG edges: all negatives instead of the mined hard ones'),
    Mutation('gid_response_iou_0', 'mmkd/models/methods/gid/general_instance.py',
             "type='MaxIoUAssigner', pos_iou_thr=0.5,",
             "type='MaxIoUAssigner', pos_iou_thr=0.0,",
             GID_TESTS, 'GID response (one-stage): anchor IoU threshold 0.5 -> 0.0'),
    Mutation('dicod_loc_norm', 'mmkd/models/methods/dicod/dicod_loss.py',
             "self.loc_weight * total / norm,", "self.loc_weight * total / n_pos,",
             DICOD_TESTS, 'DICOD loc: divided by the positive count instead of the normaliser'),
    Mutation('dicod_teacher_times_t', 'mmkd/models/methods/dicod/dicod_loss.py',
             'F.softmax(teacher_logits.detach().float() / float(temperature), dim=-1)',
             'F.softmax(teacher_logits.detach().float() * float(temperature), dim=-1)',
             DICOD_TESTS, 'DICOD teacher target: softmax(t * T) instead of softmax(t / T)'),
    Mutation('mgd_no_mask', 'mmkd/models/losses/mgd.py',
             'gen = self.generation[j](s * mask)', 'gen = self.generation[j](s)',
             PEER_TESTS, 'MGD: the random mask is never applied'),
    Mutation('gk_level_112', GK + 'robust_distilling.py',
             'torch.sqrt(w * h) / 56.0', 'torch.sqrt(w * h) / 112.0',
             GK_TESTS, 'GK mask level rule: /56 -> /112'),
    Mutation('schedule_off_by_one', 'mmkd/models/losses/weight_schedule.py',
             'factor *= max(self.min_factor, 1.0 - now / total)',
             'factor *= max(self.min_factor, 1.0 - (now + 1) / total)',
             ('tests/test_schedule.py', ) + GK_TESTS,
             'GK attenuation schedule: off by one epoch'),
    # ---- the same bugs on the paths the table did not name ----------------------------------
    Mutation('gk_dense_soft_no_r', GK + 'robust_distilling.py',
             "return soft_label_kl(s_logits, t_logits, self.temperature, 'classmean', "
             "weight=r)",
             "return soft_label_kl(s_logits, t_logits, self.temperature, 'classmean', "
             "weight=None)",
             GK_TESTS, 'GK soft label (one-stage): robustness weight r dropped'),
    Mutation('gid_rcnn_response_iou_0', 'mmkd/models/methods/gid/general_instance.py',
             'mask[sel[iou.max(1).values >= 0.5]] = True',
             'mask[sel[iou.max(1).values >= 0.0]] = True',
             GID_TESTS, 'GID response (two-stage): RoI IoU threshold 0.5 -> 0.0'),
    Mutation('dicod_rcnn_norm_positives', 'mmkd/models/methods/dicod/dicod_loss.py',
             'avg_factor=int(rec.rois.shape[0]))',
             'avg_factor=int(idx.numel()))',
             DICOD_TESTS, 'DICOD (two-stage): normaliser = positives instead of sampled RoIs'),
]


# ---- the copy -----------------------------------------------------------------------------
def repo_files(repo: str) -> List[str]:
    """Tracked and untracked non-ignored files of the working tree (what ``git`` would see)."""
    out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                         cwd=repo, check=True, capture_output=True).stdout.decode()
    return [p for p in out.split('\0') if p and osp.isfile(osp.join(repo, p))]


def copy_repo(repo: str, dest: str, ref: Optional[str] = None) -> None:
    """Copy the working tree (``ref`` None) or the files of commit ``ref`` to ``dest``."""
    if ref is not None:
        os.makedirs(dest)
        archive = subprocess.run(['git', 'archive', '--format=tar', ref], cwd=repo, check=True,
                                 capture_output=True).stdout
        subprocess.run(['tar', '-x', '-C', dest], input=archive, check=True)
        return
    for rel in repo_files(repo):
        target = osp.join(dest, rel)
        os.makedirs(osp.dirname(target), exist_ok=True)
        shutil.copy2(osp.join(repo, rel), target)


def check_anchors(root: str, mutations: Sequence[Mutation]) -> List[str]:
    """Every anchor must occur exactly once in its file; returns the problems."""
    problems = []
    for m in mutations:
        path = osp.join(root, m.path)
        if not osp.isfile(path):
            problems.append(f'{m.name}: {m.path} does not exist')
            continue
        n = open(path, encoding='utf-8').read().count(m.anchor)
        if n != 1:
            problems.append(f'{m.name}: anchor found {n} times in {m.path} (needs exactly 1): '
                            f'{m.anchor!r}')
    return problems


# ---- running tests ------------------------------------------------------------------------
def test_env(copy: str, golden: str) -> Dict[str, str]:
    env = dict(os.environ, PYTHONPATH=copy, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'),
               MMKD_GOLDEN_DIR=golden, MMKD_REQUIRE_GOLDEN='1', PYTHONDONTWRITEBYTECODE='1')
    return env


def run_pytest(copy: str, env: Dict[str, str], args: Sequence[str], deselect: str,
               timeout: int) -> dict:
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rf',
           '--tb=line', *args]
    if deselect:
        cmd += ['-k', deselect]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = -1, f'timed out after {timeout} s\n{e.stdout or ""}'
    failed = re.findall(r'^FAILED (\S+)', out, flags=re.M)
    summary = re.findall(r'^=*\s*(\d+ (?:passed|failed|error|deselected)\b.*?)\s*=*$', out,
                         flags=re.M)
    return dict(rc=rc, failed=failed, summary=summary[-1] if summary else out[-300:],
                seconds=round(time.time() - t0, 1), output=out)


def mutate(copy: str, m: Mutation, env: Dict[str, str], timeout: int) -> dict:
    path = osp.join(copy, m.path)
    original = open(path, encoding='utf-8').read()
    try:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(original.replace(m.anchor, m.replacement, 1))
        res = run_pytest(copy, env, m.tests, m.deselect, timeout)
    finally:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(original)
    if res['rc'] == 1:
        res['status'] = 'killed'
    elif res['rc'] == 0:
        res['status'] = 'SURVIVED'
    else:  # collection error, interruption, timeout: the mutation broke more than a number
        res['status'] = f'killed (rc {res["rc"]})'
    return res


def golden_default() -> Optional[str]:
    env = os.environ.get('MMKD_GOLDEN_DIR')
    if env:
        return env
    d = osp.normpath(osp.join(REPO, '..', 'shared', 'golden'))
    return d if osp.isdir(d) else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('-m', '--mutation', action='append', default=[],
                    help='run only these mutations (by name; repeatable)')
    ap.add_argument('--list', action='store_true', help='list the mutations and exit')
    ap.add_argument('--json', help='also write the results to this JSON file')
    ap.add_argument('--timeout', type=int, default=1800, help='seconds per pytest run')
    ap.add_argument('--ref', help='test this commit (e.g. HEAD) instead of the working tree, '
                    'which may hold other people\'s unfinished edits')
    ap.add_argument('--keep', action='store_true', help='keep the temporary copy')
    ap.add_argument('--skip-baseline', action='store_true',
                    help='do not run the selected tests on the unmutated copy first')
    args = ap.parse_args(argv)

    chosen = MUTATIONS
    if args.mutation:
        names = {m.name for m in MUTATIONS}
        unknown = sorted(set(args.mutation) - names)
        if unknown:
            print(f'unknown mutation(s) {unknown}; known: {sorted(names)}', file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.name in args.mutation]
    if args.list:
        for m in chosen:
            print(f'{m.name:28s} {m.path}\n    {m.what}\n    tests: {" ".join(m.tests)}')
        return 0
    copy_root = tempfile.mkdtemp(prefix='mmkd_mutation_')
    copy = osp.join(copy_root, 'repo')
    try:
        return _run(args, chosen, copy)
    finally:
        if args.keep:
            print(f'copy kept at {copy}')
        else:
            shutil.rmtree(copy_root, ignore_errors=True)


def _run(args: argparse.Namespace, chosen: List[Mutation], copy: str) -> int:
    start = time.time()
    copy_repo(REPO, copy, args.ref)
    problems = check_anchors(copy, chosen)
    if problems:
        print('mutation anchors do not match the source (update tools/mutation_check.py):\n  '
              + '\n  '.join(problems), file=sys.stderr)
        return 2
    golden = golden_default()
    if golden is None or not osp.isdir(golden):
        print('golden fixtures not found: set MMKD_GOLDEN_DIR to the folder holding CASES.md',
              file=sys.stderr)
        return 2

    env = test_env(copy, golden)
    where = subprocess.run([sys.executable, '-c', 'import mmkd; print(mmkd.__file__)'],
                           cwd=copy, env=env, capture_output=True, text=True).stdout.strip()
    if not where.startswith(copy):
        print(f'mmkd is imported from {where!r}, not from the copy {copy}', file=sys.stderr)
        return 2
    if not args.skip_baseline:
        files = sorted({t for m in chosen for t in m.tests})
        print(f'baseline: {len(files)} test files on the unmutated copy ...', flush=True)
        base = run_pytest(copy, env, files, SLOW, args.timeout)
        print(f'  {base["summary"]} ({base["seconds"]} s)', flush=True)
        if base['rc'] != 0:
            print('the tests fail without any mutation; fix them first:\n'
                  + base['output'][-4000:], file=sys.stderr)
            return 2
    for m in chosen:
        print(f'{m.name}: {m.what} ...', flush=True)
        m.result = mutate(copy, m, env, args.timeout)
        print(f'  {m.result["status"]}: {m.result["summary"]} ({m.result["seconds"]} s)',
              flush=True)

    total = time.time() - start
    print('\n| mutation | file | result | killed by (failing tests) |')
    print('|---|---|---|---|')
    for m in chosen:
        r = m.result
        killers = ', '.join(f.split('::', 1)[-1] if '::' in f else f for f in r['failed'][:4])
        more = len(r['failed']) - 4
        killers += f' (+{more} more)' if more > 0 else ''
        what = m.what.replace('|', '\\|')
        print(f'| `{m.name}`: {what} | `{m.path}` | {r["status"]} | {killers or "-"} |')
    survived = [m.name for m in chosen if m.result['status'] == 'SURVIVED']
    print(f'\n{len(chosen) - len(survived)}/{len(chosen)} killed'
          + (f'; survived: {", ".join(survived)}' if survived else '')
          + f'; {total / 60:.1f} min on {time.strftime("%Y-%m-%d")}')
    if args.json:
        sys.path.insert(0, REPO)  # the tests ran mmkd from the copy; this process writes only
        from mmkd.utils.atomic import atomic_write
        with atomic_write(args.json) as f:
            json.dump([dict(name=m.name, path=m.path, what=m.what, tests=list(m.tests),
                            **{k: v for k, v in m.result.items() if k != 'output'})
                       for m in chosen], f, indent=1)
    return 1 if survived else 0


if __name__ == '__main__':
    sys.exit(main())
