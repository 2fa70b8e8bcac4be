from .runner_setup import (add_mmkd_hooks, default_work_dir, is_distill, load_config,
                           set_local_rank_env, setup_cpu_distributed, student_model_cfg)

__all__ = ['add_mmkd_hooks', 'default_work_dir', 'is_distill', 'load_config',
           'set_local_rank_env', 'setup_cpu_distributed', 'student_model_cfg']
