# Shared by the end-to-end scripts that need a real ClockBound 2.0.3
# daemon (source it; it defines functions only). On loopback only: an
# upstream chronyd serving its own clock (local stratum 1, port 11123), a
# follower chronyd synchronising to it, and clockbound following the
# follower. Both chronyd run with -x, so the system clock is never
# adjusted. The caller owns `$work` (a temporary directory) and the
# `pids` array, and stops every pid in it on exit.

CLOCKBOUND_SEGMENT=/var/run/clockbound/shm0

# Refuses to interfere with daemons this script did not start.
cb_refuse_foreign_daemons() {
    if pgrep -x clockbound >/dev/null; then
        echo "a clockbound daemon is already running; stop it first (the test owns $CLOCKBOUND_SEGMENT while it runs)"
        return 1
    fi
    if pgrep -x chronyd >/dev/null; then
        echo "a chronyd is already running; stop it first (the follower needs chrony's default command socket)"
        return 1
    fi
}

# Installs chrony (apt) and clock-bound-d 2.0.3 (cargo, ~80 s) when missing.
cb_install() {
    if ! command -v chronyd >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chrony >/dev/null
    fi
    if ! clockbound --version 2>/dev/null | grep -q '2\.0\.3'; then
        cargo install --locked clock-bound-d --version =2.0.3
    fi
}

# Starts both chronyd; their pids go to `pids`.
cb_start_chrony() {
    # chronyd's default command socket lives here and clockbound talks to
    # it; chronyd (run as root here) disables the socket unless the
    # directory is owned by its user and closed to others.
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
    local chronyd_bin
    chronyd_bin=$(command -v chronyd)
    "$chronyd_bin" -n -x -u root -f "$work/upstream.conf" -L 0 -l "$work/upstream.log" &
    pids+=($!)
    "$chronyd_bin" -n -x -u root -f "$work/follower.conf" -L 0 -l "$work/follower.log" &
    pids+=($!)
}

# Starts clockbound (50 ppm, no disruption support); sets `clockbound_pid`
# and adds it to `pids`. A stale segment from an earlier run would be
# reused as is and read as fresh, so it is removed first.
cb_start_clockbound() {
    rm -f "$CLOCKBOUND_SEGMENT"
    "$(command -v clockbound)" --disable-clock-disruption-support --max-drift-rate 50 \
        >>"$work/clockbound.log" 2>&1 &
    clockbound_pid=$!
    pids+=("$clockbound_pid")
}

# The status word (i32) at byte 68 of a v2 segment; 1 = SYNCHRONIZED.
cb_status() { od -An -t d4 -j 68 -N 4 "$CLOCKBOUND_SEGMENT" 2>/dev/null | tr -d ' '; }

# Waits up to $1 seconds for the segment to read SYNCHRONIZED.
cb_wait_synchronized() {
    local deadline=$((SECONDS + $1))
    until [ "$(cb_status)" = 1 ]; do
        kill -0 "$clockbound_pid" 2>/dev/null || { echo "clockbound exited"; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || { echo "segment not SYNCHRONIZED after $1 s (status '$(cb_status)')"; return 1; }
        sleep 0.2
    done
}

# What an exit trap runs: stops every pid in `pids`, shows the tail of each
# log in `$work` when the exit status `$1` says the test failed, removes
# the segment the daemon leaves behind (a stale SYNCHRONIZED one would be
# reused as is by the next daemon) and `$work`.
cb_cleanup() {
    local rc=$1 pid f
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$rc" != 0 ]; then
        for f in "$work"/*.log; do
            [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
        done
    fi
    rm -f "$CLOCKBOUND_SEGMENT"
    rm -rf "$work"
}

# Makes `$work` (named after $1) and `pids`, and cleans both up on exit.
cb_begin() {
    work=$(mktemp -d -t "$1.XXXXXX")
    pids=()
    trap 'rc=$?; cb_cleanup "$rc"; exit "$rc"' EXIT
}
