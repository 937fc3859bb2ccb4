#!/usr/bin/env bash
# Compile time and peak memory of quantizing compiles with calibration data (issue 12's
# targets): a Bi-Real-style ResNet-18 (32x32) at --bits 1 with 64 calibration samples,
# under 20 s; a ResNet-18 (224x224) at --bits 4 with 64 samples, under 30 s; and the
# peak memory at 16 and 64 samples, which should stay flat.
#
#     bench/compile_time.sh                 # the figures of bench/README.md
#     QCC=/path/to/old/qcc SAMPLES="4" bench/compile_time.sh     # another qcc, fewer samples
#
# Needs a release build of qcc (or QCC=...), GNU time (/usr/bin/time) and, the first
# time, Python with numpy and onnx to write the models and random calibration images
# into bench/out/ (PYTHON=..., default /work/venv/bin/python if present, else python3).
# Prints one line per run: model, bits, samples, wall seconds, user+sys CPU seconds,
# peak resident memory (MB), and the phase times qcc reports with QCC_PHASE_TIMES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
qcc=${QCC:-${CARGO_TARGET_DIR:-target}/release/qcc}
samples=${SAMPLES:-"16 64"}
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x /work/venv/bin/python ]; then py=/work/venv/bin/python; else py=python3; fi
fi
mkdir -p bench/out
for v in birealnet resnet18; do
  [ -f bench/out/$v.onnx ] && [ -f bench/out/${v}_calib64.npz ] && continue
  "$py" bench/gen_resnet18.py $v bench/out/$v.onnx --calib bench/out/${v}_calib64.npz --samples 64
done
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# qcc: $qcc"
printf '%-10s %4s %7s %8s %8s %8s  %s\n' model bits samples wall_s cpu_s rss_MB phases
for run in "birealnet 1" "resnet18 4"; do
  set -- $run
  for n in $samples; do
    log=bench/out/compile_$1_b$2_n$n.log
    QCC_PHASE_TIMES=1 /usr/bin/time -f "TIME %e %U %S %M" "$qcc" compile bench/out/$1.onnx \
      --bits "$2" --calib bench/out/$1_calib64.npz --calib-limit "$n" \
      -o bench/out/compile_$1_b$2.o >"$log" 2>&1 || { echo "$1: failed, see $log"; exit 1; }
    read -r _ wall user sys rss < <(grep '^TIME' "$log")
    phases=$(grep '^phase' "$log" | sed 's/^phase //; s/: /=/; s/ s$//' | tr '\n' ' ')
    printf '%-10s %4s %7s %8s %8.2f %8d  %s\n' "$1" "$2" "$n" "$wall" \
      "$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')" $((rss / 1024)) "$phases"
  done
done
