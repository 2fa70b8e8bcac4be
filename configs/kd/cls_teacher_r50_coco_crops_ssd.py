# The "ssd" DICOD teacher: as cls_teacher_r50_coco_crops.py, but trained on SSD's input
# convention (RGB, mean subtracted, std 1), like the released DICOD teacher. With it the
# distiller's input conversion is the identity for an SSD300 student, and DICOD's pixel
# term is measured on SSD's scale, as in the original.
#   python tools/train_cls_teacher.py configs/kd/cls_teacher_r50_coco_crops_ssd.py
_base_ = './cls_teacher_r50_coco_crops.py'
model = dict(data_preprocessor=dict(std=[1.0, 1.0, 1.0]))
