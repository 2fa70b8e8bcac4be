from .descriptors import box_descriptors, int_crop_cells, int_crop_descriptors
from .pgm_hook import PGMHook, offline_pipeline, pgm_population
from .prototype_generation import (PrototypeGenerationModule, density_filter, joint_coefficients,
                                   joint_matching_pursuit, robustness)
from .robust_distilling import RobustDistillingModule, gk_levels, gk_masked_error

__all__ = ['PGMHook', 'PrototypeGenerationModule', 'RobustDistillingModule', 'box_descriptors',
           'density_filter', 'gk_levels', 'gk_masked_error', 'int_crop_cells',
           'int_crop_descriptors', 'joint_coefficients', 'joint_matching_pursuit',
           'offline_pipeline', 'pgm_population', 'robustness']
