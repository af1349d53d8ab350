#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (libFuzzer), and
# fails on the first crash, with the input that crashed it saved under
# fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [TARGET ...]        FUZZ_SECONDS=N per target (default 30)
#
# Installs cargo-fuzz (pinned) if missing. The fuzz build instruments every
# crate, so its target directory and the growing corpora live under
# ~/.cache/fraudflight/ (override FUZZ_CACHE): shared by every clone on this
# machine, a rerun rebuilds only what changed and starts from what earlier
# runs found. The committed seeds in fuzz/seeds/<target>/ are read, never
# written. libFuzzer needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1
# lets the installed stable compiler accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
SECONDS_EACH=${FUZZ_SECONDS:-30}
CACHE=${FUZZ_CACHE:-$HOME/.cache/fraudflight}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(json_record csv_replay flight_request model_meta model_onnx)

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --quiet
fi

export RUSTC_BOOTSTRAP=1
FUZZ=(cargo fuzz run --fuzz-dir fuzz -s none -O --target-dir "$CACHE/fuzz-target")
summary=target/fuzz/summary.txt
mkdir -p target/fuzz
: >"$summary"

for t in "${TARGETS[@]}"; do
  corpus=$CACHE/fuzz-corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  log=target/fuzz/$t.log
  # An ONNX file is larger than a record: the shipped model (the seed) is 113 KB.
  max_len=65536
  if [ "$t" = model_onnx ]; then max_len=262144; fi
  echo "fuzz: $t for ${SECONDS_EACH}s"
  if ! "${FUZZ[@]}" "$t" "$corpus" "fuzz/seeds/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
    -max_len="$max_len" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED (log $log; crashing input under fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
  printf '%-15s %12s executions  %6s coverage points  %6s corpus inputs  no crash\n' "$t" "${runs:-?}" "${cov:-?}" "${corp:-?}" | tee -a "$summary"
done
