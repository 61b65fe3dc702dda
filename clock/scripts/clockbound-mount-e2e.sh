#!/usr/bin/env bash
# A `hedgerow node --clock clockbound` in a container-like mount namespace
# against the real ClockBound 2.0.3 daemon, stopped and restarted under it.
#
# The node (A) runs under `unshare -m` with the host's /var/run/clockbound
# bind-mounted read-only, as a pod's hostPath volume would be. A second
# node (B, system clock with an asserted bound) shares the SQLite store.
#   1. A leads on the daemon's segment.
#   2. The daemon stops and its segment is removed: A stops leading (its
#      clock says the segment is gone), B takes over, A stays a member.
#   3. The daemon starts again and writes a new segment: A maps it without
#      a restart and reads SYNCHRONIZED again.
#   4. B leaves (SIGTERM): A leads again.
#
# Needs root (chronyd, /var/run/clockbound, unshare -m) and the daemon
# (installed when missing, as clockbound-e2e.sh does). Outside CI a missing
# piece skips the test with a message; with CI=true it fails.
# Usage: clock/scripts/clockbound-mount-e2e.sh   (from anywhere in the repo)
set -euo pipefail

WAIT_SECS=${HEDGEROW_E2E_WAIT_SECS:-60}
repo=$(cd "$(dirname "$0")/../.." && pwd)

log() { echo "clockbound-mount-e2e: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
skip() {
    if [ "${CI:-}" = true ]; then die "$* (CI=true: not skipping)"; fi
    log "SKIPPED: $*"
    exit 0
}

[ "$(id -u)" = 0 ] || skip "needs root (chronyd, /var/run/clockbound, unshare -m)"
command -v unshare >/dev/null || skip "needs unshare (util-linux)"
command -v curl >/dev/null || skip "needs curl"
unshare -m true 2>/dev/null || skip "cannot make a mount namespace here (unshare -m refused)"

# shellcheck source=clock/scripts/clockbound-daemons.sh
. "$repo/clock/scripts/clockbound-daemons.sh"
why=$(cb_refuse_foreign_daemons) || skip "$why"
cb_install || skip "could not install chrony or clock-bound-d"

cd "$repo"
cargo build -q -p hedgerow-cli --bin hedgerow
bin=$repo/target/debug/hedgerow

cb_begin hedgerow-clockbound-mount

log "starting chronyd x2 and clockbound"
cb_start_chrony
install -d /var/run/clockbound
cb_start_clockbound
why=$(cb_wait_synchronized "$WAIT_SECS") || die "$why"

store="sqlite:$work/lease.db"
common=(--cluster mount-e2e --store "$store" --listen 127.0.0.1:0 --http 127.0.0.1:0
    --preset local --exit-on-stdin-eof)

# Starts a node whose stdout goes to $work/$1.out (its `ready` line) and
# stderr to $work/$1.log, stdin a pipe held by a sleeping writer; sets
# pid_$1 and http_$1 (its HTTP address) once it is ready. Not to be run in
# a subshell: the pids must reach the cleanup.
start_node() {
    local id=$1; shift
    mkfifo "$work/$id.in"
    "$@" <"$work/$id.in" >"$work/$id.out" 2>"$work/$id.log" &
    pids+=($!)
    eval "pid_$id=$!"
    sleep 1000000 >"$work/$id.in" &
    pids+=($!)
    local deadline=$((SECONDS + 30))
    until grep -q '^ready ' "$work/$id.out" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "node $id not ready"
        sleep 0.1
    done
    eval "http_$id=$(sed -n 's/^ready .* http=\([^ ]*\).*/\1/p' "$work/$id.out")"
}

field() { curl -fsS "http://$1/v1/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
wait_for() { # seconds, description, command...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || die "not within ${limit}s: $what"
        sleep 0.2
    done
}
leads() { [ "$(field "$1" is_leader)" = True ]; }
knows_leader() { [ "$(field "$1" leader)" = "$2" ]; }

# A, in its own mount namespace: the host directory, bind-mounted read-only.
mount_ns_node=(unshare -m --propagation private sh -c '
    mount --bind /var/run/clockbound /var/run/clockbound &&
    mount -o remount,bind,ro /var/run/clockbound &&
    if touch /var/run/clockbound/probe 2>/dev/null; then echo "mount is writable" >&2; exit 3; fi &&
    exec "$0" "$@"' "$bin" node --id a --clock clockbound "${common[@]}")
log "starting node a under unshare -m with /var/run/clockbound read-only"
start_node a "${mount_ns_node[@]}"
wait_for 20 "a leads on the ClockBound segment" leads "$http_a"
log "a leads ($(field "$http_a" term)); starting node b (system clock, asserted bound)"
start_node b "$bin" node --id b --clock system --clock-bound-ms 5 "${common[@]}"
wait_for 20 "b follows a" knows_leader "$http_b" a

log "stopping the daemon and removing its segment"
kill "$clockbound_pid"
wait "$clockbound_pid" 2>/dev/null || true
rm -f "$CLOCKBOUND_SEGMENT"
t0=$SECONDS
wait_for 10 "a stops leading once its segment is gone" sh -c "! [ \"\$(curl -fsS http://$http_a/v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"is_leader\"])')\" = True ]"
wait_for 20 "b takes over" leads "$http_b"
wait_for 20 "a follows b" knows_leader "$http_a" b
log "a stepped down, b leads after $((SECONDS - t0))s; a's readiness: $(curl -s "http://$http_a/v1/ready")"
curl -fsS "http://$http_a/v1/live" >/dev/null || die "a is not live while its segment is gone"
grep -q "ClockBound segment is gone" "$work/a.log" || die "a did not say its segment is gone"

log "starting the daemon again"
cb_start_clockbound
why=$(cb_wait_synchronized "$WAIT_SECS") || die "$why"
wait_for 20 "a maps the new segment" grep -q "ClockBound segment back\|mapping the new one" "$work/a.log"

log "node b leaves (SIGTERM)"
kill -TERM "$pid_b"
wait "$pid_b" 2>/dev/null || true
wait_for 20 "a leads again on the new segment" leads "$http_a"
log "a leads again (term $(field "$http_a" term)) without a restart: passed"
