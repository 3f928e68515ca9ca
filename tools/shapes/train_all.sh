#!/bin/bash
# The whole shapes-model pipeline, in the order and with the settings that produced models/shapes.
# Stage times on this machine (2 cores, shared) are in docs/shapes.md. torch 2.15.0, transformers
# 5.24.0, diffusers 0.42.1, tokenizers 0.23.3, numpy 2.4.6, Pillow 13.0.0; seeds are in each script.
#   WORK=/tmp/shapes-work bash tools/shapes/train_all.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-/tmp/shapes-work}
OUT=${OUT:-models/shapes}
S=tools/shapes
python3 $S/build_data.py --work "$WORK"                                   # pool, edit pairs, canonical targets, tokenizer.json
python3 $S/train_tower.py --work "$WORK" --steps 800 --batch 128 --lr 2e-3 --threads 2            # SigLIP, random batches
python3 $S/train_tower.py --work "$WORK" --resume --hard-negatives --steps 600 --batch 128 --lr 1e-3 --threads 2
#   (each tower run ends by recentring the last layer into WORK/siglip_mm and encoding every picture)
python3 $S/train_visualizer.py --work "$WORK" --stage vae --steps 600 --batch 16 --threads 1
python3 $S/train_llm.py --work "$WORK" --out "$WORK/mm" --steps 1500 --save-every 250 --threads 1 &
python3 $S/train_visualizer.py --work "$WORK" --stage unet --steps 900 --batch 32 --pool 8000 --threads 1
wait
python3 $S/train_visualizer.py --work "$WORK" --stage unet --resume --steps 750 --batch 32 --pool 8000 --lr 3e-4 --threads 2
wait
python3 $S/export.py --work "$WORK" --out "$OUT"
