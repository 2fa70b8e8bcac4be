"""Distributed training: ``python -m mmkd.tools.dist_train CONFIG NUM_PROCS [train args]``
(``tools/dist_train.sh`` of a checkout; launcher and environment variables:
:mod:`mmkd.tools.dist_launch`)."""
import sys
from typing import Optional, Sequence

from mmkd.tools.dist_launch import _nproc, launch


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        raise SystemExit('usage: python -m mmkd.tools.dist_train CONFIG NUM_PROCS [train args]')
    config, nproc = argv[0], _nproc(argv[1])
    return launch('train', nproc, [config, *argv[2:]])


if __name__ == '__main__':
    sys.exit(main())
