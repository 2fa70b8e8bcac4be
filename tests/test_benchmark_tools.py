"""The benchmark tools run (their numbers are reported in docs/benchmarks.md, not asserted)."""
from conftest import KD_CFG, data_options, run_tool

GK_CFG = 'configs/synthetic/kd_pgm_r34w32_r18w16_12e_synthetic.py'


def test_benchmark_step_runs(synthetic_data):
    out = run_tool(['tools/benchmark_step.py', KD_CFG, '--iters', '1', '--warmup', '0',
                    '--cfg-options', *data_options(synthetic_data)]).stdout
    assert 'ratio distilled/plain' in out and 'markdown row' in out


def test_benchmark_pgm_runs(synthetic_data):
    out = run_tool(['tools/benchmark_pgm.py', GK_CFG, '--iters', '1', '--warmup', '0',
                    '--cfg-options', *data_options(synthetic_data),
                    'model.distill_losses.loss_gk.pgm.min_size=4']).stdout
    assert 'offline PGM pass' in out and 'online PGM: refresh' in out
