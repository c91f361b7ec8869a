#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, for tests/test_slurm.py.
# Idempotent: installs what is missing, starts only what is not running, and
# records what it started in $STATE/*.pid so stop_cluster.sh stops just that.
# Needs root (apt-get, munge). Test infrastructure, not part of the product.
set -euo pipefail

STATE=${TT_SLURM_STATE:-/tmp/tumbletrain-slurm}
mkdir -p "$STATE"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: the key and a daemon running as the munge user.
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  pgrep -u munge -x munged > "$STATE/munged.pid" || true
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
install -d /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
# A GPU the scheduler can hand out; TensorFlow then finds none and uses the CPU.
echo "Name=gpu File=/dev/null" > /etc/slurm/gres.conf
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=tumbletrain
SlurmctldHost=$HOST
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Completed jobs stay visible to scontrol for an hour: the test reads their GPUs.
MinJobAge=3600
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

if pgrep -x slurmctld >/dev/null; then
  scontrol reconfigure >/dev/null 2>&1 || true
else
  slurmctld
fi
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 100); do
  state=$(sinfo -h -N -o "%T" 2>/dev/null | head -1 || true)
  case "$state" in
    idle*|mixed*|allocated*) echo "slurm ready: $HOST $state"; exit 0 ;;
    down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.3
done
echo "slurm did not become ready; see /var/log/slurm/" >&2
exit 1
