#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (SanitizerCoverage
# through stable rustc flags; no nightly, no cargo-fuzz needed) and runs each for a
# while on its committed corpus.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s; import parse_ir diff)
#
# New inputs go to fuzz/new-corpus/TARGET (not committed; merge the useful ones into
# fuzz/corpus/TARGET with `-merge=1`); a crash, a hang or a mismatch is written to
# fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(import parse_ir diff); fi

host="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes, minus the sanitizer (-Zsanitizer needs nightly). The
# explicit --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --locked --target "$host" --bins
for t in "${targets[@]}"; do
  mkdir -p "new-corpus/$t" "artifacts/$t"
  echo "== fuzz $t for ${secs}s"
  "target/$host/release/$t" "new-corpus/$t" "corpus/$t" \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=65536 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1
done
