"""torchrun launcher of mmkd's tools (the code behind ``tools/dist_launch.sh``).

    python -m mmkd.tools.dist_launch TOOL NUM_PROCS [tool args]      # TOOL: train or test
    python -m mmkd.tools.dist_train CONFIG NUM_PROCS [train args]
    python -m mmkd.tools.dist_test CONFIG CKPT NUM_PROCS [test args]

One machine: torchrun's ``--standalone`` binds a free port itself, so two jobs on one machine
never collide (set ``PORT`` to force one). Several machines: set ``NNODES``, ``NODE_RANK``,
``MASTER_ADDR`` and ``PORT`` on each (the same ``PORT``/``MASTER_ADDR``). Without GPUs the
processes use the gloo backend on the CPU (the tools set it).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Optional, Sequence

TOOLS = ('train', 'test')


def rendezvous_args(env: Optional[dict] = None) -> List[str]:
    """torchrun's rendezvous flags for the ``NNODES``/``NODE_RANK``/``MASTER_ADDR``/``PORT``
    environment variables."""
    env = os.environ if env is None else env
    if env.get('NNODES', '1') == '1' and not env.get('PORT'):
        return ['--standalone']
    return [f"--nnodes={env.get('NNODES', '1')}", f"--node_rank={env.get('NODE_RANK', '0')}",
            f"--master_addr={env.get('MASTER_ADDR', '127.0.0.1')}",
            f"--master_port={env.get('PORT', '29500')}"]


def launch_command(tool: str, nproc: int, args: Sequence[str],
                   env: Optional[dict] = None) -> List[str]:
    """The torchrun command line that runs ``mmkd.tools.<tool>`` in ``nproc`` processes."""
    if tool not in TOOLS:
        raise ValueError(f'unknown tool {tool!r}; choose from {", ".join(TOOLS)}')
    return [sys.executable, '-m', 'torch.distributed.run', *rendezvous_args(env),
            f'--nproc_per_node={nproc}', '-m', f'mmkd.tools.{tool}', *args,
            '--launcher', 'pytorch']


def _nproc(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise SystemExit(f'NUM_PROCS must be a positive integer, got {value!r}')
    return n


def launch(tool: str, nproc: int, args: Sequence[str]) -> int:
    """Run the tool under torchrun; returns its exit code."""
    return subprocess.call(launch_command(tool, nproc, args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] in ('-h', '--help'):
        print(__doc__)
        return 0 if argv[:1] in (['-h'], ['--help']) else 2
    return launch(argv[0], _nproc(argv[1]), argv[2:])


if __name__ == '__main__':
    sys.exit(main())
