"""Two gloo processes with different data end with identical prototypes."""
import contextlib
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmkd.models.methods.global_knowledge import RobustDistillingModule
from mmkd.utils.torch_compat import safe_torch_load
from test_gk_losses import _Det


def _data(rank):
    g = torch.Generator().manual_seed(100 + rank)
    n = 12 + 5 * rank  # different counts per rank exercise the padding of the gather
    return ([torch.randn(n, 4, generator=g)], [torch.randn(n, 4, generator=g)],
            [torch.randint(0, 3, (n, ), generator=g)])


def _loss(mode):
    loss = RobustDistillingModule(boxes='gt', soft_weight=0.0,
                                  pgm=dict(mode=mode, num_prototypes=3, bank_size=8))
    loss.setup(_Det(c=4, n=1, k=3), _Det(c=4, n=1, k=3))
    return loss


@contextlib.contextmanager
def _gloo(rank, store):
    """A two-process gloo group for the body of the block. The ranks meet through a file
    (``store``, new for each test), so no port is chosen first and bound later (a race with
    any other process on the machine)."""
    os.environ['OMP_NUM_THREADS'] = '1'
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _worker(rank, store, out_dir):
    with _gloo(rank, store):
        offline = _loss('offline')
        offline.generate_prototypes(*_data(rank))
        online = _loss('online')
        ds, dt, lab = _data(rank)
        online._bank_push(ds, dt, lab[0])
        online.refresh_from_bank()
        torch.save(dict(offline=offline.pgm.state_dict(), online=online.pgm.state_dict()),
                   os.path.join(out_dir, f'rank{rank}.pt'))


def test_two_processes_end_with_identical_prototypes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / 'store'), str(tmp_path)), nprocs=2, join=True)
    r0 = safe_torch_load(tmp_path / 'rank0.pt')
    r1 = safe_torch_load(tmp_path / 'rank1.pt')
    for mode in ('offline', 'online'):
        for k, v in r0[mode].items():
            assert torch.equal(v, r1[mode][k]), (mode, k)
        assert int(r0[mode]['num_generated']) == 1
    # the gathered generation equals one process generating from both ranks' data
    single = _loss('offline')
    d0, d1 = _data(0), _data(1)
    single.pgm.generate([torch.cat([d0[0][0], d1[0][0]])], [torch.cat([d0[1][0], d1[1][0]])],
                        [torch.cat([d0[2][0], d1[2][0]])])
    for k, v in single.pgm.state_dict().items():
        assert torch.equal(v, r0['offline'][k]), k
    assert r0['online']['proto_valid'].any()


def _worker_uneven_banks(rank, store, out_dir):
    """Only rank 0 has bank entries; the epoch-start refresh must not deadlock."""
    with _gloo(rank, store):
        from mmkd.models.utils import TrainProgress
        loss = _loss('online')
        loss.train()
        if rank == 0:
            ds, dt, lab = _data(0)
            loss._bank_push(ds, dt, lab[0])
        loss._maybe_refresh(TrainProgress(epoch=1, iter=10, max_epochs=2))
        torch.save(loss.pgm.state_dict(), os.path.join(out_dir, f'uneven{rank}.pt'))


def test_refresh_with_an_empty_bank_on_one_rank_does_not_deadlock(tmp_path):
    context = mp.start_processes(_worker_uneven_banks, args=(str(tmp_path / 'store'),
                                                             str(tmp_path)), nprocs=2,
                                 join=False, start_method='spawn')
    deadline = time.time() + 120
    while not context.join(timeout=1):
        assert time.time() < deadline, 'refresh deadlocked'
    r0 = safe_torch_load(tmp_path / 'uneven0.pt')
    r1 = safe_torch_load(tmp_path / 'uneven1.pt')
    assert all(torch.equal(v, r1[k]) for k, v in r0.items())
    assert r0['proto_valid'].any()
