#!/usr/bin/env bash
# The "When does the ViT win?" figure of docs/experiments.md: a training-size sweep on PACS cartoon (7 classes)
# in a throwaway copy of this project, then `vitbench summarize --by`.
#
#   benchmarks/sweep_pacs.sh [WORKDIR] [SEEDS] [JOBS] [MIN_STEPS]
#   (defaults: /tmp/vitbench-sweep-pacs; 2 seeds; 2 jobs; a step budget of 200 per phase)
#
# MIN_STEPS is train.min_steps for every experiment: each training phase runs at least that many
# optimizer steps, so at 5 images per class a model is not judged on the handful of steps its
# epochs give (docs/recipe.md, "Step budgets"). MIN_STEPS=null runs the plain epoch recipe of the
# figures in benchmarks/results/sweep_pacs.md.
#
# Four models at 5, 10, 25, 50 and all training images per class, 2 seeds: two sweeps in one queue
# (FIFO, JOBS at a time), 20 experiments, about an hour on 2 idle cores:
#   1. the from-scratch CNN: cnn_finetuned with -S cnn.pretrained=false (random init: its first
#      phase trains the whole network, `registry.train_base_from_scratch`), 64 px, 10 epochs
#      per phase; only queued (--no-start);
#   2. the from-scratch ViT (vit_scratch, 32 px, train.epochs 10) and, with the shared real
#      weights, the matched pair at 112 px, 3 epochs per phase (-S cnn.epochs=3
#      -S vit_ft.epochs=3): fine-tuned MobileNetV2 (cnn_finetuned) and fine-tuned DeiT-Ti/16
#      (vit_finetuned), recipes of preset matched; this call starts the queue and waits.
# Online augmentation stays params.yaml's for every model. `summarize --by` draws
# cnn_finetuned with random init as its own line (metrics/<id>.json: pretrained false).
# The measured run ran these experiments, with the same names and params, in
# several batches on a partly loaded machine (benchmarks/results/sweep_pacs.md has the commands).
#
# The copy runs its own snapshot of src/ (PYTHONPATH), so edits to this checkout do not change a
# sweep in flight. fetch, clean and split run once at the baseline and are committed, so every
# experiment starts from the cleaned images (fetch only re-checks the folder's fingerprint).
# Results: benchmarks/results/sweep_pacs.md, docs/img/sweep_pacs.png.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/vitbench-sweep-pacs}
seeds=${2:-2}
jobs=${3:-2}
min_steps=${4:-200}
data=$(cd "$repo/../shared/datasets/pacs_cartoon" && pwd)
weights=$(cd "$repo/../shared/weights" && pwd)
export PATH="$repo/.venv/bin:$PATH" PYTHONPATH="$work/src"

rm -rf "$work"
python - "$repo" "$work" "$data" "$weights" <<'EOF'
import sys
from pathlib import Path
repo, work, data, weights = sys.argv[1:]
sys.path.insert(0, f"{repo}/tests")
from dvc_project import commit, copy_project, set_params

recipe = {"transfer": {"lr": 1.0e-3, "weight_decay": 0.01, "warmup": 0.1, "label_smoothing": 0.1},
          "finetune": {"lr": 3.0e-5, "weight_decay": 0.01, "warmup": 0.1, "label_smoothing": 0.1}}
project = copy_project(Path(repo), Path(work), "sweep baseline")
set_params(project, {
    "seed": 1,                                   # the sweep's seed 1: fetch/clean/split reused
    "dataset": {"source": data},                 # absolute: queued runs execute in temp copies
    "augment": {"copies": 0},                    # online augmentation only
    "train": {"epochs": 10, "patience": 3},      # vit_scratch
    # cnn.epochs, vit_ft.epochs: 5 here, set by -S in every experiment that trains them (3 or 10)
    "cnn": {"image_size": 112, "pretrained": True, "epochs": 5,
            "weights": f"{weights}/mobilenet_v2_1.0_224_no_top.h5", **recipe},
    "vit": {"image_size": 32},
    "vit_ft": {"variant": "ti16", "image_size": 112, "pretrained": True, "epochs": 5,
               "weights": f"{weights}/deit_tiny_patch16_224.npz", "blocks": None,
               "normalize": "auto", **recipe},
    "evaluate": {"robustness": False, "attention_samples": 2},
    "compare": {"samples": 4},
})
commit(project, "PACS sweep params")
EOF
cd "$work"
nice -n 5 dvc repro split
git add -A && git -c user.email=sweep@vitbench.local -c user.name=sweep commit -qm "fetch, clean, split"
budget=(-S "train.min_steps=$min_steps")
scratch_cnn=("${budget[@]}" -S cnn.pretrained=false -S cnn.image_size=64 -S cnn.epochs=10 --seeds "$seeds" --model cnn_finetuned)
nice -n 5 vitbench sweep -S split.max_train_per_class=5,10,25,50,null "${scratch_cnn[@]}" --no-start
pair=("${budget[@]}" -S cnn.epochs=3 -S vit_ft.epochs=3 --seeds "$seeds" --model vit_scratch --model cnn_finetuned --model vit_finetuned)
time nice -n 5 vitbench sweep -S split.max_train_per_class=5,10,25,50,null "${pair[@]}" --jobs "$jobs"
PYTHONPATH="$repo/src" vitbench summarize --by split.max_train_per_class   # this checkout's summarize
