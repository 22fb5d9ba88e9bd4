#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the opt-in test `pytest -m slurm` (tests/test_slurm.py).
#   .ci/slurm.sh start   install munge and SLURM from the distribution's packages (Debian/Ubuntu), write a
#                        slurm.conf for this machine, start munged, slurmctld and slurmd, wait until the node runs a job
#   .ci/slurm.sh stop    cancel the cluster's jobs and stop the daemons `start` started (by their pid files)
# Runs as root: the daemons run as root, so no slurm user is set up. Needs no systemd: the daemons are started by
# hand (the packages' init scripts are kept from starting them). No accounting database: the test tells the SLURM
# executor plugin to ask squeue for job states, which needs MinJobAge (how long squeue still shows a finished job)
# well above the plugin's first status check.
# Never touches a machine whose /etc/slurm/slurm.conf this script did not write.
# `stop` leaves the packages installed. While SLURM's tools are on PATH and no controller answers, every `snakemake`
# start waits ~10 s (the SLURM executor plugin asks `scontrol show config` when it loads): on a workstation, remove
# them afterwards with `apt-get purge munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins`.
set -euo pipefail

STATE=/tmp/optrepro-slurm  # spool, state, logs, pid files; and a marker per daemon this script started
CONF=/etc/slurm/slurm.conf
MARK="# written by optrepro .ci/slurm.sh"
PARTITION=debug
PACKAGES=(munge slurmctld slurmd slurm-client)

die() { echo "slurm.sh: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # alive PIDFILE

ours() { [ -f "$CONF" ] && grep -qxF "$MARK" "$CONF"; }

install_packages() {
  local missing=0 tool
  for tool in munged mungekey slurmctld slurmd sbatch squeue sinfo srun; do
    command -v "$tool" >/dev/null || missing=1
  done
  [ "$missing" = 0 ] && return
  # policy-rc.d exit 101: the packages' postinst must not start the daemons (we start them below, our way).
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  local rc=0
  { apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } </dev/null || rc=$?
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install ${PACKAGES[*]} failed (exit $rc)"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then echo "munged: already running"; return; fi
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$STATE/started-munged"
  munge -n | unmunge >/dev/null || die "munge does not round-trip a credential"
}

write_conf() {
  # slurmd -C prints this machine's node line: name, CPUs, sockets, cores, threads, RealMemory (MB).
  local node_line node
  node_line=$(slurmd -C | head -1)
  node=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node_line")
  [ -n "$node" ] || die "cannot read this node from 'slurmd -C': $node_line"
  mkdir -p /etc/slurm
  cat >"$CONF" <<EOF
$MARK
ClusterName=optrepro-ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  echo "$node"
}

start() {
  [ "$(id -u)" = 0 ] || die "start needs root (it installs packages and runs the daemons as root)"
  if [ -f "$CONF" ] && ! ours; then die "$CONF was not written by this script: leaving this machine's SLURM alone"; fi
  if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid"; then echo "slurm: already running"; return; fi
  install_packages
  rm -rf "$STATE/ctld" "$STATE/d"
  mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log"
  start_munge
  local node
  node=$(write_conf)
  alive "$STATE/slurmctld.pid" || { slurmctld && touch "$STATE/started-slurmctld"; }
  alive "$STATE/slurmd.pid" || { slurmd && touch "$STATE/started-slurmd"; }
  local i state=
  for i in $(seq 60); do
    state=$(sinfo -h -n "$node" -o %t 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
  done
  [ "$state" = idle ] || { tail -n 20 "$STATE"/log/*.log >&2; die "node $node is '$state', not idle, after 30 s"; }
  timeout -k 5 60 srun -t 1 -n 1 hostname >/dev/null || die "srun hostname failed"
  echo "slurm: node $node up, partition $PARTITION: $(sinfo -h -o '%c CPUs, %m MB' -n "$node")"
}

stop_daemon() {  # stop_daemon NAME PIDFILE: TERM, then KILL after 10 s; only a daemon this script started
  local name=$1 pidfile=$2 i
  [ -f "$STATE/started-$name" ] || return 0
  if alive "$pidfile"; then
    local pid
    pid=$(cat "$pidfile")
    kill "$pid"
    for i in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then echo "$name: still up after 10 s, killing $pid"; kill -9 "$pid"; fi
  fi
  rm -f "$STATE/started-$name"
  echo "$name: stopped"
}

stop() {
  ours || { echo "slurm: no cluster of this script here"; return 0; }
  if alive "$STATE/slurmctld.pid"; then
    # Jobs left by a failed or killed test: cancel them and let their steps end before slurmd goes.
    squeue -h -o %A | xargs -r scancel || true
    local i
    for i in $(seq 30); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  stop_daemon slurmd "$STATE/slurmd.pid"
  stop_daemon slurmctld "$STATE/slurmctld.pid"
  stop_daemon munged /run/munge/munged.pid
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
