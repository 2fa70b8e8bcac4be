from .atomic_runner import AtomicSaveRunner
from .runner_setup import (add_common_args, add_mmkd_hooks, build_runner, check_eval_metrics,
                           check_resume, close_distributed, config_from_args, default_work_dir,
                           enable_amp, is_distill, load_config, preflight_train,
                           setup_cpu_distributed, setup_resume, student_model_cfg)

__all__ = ['AtomicSaveRunner', 'add_common_args', 'add_mmkd_hooks', 'build_runner',
           'check_eval_metrics', 'check_resume', 'close_distributed', 'config_from_args',
           'default_work_dir', 'enable_amp', 'is_distill', 'load_config', 'preflight_train',
           'setup_cpu_distributed', 'setup_resume', 'student_model_cfg']
