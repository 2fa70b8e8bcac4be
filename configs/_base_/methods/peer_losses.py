# The released settings of the peer FPN losses, defined once for their COCO and synthetic
# configs (sources in docs/methods/peer_methods.md):
# * PKD: MMRazor pkd_fpn_*: weight 6 (Faster R-CNN) / 10 (RetinaNet) on FPN levels 0-3, the
#   student map resized to the teacher's on a size mismatch (resize_stu);
# * CWD: MMRazor cwd_fpn_frcnn (tau 1, weight 10, all levels) and pppppM's RetinaNet config
#   (tau 1, weight 5, levels 0-3);
# * FGD: yzd-v/FGD's official configs, with the released mask rule (boxes scaled by img_shape,
#   inclusive floor..ceil cells);
# * MGD: yzd-v/MGD's official configs (alpha_mgd is loss_weight, lambda_mgd mask_ratio);
# * the official FGD and MGD RetinaNet recipes (and MMRazor's MGD) start the student's neck and
#   head from the teacher: model.init_student_from_teacher=retinanet_teacher_init.
pkd_faster_rcnn = dict(type='PKDLoss', levels=[0, 1, 2, 3], loss_weight=6.0, resize_student=True)
pkd_retinanet = dict(type='PKDLoss', levels=[0, 1, 2, 3], loss_weight=10.0, resize_student=True)
cwd_faster_rcnn = dict(type='ChannelWiseDistillLoss', tau=1.0, loss_weight=10.0)
cwd_retinanet = dict(type='ChannelWiseDistillLoss', tau=1.0, levels=[0, 1, 2, 3],
                     loss_weight=5.0)
fgd_faster_rcnn = dict(type='FGDLoss', temperature=0.5, alpha_fg=5e-5, beta_bg=2.5e-5,
                       gamma_attn=5e-5, lambda_global=5e-7, levels=[0, 1, 2, 3],
                       mask_rule='released')
fgd_retinanet = dict(type='FGDLoss', temperature=0.5, alpha_fg=1e-3, beta_bg=5e-4,
                     gamma_attn=5e-4, lambda_global=5e-6, mask_rule='released')
mgd_faster_rcnn = dict(type='MGDLoss', mask_ratio=0.45, levels=[0, 1, 2, 3], loss_weight=5e-7)
mgd_retinanet = dict(type='MGDLoss', mask_ratio=0.65, loss_weight=2e-5)
retinanet_teacher_init = ['neck', 'bbox_head']
# The official FGD and MGD recipes clip gradients at max-norm 35.
fgd_mgd_clip_grad = dict(max_norm=35, norm_type=2)
