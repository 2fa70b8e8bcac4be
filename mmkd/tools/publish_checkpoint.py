"""``python -m mmkd.tools.publish_checkpoint ARGS``: runs
``tools/publish_checkpoint.py ARGS`` of mmkd's root
(the checkout, or ``mmkd/.mim`` of a built mmkd).
"""
import sys
from typing import Optional, Sequence

from mmkd.tools import run_tool_script


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_tool_script('publish_checkpoint', argv)


if __name__ == '__main__':
    sys.exit(main())
