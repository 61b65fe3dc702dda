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

WAIT_SECS=${HEDGEROW_E2E_WAIT_SECS:-60}
repo=$(cd "$(dirname "$0")/../.." && pwd)

log() { echo "clockbound-e2e: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (chronyd and /var/run/clockbound)"

# shellcheck source=clock/scripts/clockbound-daemons.sh
. "$repo/clock/scripts/clockbound-daemons.sh"
why=$(cb_refuse_foreign_daemons) || die "$why"
log "installing chrony and clock-bound-d 2.0.3 if missing"
cb_install
cb_begin hedgerow-clockbound-e2e

log "starting upstream and follower chronyd (loopback port 11123, -x)"
cb_start_chrony
log "starting clockbound 2.0.3 (50 ppm, no disruption support)"
cb_start_clockbound
why=$(cb_wait_synchronized "$WAIT_SECS") || die "$why"
log "segment SYNCHRONIZED after ${SECONDS}s"

cd "$repo"
HEDGEROW_CLOCKBOUND_E2E=1 HEDGEROW_CLOCKBOUND_DAEMON_PID="$clockbound_pid" \
    cargo test -p hedgerow-clock --test clockbound_daemon -- --nocapture
log "passed"
