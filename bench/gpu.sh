#!/bin/bash
# Issue 8 item 6 in one prepared call: DenseNet-121 goal-conditioned on CUDA, a 16-rotation forward
# and a whole training iteration, old against ours, and a training iteration's peak CUDA memory.
# About 6-8 minutes on one H200; results go to $OUT (the device tool) or bench/results.
#   bash bench/gpu.sh            # with the python that has torch (PY=... to choose)
# The device tool's image has torch but not mujoco or tensorboardX: carry their wheels and EGL's
# libraries as /work/.library/device/README.md says (bench/forward.py needs neither).
set -u
export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEST=${OUT:-bench/results}
DAY=$(date +%F)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$DEST/gpu-$DAY.txt" 2>&1
# each bench its own process, so one failing leaves the others' figures
timeout 240 $PY bench/forward.py --backbones densenet121 tiny16 --devices cuda --repeats 3 \
    --out "$DEST/forward-$DAY-cuda.json" || echo "forward bench failed rc=$?"
timeout 240 $PY bench/iteration.py --backbone densenet121 --device cuda --stage push_grasp --iterations 3 \
    --out "$DEST/iteration-$DAY-densenet121-cuda.json" || echo "densenet iteration bench failed rc=$?"
timeout 90 $PY bench/iteration.py --backbone tiny16 --device cuda --iterations 8 \
    --out "$DEST/iteration-$DAY-tiny16-cuda.json" || echo "tiny16 iteration bench failed rc=$?"
ls -la "$DEST"
