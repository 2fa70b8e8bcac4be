from .distill_detector import DistillDetector, freeze, num_classes_of

__all__ = ['DistillDetector', 'freeze', 'num_classes_of']
