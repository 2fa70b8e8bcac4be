#!/usr/bin/env bash
# The main job on the built-in data, from a fresh clone:
#   1. set up the environment (tools/setup_env.sh; builds mmcv once per machine),
#   2. generate the synthetic COCO-format data set (data/synthetic),
#   3. train the teacher (Faster R-CNN R34 half width), the plain student (R18 quarter width)
#      and the distilled student (same student + mmkd's FPN imitation and RoI KL losses),
#   4. evaluate all three with COCO mAP (pycocotools) and write a summary table.
# Steps already done are skipped, so an interrupted job continues where it stopped.
#   EPOCHS=12  training length of every model (learning-rate steps at 2/3 and 11/12)
#   WORK=work_dirs/main_job   output folder
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash tools/setup_env.sh
PY="${MMKD_VENV:-$REPO/.venv}/bin/python"
EPOCHS="${EPOCHS:-12}"
WORK="${WORK:-work_dirs/main_job}"
M1=$(( (EPOCHS * 2 + 2) / 3 )); M2=$(( (EPOCHS * 11 + 11) / 12 ))
SCHED=(train_cfg.max_epochs="$EPOCHS" train_cfg.val_interval="$EPOCHS"
       "param_scheduler.1.milestones=[$M1,$M2]" param_scheduler.1.end="$EPOCHS")
TEACHER_CKPT=checkpoints/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.pth

"$PY" tools/make_synthetic_data.py data/synthetic

train() {  # name config [extra cfg-options]
  local name=$1 cfg=$2; shift 2
  if [ -f "$WORK/$name/epoch_$EPOCHS.pth" ]; then
    echo "== $name: already trained ($WORK/$name/epoch_$EPOCHS.pth)"; return
  fi
  local resume=()
  [ -f "$WORK/$name/last_checkpoint" ] && resume=(--resume)
  echo "== training $name ($cfg, $EPOCHS epochs)"
  local t0=$(date +%s)
  "$PY" tools/train.py "$cfg" --work-dir "$WORK/$name" "${resume[@]}" \
    --cfg-options "${SCHED[@]}" "$@"
  echo "$(( $(date +%s) - t0 ))" > "$WORK/$name/train_seconds.txt"
}

train teacher configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py
mkdir -p "$(dirname "$TEACHER_CKPT")"
cp "$WORK/teacher/epoch_$EPOCHS.pth" "$TEACHER_CKPT"
train student configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py
train distilled configs/synthetic/kd_feat_kl_r34w32_r18w16_12e_synthetic.py \
  model.teacher_ckpt="$TEACHER_CKPT"

evaluate() {  # name config checkpoint
  "$PY" tools/test.py "$2" "$3" --eval bbox --work-dir "$WORK/$1/test" \
    | grep -o "'coco/bbox_mAP': [0-9.]*\|'coco/bbox_mAP_50': [0-9.]*" | tr '\n' ' '
}
{
  echo "| model | checkpoint | train time (s) | COCO val metrics |"
  echo "|---|---|---|---|"
  for row in "teacher configs/synthetic/faster_rcnn_r34w32_fpn_12e_synthetic.py $WORK/teacher/epoch_$EPOCHS.pth" \
             "student configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py $WORK/student/epoch_$EPOCHS.pth" \
             "distilled configs/synthetic/faster_rcnn_r18w16_fpn_12e_synthetic.py $WORK/distilled/epoch_${EPOCHS}_student.pth"; do
    set -- $row
    echo "| $1 | \`$3\` | $(cat "$WORK/$1/train_seconds.txt" 2>/dev/null || echo '?') | $(evaluate "$1" "$2" "$3") |"
  done
} | tee "$WORK/summary.md"
echo "summary written to $WORK/summary.md; the distilled student for plain mmdet is $WORK/distilled/epoch_${EPOCHS}_student.pth"
