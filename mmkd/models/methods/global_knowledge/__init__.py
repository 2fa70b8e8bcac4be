from .prototype_generation import (PrototypeGenerationModule, density_filter,
                                   joint_coefficients, joint_matching_pursuit, robustness)
from .pgm_hook import PGMHook, offline_pipeline, select_images
from .robust_distilling import RobustDistillingModule, gk_levels, gk_masked_error

__all__ = ['PGMHook', 'PrototypeGenerationModule', 'offline_pipeline', 'select_images', 'RobustDistillingModule', 'density_filter',
           'gk_levels', 'gk_masked_error', 'joint_coefficients', 'joint_matching_pursuit',
           'robustness']
