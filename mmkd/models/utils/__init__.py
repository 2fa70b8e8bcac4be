from .box_mask import paint_batch_masks, paint_box_mask
from .loss_balance import LossBalancer
from .progress import TrainProgress
from .recorder import MethodRecorder
from .teacher_inputs import TeacherInputAdapter

__all__ = ['LossBalancer', 'MethodRecorder', 'TeacherInputAdapter', 'TrainProgress',
           'paint_batch_masks', 'paint_box_mask']
