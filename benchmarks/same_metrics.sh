#!/usr/bin/env bash
# Does a refactor change results? Runs the tiny DAG (tests/dvc_project.py's TINY, 2 epochs, online
# augmentation off) at two commits, op-deterministic (TF_DETERMINISTIC_OPS=1), same seed, with this
# checkout's venv, and prints the quality metrics of every model side by side plus a data diff.
#   bash benchmarks/same_metrics.sh BEFORE AFTER     (two commits: before / after a refactor)
# Keys a commit does not know (vit_ft.blocks before it existed) are left out for both.
set -euo pipefail
repo=$(git rev-parse --show-toplevel); venv=$repo/.venv/bin; work=${WORK:-$(mktemp -d)}
run_at() {  # commit -> $work/<commit>/ with data/, metrics/ and repro.log
  local commit=$1 out=$work/$1
  mkdir -p "$out" && cd "$out"
  git -C "$repo" archive "$commit" dvc.yaml params.yaml stages src .dvc .dvcignore .gitignore | tar -x
  "$venv/python" -c "
import sys, yaml; sys.path.insert(0, '$repo/tests')
from dvc_project import TINY, deep_update
p = yaml.safe_load(open('params.yaml'))
tiny = {k: v for k, v in TINY.items() if k in p}
tiny = {k: {kk: vv for kk, vv in v.items() if kk in p[k]} if isinstance(v, dict) else v for k, v in tiny.items()}
deep_update(p, tiny); deep_update(p, {'train': {'epochs': 2, 'patience': 2}})
open('params.yaml', 'w').write(yaml.safe_dump(p, sort_keys=False))"
  git init -q -b main && git add -A && git -c user.email=a@b -c user.name=check commit -qm "$commit"
  PATH=$venv:$PATH PYTHONPATH=$out/src TF_DETERMINISTIC_OPS=1 TF_CPP_MIN_LOG_LEVEL=2 dvc repro > repro.log 2>&1
}
run_at "$1"; run_at "$2"
cd "$work"
"$venv/python" -c "
import json, pathlib
keys = ['accuracy', 'loss', 'f1_macro', 'top5_accuracy', 'epochs_run']
same = True
for f in sorted(pathlib.Path('$1/metrics').glob('*.json')):
    a, b = json.loads(f.read_text()), json.loads((pathlib.Path('$2/metrics') / f.name).read_text())
    if 'accuracy' not in a: continue
    row = {k: (a.get(k), b.get(k)) for k in keys}; same &= all(x == y for x, y in row.values())
    print(f.stem, row)
print('quality metrics identical' if same else 'quality metrics DIFFER')"
h() { (cd "$1" && find data -type f -print0 | sort -z | xargs -0 sha256sum); }
diff <(h "$1") <(h "$2") >/dev/null && echo "data identical: $(h "$1" | wc -l) files" || echo "data DIFFERS"
