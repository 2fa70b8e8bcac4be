"""mmengine's Runner with atomic checkpoint files (the runner mmkd's tools build)."""
from __future__ import annotations

import os.path as osp
from typing import Optional

from mmengine.dist import master_only
from mmengine.runner import Runner

from ..utils.atomic import atomic_path


class AtomicSaveRunner(Runner):
    """:class:`mmengine.runner.Runner` whose checkpoints are written to a temporary file next to
    the target and renamed into place once complete.

    mmengine writes ``epoch_N.pth`` in place, so a process killed while saving leaves a
    truncated file under the final name (and ``--resume PATH`` or a user later picks it up).
    Here a kill at any point leaves either no ``epoch_N.pth`` or the complete one. Only local
    paths are handled; remote back ends (``backend_args``, URLs) are written as mmengine does.
    """

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args: Optional[dict] = None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, backend_args: Optional[dict] = None) -> None:
        """As :meth:`Runner.save_checkpoint`, atomically for local ``out_dir``."""
        kwargs = dict(file_client_args=file_client_args, save_optimizer=save_optimizer,
                      save_param_scheduler=save_param_scheduler, meta=meta, by_epoch=by_epoch,
                      backend_args=backend_args)
        if file_client_args is not None or backend_args is not None or '://' in str(out_dir):
            return super().save_checkpoint(out_dir, filename, **kwargs)
        with atomic_path(osp.join(out_dir, filename)) as tmp:
            super().save_checkpoint(osp.dirname(tmp), osp.basename(tmp), **kwargs)
