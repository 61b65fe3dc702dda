#!/usr/bin/env bash
# The core's cost in instructions, counted with callgrind (repeatable on a
# noisy machine, unlike seconds). Each measurement runs twice, with N and
# 2N events; the difference divided by N cancels the set-up.
# Usage: bash benches/callgrind.sh [N]   (default 20000; 2000 is quick)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
cargo build --release -q -p hedgerow-benches --bin core-cost
BIN=target/release/core-cost
# Instructions of one run, and what it printed.
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
# Instructions per event: (count(2N) - count(N)) / N.
per() {
    local mode=$1 arg=$2 n=$3
    local a b
    a=$(count "$mode" "$arg" "$n")
    b=$(count "$mode" "$arg" $((2 * n)))
    echo $(( (b - a) / n ))
}

echo "## heartbeat at the leader"
printf '%8s %24s\n' members "instructions/heartbeat"
declare -A HB
for m in 10 150 1000; do
    HB[$m]=$(per heartbeat "$m" "$N")
    printf '%8s %24s\n' "$m" "${HB[$m]}"
done

echo
echo "## view delta pushed to every member (a join or a leave)"
echo "   (members' heartbeats keep time moving; their cost is subtracted)"
printf '%8s %20s %22s\n' members "instructions/delta" "per member reached"
C=$((N / 20))
for m in 10 150 1000; do
    # Heartbeats fed in C and 2C iterations, from the binary's own report.
    h1=$("$BIN" churn "$m" "$C" | sed -n 's/.*heartbeats \([0-9]*\).*/\1/p')
    h2=$("$BIN" churn "$m" $((2 * C)) | sed -n 's/.*heartbeats \([0-9]*\).*/\1/p')
    a=$(count churn "$m" "$C")
    b=$(count churn "$m" $((2 * C)))
    d=$(( (b - a - (h2 - h1) * HB[$m]) / (2 * C) ))
    printf '%8s %20s %22s\n' "$m" "$d" $(( d / m ))
done

echo
echo "## send round at the leader (64-byte request in, handler's reply out)"
printf '%8s %22s\n' members "instructions/round"
for m in 10 150 1000; do
    printf '%8s %22s\n' "$m" "$(per send "$m" "$N")"
done

echo
echo "## decode of one frame, by message kind"
printf '%18s %10s %22s\n' kind bytes "instructions/decode"
for k in $("$BIN" decode list 1); do
    bytes=$("$BIN" decode "$k" 1 | sed -n 's/.*bytes \([0-9]*\).*/\1/p')
    printf '%18s %10s %22s\n' "$k" "$bytes" "$(per decode "$k" "$N")"
done
