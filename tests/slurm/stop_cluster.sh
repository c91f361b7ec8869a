#!/usr/bin/env bash
# Stop what start_cluster.sh started (by pid file).
STATE=${TT_SLURM_STATE:-/tmp/tumbletrain-slurm}
for name in slurmd slurmctld munged; do
  if [ -s "$STATE/$name.pid" ]; then
    kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
    rm -f "$STATE/$name.pid"
  fi
done
