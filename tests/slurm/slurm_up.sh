#!/usr/bin/env bash
# Bring up a one-node SLURM (Debian's slurm-wlm 22.05 + munge) on localhost for the tests.
#
#   tests/slurm/slurm_up.sh STATE_DIR
#
# Installs the packages with apt-get when they are missing (quiet, idempotent), writes a private
# munge key, /etc/slurm/slurm.conf (partitions cpu and gpu on the one node) and /etc/slurm/gres.conf (the executor plugin strips SLURM_* variables inside jobs,
# so SLURM_CONF cannot point elsewhere), starts munged, slurmctld and slurmd as daemons whose
# pid files, sockets, logs and state live in STATE_DIR, and waits (with timeouts) until the node
# is idle. Stop everything with tests/slurm/slurm_down.sh STATE_DIR.
#
# Exit status: 0 = cluster up; 77 = this machine cannot host it (not root, no apt-get, packages
# cannot be installed, a foreign slurm.conf exists): the reason is the last line on stdout;
# anything else = a real failure (logs in STATE_DIR).
#
# Environment: TINYEVO_SLURM_CTLD_PORT (16817), TINYEVO_SLURM_SLURMD_PORT (16818),
# TINYEVO_SLURM_TIMEOUT (seconds per wait, 60).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MARKER="tinyevo-test-slurm"
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
TIMEOUT="${TINYEVO_SLURM_TIMEOUT:-60}"

skip() { echo "SKIP: $*"; exit 77; }
die() { echo "ERROR: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 STATE_DIR"
mkdir -p "$1"
STATE="$(cd "$1" && pwd)"

[ "$(id -u)" -eq 0 ] || skip "not root: a local SLURM needs root to install packages and write $CONF"

# --- packages ---------------------------------------------------------------------------------
need_install=0
for cmd in munged mungekey slurmctld slurmd sinfo sbatch squeue scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" -eq 1 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "SLURM is not installed and apt-get is missing"
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 300 apt-get update -qq >"$STATE/apt.log" 2>&1; then
        skip "apt-get update failed (offline?): $(tail -n 1 "$STATE/apt.log")"
    fi
    if ! timeout 600 apt-get install -y -qq --no-install-recommends \
            munge slurmctld slurmd slurm-client >>"$STATE/apt.log" 2>&1; then
        skip "apt-get install of munge/slurmctld/slurmd failed: $(tail -n 1 "$STATE/apt.log")"
    fi
fi

# --- config -----------------------------------------------------------------------------------
if [ -e "$CONF" ] && ! grep -q "$MARKER" "$CONF"; then
    skip "$CONF exists and was not written by this script: refusing to replace a real cluster's config"
fi
if [ -e "$GRES" ] && ! grep -q "$MARKER" "$GRES"; then
    skip "$GRES exists and was not written by this script: refusing to replace a real cluster's config"
fi
if [ -e "$CONF" ]; then
    other="$(sed -n 's/^SlurmctldPidFile=//p' "$CONF")"
    if [ -n "$other" ] && [ -s "$other" ] && kill -0 "$(cat "$other")" 2>/dev/null; then
        skip "another test SLURM is running (pid file $other)"
    fi
fi

NODE="$(hostname -s)"
# One CPU more than the machine has: the SLURM test stops one job until its time limit, and the
# other jobs should not wait that long for its CPU (config_overrides in slurm.conf lets slurmd
# announce the configured count).
CPUS="$(( $(nproc) + 1 ))"
MEM_KB="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
MEM_MB=$(( MEM_KB * 9 / 10 / 1024 ))
CTLD_PORT="${TINYEVO_SLURM_CTLD_PORT:-16817}"
SLURMD_PORT="${TINYEVO_SLURM_SLURMD_PORT:-16818}"

mkdir -p "$STATE/munge" "$STATE/ctld" "$STATE/slurmd" /etc/slurm
chmod 0700 "$STATE/munge"
sed -e "s|@NODE@|$NODE|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CPUS|g" \
    -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    "$HERE/slurm.conf.in" >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"
# The node announces two GPUs as generic resources whose device files are /dev/null and /dev/zero
# (SLURM needs a file per GPU; no cgroup confines them here): `sbatch --gpus=1` (profiles/slurm's
# GPU jobs) is scheduled as on a real site, two such jobs at once, and a job, finding no CUDA
# device, trains on the CPU.
printf '# %s: written by tests/slurm/slurm_up.sh, removed by slurm_down.sh.\nNodeName=%s Name=gpu File=/dev/null\nNodeName=%s Name=gpu File=/dev/zero\n' \
    "$MARKER" "$NODE" "$NODE" >"$GRES.tmp"
mv "$GRES.tmp" "$GRES"
echo "$STATE" >"$STATE/conf_written"   # slurm_down.sh removes $CONF only if this file exists

# --- waits ------------------------------------------------------------------------------------
wait_for() {  # wait_for DESCRIPTION COMMAND...: retry COMMAND until it succeeds or TIMEOUT
    local what="$1"; shift
    local deadline=$(( SECONDS + TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "ERROR: timed out after ${TIMEOUT}s waiting for $what" >&2
            for f in munged.log slurmctld.log slurmd.log; do
                [ -f "$STATE/$f" ] && { echo "--- $f" >&2; tail -n 20 "$STATE/$f" >&2; }
            done
            exit 1
        fi
        sleep 0.5
    done
}
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")"; }
node_idle() { [ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" = "idle" ]; }

# --- munge ------------------------------------------------------------------------------------
mungekey --create --keyfile="$STATE/munge/munge.key" --force >/dev/null
chmod 0400 "$STATE/munge/munge.key"
munged --force \
    --socket="$STATE/munge/munge.socket" \
    --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munged.pid" \
    --log-file="$STATE/munged.log" \
    --seed-file="$STATE/munge/munge.seed"
wait_for "munged (pid file)" alive "$STATE/munged.pid"
wait_for "munge credential round trip" \
    bash -c "munge -S '$STATE/munge/munge.socket' -n | unmunge -S '$STATE/munge/munge.socket'"

# --- slurm daemons ----------------------------------------------------------------------------
slurmctld -c
wait_for "slurmctld (pid file)" alive "$STATE/slurmctld.pid"
wait_for "slurmctld answering" scontrol ping
slurmd
wait_for "slurmd (pid file)" alive "$STATE/slurmd.pid"
wait_for "node $NODE idle in sinfo" node_idle
echo "SLURM up: node $NODE, $CPUS CPUs, ${MEM_MB} MB, partitions cpu and gpu (2 GPUs without devices), state in $STATE"
