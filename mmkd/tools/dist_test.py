"""Distributed testing: ``python -m mmkd.tools.dist_test CONFIG CKPT NUM_PROCS [test args]``
(``tools/dist_test.sh`` of a checkout; launcher and environment variables:
:mod:`mmkd.tools.dist_launch`)."""
import sys
from typing import Optional, Sequence

from mmkd.tools.dist_launch import _nproc, launch


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3:
        raise SystemExit('usage: python -m mmkd.tools.dist_test CONFIG CKPT NUM_PROCS '
                         '[test args]')
    config, ckpt, nproc = argv[0], argv[1], _nproc(argv[2])
    return launch('test', nproc, [config, ckpt, *argv[3:]])


if __name__ == '__main__':
    sys.exit(main())
