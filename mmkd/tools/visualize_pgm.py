"""``python -m mmkd.tools.visualize_pgm ARGS``: runs
``tools/visualize_pgm.py ARGS`` of mmkd's root
(the checkout, or ``mmkd/.mim`` of a built mmkd).
"""
import sys
from typing import Optional, Sequence

from mmkd.tools import run_tool_script


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_tool_script('visualize_pgm', argv)


if __name__ == '__main__':
    sys.exit(main())
