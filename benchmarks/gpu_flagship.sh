#!/usr/bin/env bash
# The flagship model's GPU sitting, as one prepared command: install bfcnn on a bare GPU machine without network
# (the packages it lacks travel as wheels), train the flagship (configs/flagship.yaml: the shipped default
# bf_drunet_small_cpu, continued from its committed weights, with GPU-sized batches of 64 crops of 96; --config
# configs/bf_dncnn_color.yaml trains the BF-DnCNN 20 x 64 of the paper instead, --init-from NAME|FILE continues
# other weights) with bf16 and torch.compile for a given number of minutes (the cosine schedule spans them), run
# short GPU versions of the benchmarks (training step,
# inference, explain), and write weights, metrics and benchmark results to one output folder.
#
#   bash benchmarks/gpu_flagship.sh --prepare                  # here (network, ../shared): .whl/ and .data/
#   bash benchmarks/gpu_flagship.sh --minutes 6 --out "$OUT"   # on the GPU machine (carry .whl and .data)
#   bash benchmarks/gpu_flagship.sh --dry-run --out /tmp/dry   # on a CPU: every step, seconds long (CI runs it)
#
# Budget on an H100/H200 (about 8 minutes in all): install ~20 s, training --minutes, benchmarks ~1.5 min.
# Afterwards, here: evaluate $OUT/model.safetensors on CBSD68 and Kodak24 (bfcnn evaluate), and ship it with
# its card if it beats the shipped one (bfcnn/pretrained/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MINUTES=6
OUT_DIR=${OUT:-runs/gpu_flagship}
MODE=run
CONFIG=configs/flagship.yaml
INIT=
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    --minutes) MINUTES="$2"; shift ;;
    --out) OUT_DIR="$2"; shift ;;
    --config) CONFIG="$2"; shift ;;
    --init-from) INIT="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_flagship.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$MINUTES" in ''|*[!0-9.]*) echo "gpu_flagship.sh: --minutes takes a number, got '$MINUTES'" >&2; exit 2 ;; esac

if [ "$MODE" = prepare ]; then
  # the wheels the GPU machine's python3 (3.12) lacks, and the training images (../shared does not travel)
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo /.data/ >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    albumentations==2.0.8 albucore==0.0.24 simsimd stringzilla pydantic==2.11.10 pydantic_core==2.33.2 \
    annotated-types typing-inspection pytorch-msssim==1.0.0
  mkdir -p .data && cp -r ../shared/data/train/CBSD432 .data/
  du -sh .whl .data
  echo "now: device run with carry [.whl, .data] and: bash benchmarks/gpu_flagship.sh --minutes $MINUTES"
  exit 0
fi

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d)
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && [ "$MODE" = run ]; then
  python3 -m pip install -q --no-index --no-deps --target "$WORK/site" .whl/*.whl
  export PYTHONPATH="$ROOT:$WORK/site"
fi
python3 - <<'EOF' > "$OUT_DIR/env.txt" 2>&1 || true
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF

if [ "$MODE" = dry ]; then  # CPU, a few steps on the photos scikit-image ships, tiny benchmarks
  DEVICE=cpu
  TRAIN_SET=(--set device=cpu --set train.time_limit=20s --set train.total_steps=2 --set train.checkpoint_every=2
             --set train.precision=fp32 --set train.compile=false --set train.validation_crop=64
             --set "dataset={type: sample_images, batch_size: 2, input_shape: [32, 32, 3]}")
  BENCH_TRAIN=(--device cpu --steps 4 --chunk 2 --warmup 1 --crop 32 --batch 2 --depth 3 --filters 8)
  BENCH_DENOISE=(--device cpu --sizes 0.05)
  BENCH_EXPLAIN=(jacobian --device cpu --paper-rows 2 --depth 3 --filters 8 --crop 12)
else
  DEVICE=cuda
  DATA=.data/CBSD432
  [ -d "$DATA" ] || DATA=../shared/data/train/CBSD432
  [ -d "$DATA" ] || { echo "gpu_flagship.sh: no training images (.data/CBSD432): run --prepare here first" >&2; exit 2; }
  TRAIN_SET=(--set device=cuda --set "train.time_limit=${MINUTES}m" --set train.precision=bf16
             --set train.compile=true --set train.channels_last=true
             --set "dataset.directory=$DATA" --set train.checkpoint_every=2000
             --set train.log_every=200 --set train.progress=false
             --set dataset.batch_size=64 --set "dataset.input_shape=[96, 96, 3]")
  BENCH_TRAIN=(--device cuda --steps 60 --crop 50 --batch 128 --depth 20 --filters 64)
  BENCH_DENOISE=(--device cuda --sizes 1 12)
  BENCH_EXPLAIN=(jacobian --device cuda)
fi
if [ -n "$INIT" ]; then TRAIN_SET+=(--set "train.init_from=$INIT"); fi

echo "== training ($MODE, $DEVICE)"
status=0
python3 -m bfcnn.train --model-directory "$WORK/run" --pipeline-config "$CONFIG" "${TRAIN_SET[@]}" \
  > "$OUT_DIR/train.log" 2>&1 || status=$?
tail -n 5 "$OUT_DIR/train.log"
for f in model.safetensors metrics.jsonl config.yaml; do
  [ -f "$WORK/run/$f" ] && cp "$WORK/run/$f" "$OUT_DIR/"
done
echo "== benchmarks"
{ python3 benchmarks/bench_train.py "${BENCH_TRAIN[@]}" || echo "bench_train failed: $?"; } > "$OUT_DIR/bench_train.txt" 2>&1
{ python3 benchmarks/bench_denoise.py "${BENCH_DENOISE[@]}" --json "$OUT_DIR/bench_denoise.jsonl" || echo "bench_denoise failed: $?"; } \
  > "$OUT_DIR/bench_denoise.txt" 2>&1
{ python3 benchmarks/bench_explain.py "${BENCH_EXPLAIN[@]}" || echo "bench_explain failed: $?"; } > "$OUT_DIR/bench_explain.txt" 2>&1
rm -rf "$WORK"
ls "$OUT_DIR"
exit "$status"
