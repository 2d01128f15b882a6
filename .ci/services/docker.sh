# A real dockerd from Debian's docker.io, private to this CI run: its own socket,
# data and exec roots under $CI_WORK, stopped by PID. No registry is reachable, so the
# test image local/busybox:1 is made from busybox-static with `docker import`.
# dockerd refuses GPU device requests without the NVIDIA toolkit; a stand-in
# nvidia-container-runtime-hook on its PATH makes it accept them (the container then
# sees NVIDIA_VISIBLE_DEVICES set to the requested ids).
APT_PACKAGES="$APT_PACKAGES docker.io busybox-static"

start_docker() {
  local dir="$CI_WORK/docker"; mkdir -p "$dir/bin" "$dir/rootfs/bin" "$dir/rootfs/tmp"
  printf '#!/bin/sh\ncat >/dev/null\nexit 0\n' > "$dir/bin/nvidia-container-runtime-hook"
  chmod +x "$dir/bin/nvidia-container-runtime-hook"
  DOCKER_DIR=$dir
  PATH="$dir/bin:$PATH" dockerd --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" -H "unix://$dir/docker.sock" --log-level warn \
    >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$dir/docker.sock"
  local i
  for i in $(seq 1 120); do
    /usr/bin/docker version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$dir/dockerd.log"; return 1; }
    sleep 0.25
  done
  /usr/bin/docker version >/dev/null || { tail -20 "$dir/dockerd.log"; return 1; }
  local root="$dir/rootfs" tool
  cp "$(command -v busybox)" "$root/bin/busybox"
  for tool in sh echo sleep cat env date ls head tail dd printf true false seq mkdir id yes \
              kill wc tr sort; do
    ln -sf busybox "$root/bin/$tool"
  done
  tar -C "$root" -c . | /usr/bin/docker import -c 'CMD ["echo", "hello from the image"]' \
    - local/busybox:1 >/dev/null
  echo "dockerd (pid $DOCKERD_PID) on $DOCKER_HOST with image local/busybox:1"
}

stop_docker() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  /usr/bin/docker ps -aq 2>/dev/null | xargs -r /usr/bin/docker rm -f >/dev/null 2>&1 || true
  kill "$DOCKERD_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
  # dockerd's own containerd and shims exit with it; a leftover mount would block rm -rf
  grep -o " $DOCKER_DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
