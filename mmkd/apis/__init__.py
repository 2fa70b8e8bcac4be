from .runner_setup import (add_common_args, add_mmkd_hooks, build_runner, config_from_args,
                           default_work_dir, enable_amp, is_distill, load_config,
                           setup_cpu_distributed, student_model_cfg)

__all__ = ['add_common_args', 'add_mmkd_hooks', 'build_runner', 'config_from_args',
           'default_work_dir', 'enable_amp', 'is_distill', 'load_config',
           'setup_cpu_distributed', 'student_model_cfg']
