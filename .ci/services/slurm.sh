# Slurm from Debian's packages (22.05): munged, slurmctld and one slurmd whose node
# declares 16 CPUs and 4 GPUs (fake /dev/nvidia[0-3] character devices), all with their
# config and state under $CI_WORK/slurm. Exports SLURM_CONF for the tests.
APT_PACKAGES="$APT_PACKAGES slurm-wlm slurm-client munge"

SLURM_PIDS=()
SLURM_FAKE_DEVICES=()

start_slurm() {
  local dir="$CI_WORK/slurm"
  rm -rf "$dir"; mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 755 "$dir"
  # munged runs as `munge`, which must be able to enter every folder down to its socket.
  local up="$dir"
  while [ "$up" != "/" ]; do chmod o+x "$up" 2>/dev/null || true; up=$(dirname "$up"); done
  # 0711: munged wants its socket's folder searchable by all and its key's not writable.
  chown munge:munge "$dir/munge"; chmod 711 "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"

  local i
  for i in 0 1 2 3; do  # slurmd stats the GPU files; make them only where none exist
    if [ ! -e "/dev/nvidia$i" ]; then
      mknod "/dev/nvidia$i" c 195 "$i"; SLURM_FAKE_DEVICES+=("/dev/nvidia$i")
    fi
  done

  local ports; ports=$(python3 -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
  local ctld_port=${ports% *} slurmd_port=${ports#* }
  local host; host=$(hostname -s)

  cat >"$dir/slurm.conf" <<EOF
ClusterName=launchyard
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,sched_interval=1,bf_interval=1,bf_resolution=1,bf_continue,default_queue_depth=1000
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=16 RealMemory=16000 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  printf 'AutoDetect=off\nName=gpu File=/dev/nvidia[0-3]\n' >"$dir/gres.conf"
  printf 'CgroupPlugin=autodetect\n' >"$dir/cgroup.conf"
  export SLURM_CONF="$dir/slurm.conf"

  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
    --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed" \
    --log-file="$dir/munge/munged.log" >"$dir/munged.out" 2>&1 &
  SLURM_PIDS+=($!)
  local deadline=$((SECONDS + 10))
  until [ -S "$dir/munge/munge.sock" ]; do
    if [ $SECONDS -ge $deadline ]; then echo "munged did not start:" >&2; cat "$dir/munged.out" >&2; return 1; fi
    sleep 0.1
  done
  slurmctld -D -i >"$dir/slurmctld.out" 2>&1 &
  SLURM_PIDS+=($!)
  slurmd -D >"$dir/slurmd.out" 2>&1 &
  SLURM_PIDS+=($!)
  deadline=$((SECONDS + 60))
  until [ "$(timeout 5 sinfo -h -N -o %t 2>/dev/null)" = "idle" ]; do
    [ $SECONDS -ge $deadline ] && break
    sleep 0.2
  done
  if [ "$(timeout 5 sinfo -h -N -o %t 2>/dev/null)" != "idle" ]; then
    echo "Slurm did not come up; logs:" >&2
    tail -n 20 "$dir"/*.log "$dir"/*.out >&2 || true
    return 1
  fi
  echo "Slurm up: $(sinfo -h -N -o '%N %t %c CPUs %G')"
}

stop_slurm() {
  local pid dev
  for pid in "${SLURM_PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 10))
  for pid in "${SLURM_PIDS[@]:-}"; do
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  for dev in "${SLURM_FAKE_DEVICES[@]:-}"; do [ -n "$dev" ] && rm -f "$dev"; done
  SLURM_PIDS=(); SLURM_FAKE_DEVICES=()
}
