#!/usr/bin/env bash
# Instructions per heartbeat at the leader, by member count, counted with
# callgrind (repeatable on a noisy machine, unlike seconds). Each size runs
# twice, with H and 2H heartbeats; the difference divided by H cancels the
# set-up. Usage: bash benches/callgrind.sh [H]
set -euo pipefail
cd "$(dirname "$0")/.."
H=${1:-20000}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
cargo build --release -q -p hedgerow-benches --bin core-cost
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/core-cost "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%8s %14s %14s %22s\n' members "instr (H)" "instr (2H)" "instructions/heartbeat"
for n in 10 150 1000; do
    a=$(count "$n" "$H")
    b=$(count "$n" $((2 * H)))
    printf '%8s %14s %14s %22s\n' "$n" "$a" "$b" $(( (b - a) / H ))
done
