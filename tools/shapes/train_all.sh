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
# Tower, phase A: sigmoid loss against one-attribute phrases (learnt table, own temperature/bias),
# half of every batch in same-but-shape groups; then the text tower alone aligned to the frozen
# vision tower with the caption loss. Each run ends by recentring the last layer into
# WORK/siglip_mm and encoding every picture (docs/shapes.md, "Why shape is slow").
python3 $S/train_tower.py --work "$WORK" --steps 600 --batch 128 --lr 1e-3 --threads 2 \
    --caption-weight 0 --attribute-texts 1.0 --attribute-table --hard-negatives
# ... continued 1 500 steps (a warm restart; the phrase table starts afresh) with the shape rows
# weighted x3: shape zero-shot 0.65 -> 1.00, token probe shape 0.70 -> 0.998.
python3 $S/train_tower.py --work "$WORK" --resume --steps 1500 --batch 128 --lr 1e-3 --threads 2 \
    --caption-weight 0 --attribute-texts 1.0 --attribute-table --hard-negatives --shape-weight 3 --save-every 250
python3 $S/train_tower.py --work "$WORK" --resume --freeze-vision --steps 250 --batch 128 --lr 1e-3 --threads 1
python3 $S/build_extra.py --work "$WORK"                                  # 6 000 shapes in unnamed colours
python3 $S/train_visualizer.py --work "$WORK" --stage vae --steps 600 --batch 16 --threads 1
# The decoder alone, continued on the frozen encoder's latents (posterior samples, as the UNet sees
# them): the latent space does not move, so this can run at any time, before or after the UNet.
python3 $S/train_visualizer.py --work "$WORK" --stage vae --decoder-only --steps 1500 --batch 32 --pool 36000 --lr 1e-3 --threads 2 --save-every 250
python3 $S/train_visualizer.py --work "$WORK" --stage vae --decoder-only --steps 1500 --batch 32 --pool 16000 --lr 5e-4 --threads 1 --save-every 250
# UNet: 900 steps, then resumed for 750 (lr 3e-4) and 1 000 (lr 3e-4, --pool 16000) on earlier
# towers' tokens, then 2 000 (lr 4e-4), 1 000, 1 300 and 1 200 (lr 2e-4) on this tower's (docs/shapes.md):
# this script reproduces the recipe, not those exact weights.
python3 $S/train_visualizer.py --work "$WORK" --stage unet --steps 900 --batch 32 --pool 8000 --threads 1 &
python3 $S/train_llm.py --work "$WORK" --out "$WORK/mm" --steps 3000 --save-every 1000 --threads 1 --extra-frac 0.4
wait
# ... resumed 1 500 steps at a lower learning rate with a new data order: held-out generation
# requests on the right visual tokens 88% -> 100% (docs/shapes.md, ablation table).
python3 $S/train_llm.py --work "$WORK" --out "$WORK/mm" --resume "$WORK/mm" --steps 1500 --lr 3e-4 --seed 4 --extra-frac 0.4 --threads 1 --save-every 500
python3 $S/train_visualizer.py --work "$WORK" --stage unet --resume --steps 750 --batch 32 --pool 8000 --lr 3e-4 --threads 2
python3 $S/train_visualizer.py --work "$WORK" --stage unet --resume --steps 1000 --batch 32 --pool 16000 --lr 3e-4 --threads 2
python3 $S/train_visualizer.py --work "$WORK" --stage unet --resume --steps 2000 --batch 32 --pool 16000 --lr 4e-4 --threads 2 --save-every 500
python3 $S/train_visualizer.py --work "$WORK" --stage unet --resume --steps 1000 --batch 32 --pool 16000 --lr 2e-4 --threads 2 --save-every 250
python3 $S/train_visualizer.py --work "$WORK" --stage unet --resume --steps 1300 --batch 32 --pool 16000 --lr 2e-4 --threads 2 --save-every 250
python3 $S/train_visualizer.py --work "$WORK" --stage unet --resume --steps 1200 --batch 32 --pool 16000 --lr 2e-4 --threads 1 --save-every 200
python3 $S/export.py --work "$WORK" --out "$OUT"
