# A one-node Ray cluster (pip's ray[default], from `.[dev]`) on 127.0.0.1 only, with 16
# CPUs and 4 GPUs declared (Ray schedules them; no device is needed). Exports
# LAUNCHYARD_TEST_RAY_ADDRESS (the dashboard's job API) for the tests.

RAY_SID=""
RAY_TMP=""

start_ray() {
  # Ray's unix sockets live under --temp-dir and must fit in 107 characters: keep it short.
  RAY_TMP=$(mktemp -d /tmp/ly-ray-XXXXXX)
  local ports; ports=$(python3 -c 'import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
  local gcs agent grpc client metrics
  read -r gcs agent grpc client metrics <<<"$ports"
  local dashboard=8265
  if ! python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", 8265))' 2>/dev/null; then
    dashboard=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  fi
  # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every Ray process on loopback; setsid gives
  # the cluster a session of its own (Ray's workers get their own process groups, not
  # sessions), and stop_ray ends the processes of that session by their ids.
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 setsid ray start --head --block \
    --node-ip-address=127.0.0.1 --port="$gcs" --num-cpus=16 --num-gpus=4 \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dashboard" \
    --dashboard-agent-listen-port="$agent" --dashboard-agent-grpc-port="$grpc" \
    --ray-client-server-port="$client" --metrics-export-port="$metrics" \
    --temp-dir="$RAY_TMP" --disable-usage-stats >"$CI_WORK/ray.log" 2>&1 </dev/null &
  local pid=$!
  RAY_SID=$(ps -o sid= "$pid" | tr -d ' ')
  export LAUNCHYARD_TEST_RAY_ADDRESS="http://127.0.0.1:$dashboard"
  # Ready means a job is accepted and runs: the dashboard agent comes up after the dashboard.
  if ! python3 - "$LAUNCHYARD_TEST_RAY_ADDRESS" <<'EOF'
import json, sys, time, urllib.request
base, deadline = sys.argv[1], time.monotonic() + 120
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as reply:
        return json.loads(reply.read() or b"null")
while True:
    try:
        job = call("POST", "/api/jobs/", {"entrypoint": "true"})["submission_id"]
        break
    except Exception as exc:
        if time.monotonic() > deadline:
            sys.exit(f"Ray never accepted a job: {exc}")
        time.sleep(0.5)
while call("GET", f"/api/jobs/{job}")["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
    if time.monotonic() > deadline:
        sys.exit("Ray's test job never ended")
    time.sleep(0.2)
EOF
  then
    tail -n 30 "$CI_WORK/ray.log" >&2
    return 1
  fi
  echo "Ray up: $LAUNCHYARD_TEST_RAY_ADDRESS (4 GPUs, 16 CPUs)"
}

# Live (not zombie) processes of the cluster's session.
_ray_pids() { ps -eo pid=,sid=,stat= | awk -v sid="$RAY_SID" '$2 == sid && $3 !~ /^Z/ { print $1 }'; }

stop_ray() {
  [ -n "$RAY_SID" ] || return 0
  # `ray start --block` stops the processes it started when it gets SIGTERM (about 2 s);
  # whatever is left after the deadline is killed by its id.
  kill -TERM "$RAY_SID" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while [ -n "$(_ray_pids)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  # shellcheck disable=SC2046
  kill -KILL $(_ray_pids) 2>/dev/null || true
  [ -n "$RAY_TMP" ] && rm -rf "$RAY_TMP"
  RAY_SID=""; RAY_TMP=""
}
