#!/usr/bin/env bash
# Compiles the ResNet-20-style model at each bit width given (f32 for none), links it
# with harness.c and prints `label median_us min_us calls`. Needs bench/out/resnet20.onnx
# (bench/run.py or gen_resnet20.py writes it) and a release build of qcc. CPU=NAME passes
# --cpu NAME (e.g. x86-64-v3) to qcc compile.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-3}
qcc=${CARGO_TARGET_DIR:-target}/release/qcc
for b in "$@"; do
  name=r20_b$b; flags=(--bits "$b")
  if [ "$b" = f32 ]; then name=r20_f32; flags=(); fi
  if [ -n "${CPU:-}" ]; then flags+=(--cpu "$CPU"); fi
  "$qcc" compile bench/out/resnet20.onnx -o bench/out/$name.o --name $name \
    --report bench/out/$name.json "${flags[@]}" >/dev/null 2>&1
  cc -O2 -Ibench/out -Iruntime/c -DQCC_HEADER="\"$name.h\"" -DQCC_PREFIX=$name bench/harness.c \
    bench/out/$name.o runtime/c/qcc_runtime.c -lpthread -o bench/out/$name
  echo "$b $(bench/out/$name "$secs" "${THREADS:-1}")"
done
