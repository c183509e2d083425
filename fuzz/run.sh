#!/bin/sh
# Runs one fuzz target under AFL++ for a while (default 600 s), nice'd, resuming its out/ dir.
# Usage: fuzz/run.sh TARGET [SECONDS]   (needs `cargo install cargo-afl`; see docs/fuzzing.md)
set -eu
cd "$(dirname "$0")"
target=$1
secs=${2:-600}
# No UI (logs instead), no CPU pinning, no CPU-governor or core_pattern demands: a shared machine.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_AUTORESUME=1 AFL_NO_AFFINITY=1
mkdir -p out
cargo afl build --release --bin "$target"
exec nice -n 10 cargo afl fuzz -V "$secs" -i "seeds/$target" -o "out/$target" "target/release/$target"
