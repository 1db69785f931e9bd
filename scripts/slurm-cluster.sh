#!/usr/bin/env bash
# A real Slurm cluster on this one host, for Canopy's Slurm tests, the benchmark and trying `--executor slurm`.
#
#   scripts/slurm-cluster.sh up   [DIR]   start it (as root; installs slurm-wlm and munge when missing)
#   scripts/slurm-cluster.sh down [DIR]   stop every daemon it started
#   scripts/slurm-cluster.sh env  [DIR]   print `export SLURM_CONF=...` for the Slurm commands and Canopy
#
# DIR (default ./.slurm) holds the configuration, state, logs and fake GPU devices. The configuration lives there, not
# in /etc/slurm, so the machine's own Slurm (if any) is untouched; point the commands at it with SLURM_CONF=DIR/slurm.conf.
#
# Three nodes, n1-n3 (multiple slurmd on one host, each on its own port), each with every CPU of the host, 4 GiB and two
# fake GPUs of type `fake`: character devices made with mknod, so GRES scheduling is real and `--gpus` sets
# CUDA_VISIBLE_DEVICES. Partitions: `debug` (all nodes, the default), `one` (n1 only) and `parked` (all nodes, DOWN: jobs
# queue there and never start; the benchmark uses it).
set -euo pipefail
cmd=${1:-}
D=$(realpath -m "${2:-${D:-$PWD/.slurm}}")
export SLURM_CONF=$D/slurm.conf

down() {
    # Jobs first, so no slurmstepd outlives the cluster (one waiting to report a job's end would retry forever).
    if [ -s "$D/slurmctld.pid" ] && kill -0 "$(cat "$D/slurmctld.pid")" 2>/dev/null; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
        for _ in $(seq 30); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    for f in "$D"/slurmd.*.pid "$D"/slurmctld.pid "$D"/munged.pid; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    # slurmd and slurmctld leave on SIGTERM within a second or two; wait so a following `up` finds the ports free.
    for _ in $(seq 50); do
        alive=0
        for f in "$D"/slurmd.*.pid "$D"/slurmctld.pid "$D"/munged.pid; do
            [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    rm -f "$D"/slurmd.*.pid "$D"/slurmctld.pid "$D"/munged.pid
    # A step daemon left from a job that ended while slurmctld was away: this cluster's nodes all run here.
    pkill -x slurmstepd 2>/dev/null || true
}

up() {
    [ "$(id -u)" = 0 ] || { echo "slurm-cluster.sh: the Slurm daemons need root" >&2; exit 1; }
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    fi
    down
    local host cpus nodes=3
    host=$(hostname -s)
    cpus=$(nproc)
    # A cold start: jobs of an earlier run are not recovered (tests and benchmarks expect an empty cluster).
    rm -rf "$D/state" "$D/spool"
    mkdir -p "$D"/state "$D"/log "$D"/dev /run/munge
    chown munge:munge /run/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    echo "AutoDetect=off" >"$D/gres.conf"
    for n in $(seq $nodes); do
        mkdir -p "$D/spool/n$n"
        for g in 0 1; do
            dev=$D/dev/n$n-nvidia$g
            [ -e "$dev" ] || mknod "$dev" c 195 $(((n - 1) * 2 + g))
        done
        echo "NodeName=n$n Name=gpu Type=fake File=$D/dev/n$n-nvidia[0-1]" >>"$D/gres.conf"
    done
    cat >"$D/slurm.conf" <<CONF
ClusterName=canopytest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.%n.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
GresTypes=gpu
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=300
MaxJobCount=100000
KillWait=5
MpiDefault=none
NodeName=n[1-$nodes] NodeHostname=$host NodeAddr=127.0.0.1 Port=[17001-$((17000 + nodes))] CPUs=$cpus RealMemory=4096 Gres=gpu:fake:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=one Nodes=n1 MaxTime=INFINITE State=UP
PartitionName=parked Nodes=ALL MaxTime=INFINITE State=DOWN
CONF
    cat >"$D/cgroup.conf" <<CONF
CgroupPlugin=autodetect
CgroupAutomount=yes
ConstrainCores=yes
ConstrainRAMSpace=yes
CONF
    # munged is the host's: started (and later stopped) here only when none runs.
    if ! pgrep -x munged >/dev/null; then
        setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged
        pgrep -x -n munged >"$D/munged.pid"
    fi
    slurmctld
    for n in $(seq $nodes); do slurmd -N "n$n"; done
    local ready=""
    for _ in $(seq 150); do
        if [ "$(sinfo -h -N -o %T 2>/dev/null | sort -u)" = idle ]; then
            ready=1
            break
        fi
        sleep 0.2
    done
    # A cluster that did not come up is a failure, never a reason to skip its tests.
    if [ -z "$ready" ]; then
        echo "slurm-cluster.sh: the nodes did not become idle in 30 s:" >&2
        sinfo -N -o "%N %P %T %E" >&2 || true
        exit 1
    fi
    sinfo -N -o "%N %P %T %c %m %G"
    echo "slurm up: export SLURM_CONF=$SLURM_CONF"
}

case "$cmd" in
up) up ;;
down) down ;;
env) echo "export SLURM_CONF=$SLURM_CONF" ;;
*)
    echo "usage: $0 up|down|env [DIR]" >&2
    exit 2
    ;;
esac
