#!/usr/bin/env bash
# End-to-end test of hedgerow-clock against a real ClockBound 2.0.3 daemon.
#
# Starts, on loopback only: an upstream chronyd serving its own clock
# (local stratum 1, port 11123), a follower chronyd synchronising to it, and
# clockbound following the follower. Both chronyd run with -x, so the system
# clock is never adjusted. Waits (bounded) until the segment reads
# SYNCHRONIZED, then runs the clockbound_daemon test, which reads the real
# segment through our reader and finally stops the daemon to see the reading
# degrade. Everything this script started is stopped by pid on exit.
#
# Needs root (chronyd, /var/run/clockbound). Installs chrony (apt) and
# clock-bound-d 2.0.3 (cargo install, ~80 s on 2 cores) when missing.
# Usage: clock/scripts/clockbound-e2e.sh   (from anywhere in the repo)
set -euo pipefail

SEGMENT=/var/run/clockbound/shm0
WAIT_SECS=${HEDGEROW_E2E_WAIT_SECS:-60}
repo=$(cd "$(dirname "$0")/../.." && pwd)

log() { echo "clockbound-e2e: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (chronyd and /var/run/clockbound)"

# Refuse to interfere with daemons we did not start.
if pgrep -x clockbound >/dev/null; then
    die "a clockbound daemon is already running; stop it first (this script owns $SEGMENT while it runs)"
fi
if pgrep -x chronyd >/dev/null; then
    die "a chronyd is already running; stop it first (the follower needs chrony's default command socket)"
fi

if ! command -v chronyd >/dev/null; then
    log "installing chrony"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chrony >/dev/null
fi
if ! clockbound --version 2>/dev/null | grep -q '2\.0\.3'; then
    log "installing clock-bound-d 2.0.3"
    cargo install --locked clock-bound-d --version =2.0.3
fi
chronyd_bin=$(command -v chronyd)
clockbound_bin=$(command -v clockbound)

work=$(mktemp -d -t hedgerow-clockbound-e2e.XXXXXX)
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$rc" != 0 ]; then
        for f in "$work"/*.log; do
            [ -f "$f" ] && { log "--- $f"; tail -n 20 "$f" >&2; }
        done
    fi
    # The daemon leaves its segment behind; a stale SYNCHRONIZED one would be
    # reused as is by the next daemon, so remove what we caused.
    rm -f "$SEGMENT"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

# A stale segment from an earlier run would be reused and read as fresh.
rm -f "$SEGMENT"
# chronyd's default command socket lives here and clockbound talks to it;
# chronyd (run as root here) disables the socket unless the directory is
# owned by its user and closed to others.
install -d -m 0750 -o root -g root /run/chrony
chown root:root /run/chrony
chmod 0750 /run/chrony

cat >"$work/upstream.conf" <<CONF
local stratum 1
port 11123
allow 127.0.0.1
cmdport 0
bindcmdaddress /
pidfile $work/upstream.pid
driftfile $work/upstream.drift
CONF
cat >"$work/follower.conf" <<CONF
server 127.0.0.1 port 11123 iburst minpoll 0 maxpoll 0
port 0
pidfile $work/follower.pid
driftfile $work/follower.drift
CONF

log "starting upstream chronyd (loopback port 11123, -x)"
"$chronyd_bin" -n -x -u root -f "$work/upstream.conf" -L 0 -l "$work/upstream.log" &
pids+=($!)
log "starting follower chronyd (-x)"
"$chronyd_bin" -n -x -u root -f "$work/follower.conf" -L 0 -l "$work/follower.log" &
pids+=($!)
log "starting clockbound 2.0.3 (50 ppm, no disruption support)"
"$clockbound_bin" --disable-clock-disruption-support --max-drift-rate 50 >"$work/clockbound.log" 2>&1 &
clockbound_pid=$!
pids+=("$clockbound_pid")

# The status word (i32) sits at byte 68 of a v2 segment; 1 = SYNCHRONIZED.
status() { od -An -t d4 -j 68 -N 4 "$SEGMENT" 2>/dev/null | tr -d ' '; }
deadline=$((SECONDS + WAIT_SECS))
until [ "$(status)" = 1 ]; do
    kill -0 "$clockbound_pid" 2>/dev/null || die "clockbound exited"
    [ "$SECONDS" -lt "$deadline" ] || die "segment not SYNCHRONIZED after ${WAIT_SECS}s (status '$(status)')"
    sleep 0.2
done
log "segment SYNCHRONIZED after ${SECONDS}s"

cd "$repo"
HEDGEROW_CLOCKBOUND_E2E=1 HEDGEROW_CLOCKBOUND_DAEMON_PID="$clockbound_pid" \
    cargo test -p hedgerow-clock --test clockbound_daemon -- --nocapture
log "passed"
