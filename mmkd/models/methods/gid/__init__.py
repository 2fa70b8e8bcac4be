from .general_instance import GeneralInstanceDistillLoss, normalised_distances, relation_loss
from .selection import class_probs, gi_scores, select_general_instances

__all__ = ['GeneralInstanceDistillLoss', 'class_probs', 'gi_scores', 'normalised_distances',
           'relation_loss', 'select_general_instances']
