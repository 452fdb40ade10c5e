#!/usr/bin/env bash
# Tear down the SLURM started by tests/slurm/slurm_up.sh STATE_DIR.
#
#   tests/slurm/slurm_down.sh STATE_DIR
#
# Cancels the jobs still known to that cluster, stops slurmd, slurmctld and munged by the pid
# files in STATE_DIR (and only those processes: the command name is checked against the pid
# before signalling, TERM first, KILL after a timeout) and removes /etc/slurm/slurm.conf and gres.conf
# if slurm_up.sh wrote them. Safe to run twice or after a partial start.
set -uo pipefail

MARKER="tinyevo-test-slurm"
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
TIMEOUT="${TINYEVO_SLURM_TIMEOUT:-60}"

[ $# -eq 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
[ -d "$1" ] || exit 0
STATE="$(cd "$1" && pwd)"

ours_conf() { [ -f "$STATE/conf_written" ] && [ -f "$CONF" ] && grep -q "$MARKER" "$CONF" \
    && grep -q "^SlurmctldPidFile=$STATE/slurmctld.pid$" "$CONF"; }

# Cancel remaining jobs while the controller is still up (our private cluster only).
if ours_conf && [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    timeout 20 scancel --partition=cpu,gpu --full >/dev/null 2>&1 || true
fi

stop() {  # stop PIDFILE COMMAND_NAME
    local pidfile="$STATE/$1" name="$2" pid deadline
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
        rm -f "$pidfile"   # stale: that pid is gone or now belongs to someone else
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    deadline=$(( SECONDS + TIMEOUT ))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name (pid $pid) did not stop after ${TIMEOUT}s: sending KILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

stop slurmd.pid slurmd
stop slurmctld.pid slurmctld
stop munged.pid munged

if ours_conf; then
    rm -f "$CONF"
    [ -f "$GRES" ] && grep -q "$MARKER" "$GRES" && rm -f "$GRES"
fi
rm -f "$STATE/conf_written"
exit 0
