#!/usr/bin/env bash
# Accuracy and KL against float for the compile-time methods (issue 13; the table in
# docs/methods.md and the README): uniform min-max, --calib-method qil, --sequential and
# --budget, --act-method dqa, then --sq-ratio (SQ) in a second table, on the committed
# digits models. Prints markdown tables:
#   | model | bits | method | avg weight bits | top-1 % | mean KL vs float |
# top-1 and KL over the 360 test images (KL of the softmax against the float model).
# Needs a release build of qcc (cargo build --release -p qcc). bench/methods_plot.py draws
# the printed tables as docs/methods_plot.svg. CALIB picks the
# calibration data (default the digits training split; tests/models/photo_patches_8x8.npz
# is another distribution), LIMIT the number of calibration samples (default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
qcc=${CARGO_TARGET_DIR:-target}/release/qcc
data=tests/models/digits_test.npz
calib=${CALIB:-tests/models/digits_train.npz}
limit=${LIMIT:-500}
out=${OUT:-bench/out/methods}
mkdir -p "$out"

row() { # model bits method flags...
  local model=$1 bits=$2 method=$3; shift 3
  local tag=$(basename "$model" .onnx)_${bits}_${method//[ =,.-]/_}
  if ! "$qcc" eval "tests/models/$model" --data "$data" --calib "$calib" --calib-limit "$limit" \
      "$@" --quiet >"$out/$tag.txt" 2>&1; then
    echo "| $model | $bits | $method | FAILED: $(tail -1 "$out/$tag.txt") | | |"
    return
  fi
  local top1 kl avg
  top1=$(grep -m1 '^compiled (JIT) top-1' "$out/$tag.txt" | sed 's/.*: *\([0-9.]*\)%.*/\1/')
  kl=$(grep -m1 '^mean KL vs reference' "$out/$tag.txt" | sed 's/.*: *//')
  avg=$(grep -m1 'average weight bits' "$out/$tag.txt" | sed 's/.*average weight bits \([0-9.]*\).*/\1/')
  echo "| $model | $bits | $method | ${avg:--} | $top1 | $kl |"
}

echo "| model | bits | method | avg weight bits | top-1 % | mean KL vs float |"
echo "|---|---|---|---|---|---|"
for model in ${MODELS:-digits_resnet_folded.onnx digits_cnn_folded.onnx}; do
  for b in 3 2; do
    row "$model" "--bits $b" "min-max" --bits "$b"
    row "$model" "--bits $b" "qil" --bits "$b" --calib-method qil
    row "$model" "--bits $b" "sequential" --bits "$b" --sequential
    row "$model" "--bits $b" "qil + sequential" --bits "$b" --calib-method qil --sequential
    row "$model" "--bits $b" "dqa (multiply) + sequential" --bits "$b" --act-method dqa \
      --dqa-requant multiply --sequential
  done
  row "$model" "--wbits 8 --abits 3" "per-tensor" --wbits 8 --abits 3
  row "$model" "--wbits 8 --abits 3" "dqa scales" --wbits 8 --abits 3 --act-method dqa --dqa-ratio 0
  row "$model" "--wbits 8 --abits 3" "dqa" --wbits 8 --abits 3 --act-method dqa
  row "$model" "--wbits 8 --abits 3" "dqa, split readers" --wbits 8 --abits 3 --act-method dqa \
    --dqa-form split
  row "$model" "--wbits 8 --abits 3" "dqa, multiply" --wbits 8 --abits 3 --act-method dqa \
    --dqa-requant multiply
  row "$model" "--bits 1" "min-max" --bits 1
  row "$model" "--bits 1" "sequential" --bits 1 --sequential
  row "$model" "--wbits 2 --abits 8" "min-max" --wbits 2 --abits 8
  row "$model" "--wbits 2 --abits 8" "ternary" --wbits 2 --abits 8 --ternary
  row "$model" "--wbits 2 --abits 8" "sequential" --wbits 2 --abits 8 --sequential
  row "$model" "avg-bits=2" "budget (exact)" --budget avg-bits=2
  row "$model" "avg-bits=3" "budget (exact)" --budget avg-bits=3
done
# SQ (--sq-ratio): per-filter mixed precision, against uniform widths and the same split
# taken by filter index (--sq-pick index, whose only fit is SQ's gain re-fit: compare it
# with the --sq-refit gain rows). "mid" is the split layers' average weight bits.
echo
echo "| model | bits | method | avg weight bits | top-1 % | mean KL vs float |"
echo "|---|---|---|---|---|---|"
for model in ${MODELS:-digits_resnet_folded.onnx digits_cnn_folded.onnx}; do
  for b in 2 3 4; do
    row "$model" "--wbits $b --abits 8" "min-max" --wbits "$b" --abits 8
  done
  for split in "0.75 8 3.5" "0.75 4 2.5" "0.5 4 3"; do
    set -- $split
    sq=(--wbits 2 --abits 8 --sq-ratio "$1" --sq-high "$2")
    row "$model" "--wbits 2 --abits 8" "sq $1, high $2 (mid $3)" "${sq[@]}"
    row "$model" "--wbits 2 --abits 8" "sq gain re-fit $1, high $2 (mid $3)" "${sq[@]}" --sq-refit gain
    row "$model" "--wbits 2 --abits 8" "index split $1, high $2 (mid $3)" "${sq[@]}" --sq-pick index
    row "$model" "--wbits 2 --abits 8" "sq ternary $1, high $2 (mid $3)" "${sq[@]}" --ternary
  done
  row "$model" "--wbits 2 --abits 8" "sequential" --wbits 2 --abits 8 --sequential
done
