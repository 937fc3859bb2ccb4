#!/usr/bin/env bash
# Accuracy against average weight bits on the committed digits models (the README's
# table): uniform --bits, and --budget avg-bits=X chosen by the exact solver and by
# DQA-attention. Prints `model method setting avg_bits top1 agreement` per row.
# Needs a release build of qcc; calibrates on 200 training images, evaluates on the
# 360-image test split (JIT).
set -euo pipefail
cd "$(dirname "$0")/.."
qcc=${CARGO_TARGET_DIR:-target}/release/qcc
data=tests/models/digits_test.npz
calib=(--calib tests/models/digits_train.npz --calib-limit 200)
out=${OUT:-bench/out/bits}
mkdir -p "$out"

row() { # model method setting flags...
  local model=$1 method=$2 setting=$3; shift 3
  local tag=$(basename "$model" .onnx)_${method}_${setting//[=,.]/_}
  "$qcc" eval "tests/models/$model" --data "$data" "${calib[@]}" "$@" --quiet \
    >"$out/$tag.txt" 2>&1 || { echo "$model $method $setting FAILED"; tail -3 "$out/$tag.txt"; return; }
  local top1 agree bits
  top1=$(grep -m1 '^compiled' "$out/$tag.txt" | sed 's/.*: *\([0-9.]*\)%.*/\1/')
  agree=$(grep -m1 '^agreement' "$out/$tag.txt" | sed 's/.*: *\([0-9.]*\)%.*/\1/')
  bits=$(grep -m1 'average weight bits' "$out/$tag.txt" | sed 's/.*average weight bits \([0-9.]*\).*/\1/')
  echo "$model $method $setting ${bits:--} $top1 $agree"
}

for model in ${MODELS:-digits_resnet_folded.onnx digits_cnn_folded.onnx}; do
  for b in 8 4 3 2; do row "$model" uniform "bits=$b" --bits "$b"; done
  for x in ${BUDGETS:-4 3 2.5 2}; do
    row "$model" exact "avg-bits=$x" --budget "avg-bits=$x" --select exact
    row "$model" attention "avg-bits=$x" --budget "avg-bits=$x" --select attention
  done
done
