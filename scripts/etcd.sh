# Sourced by scripts/test and scripts/examples-smoke: a throw-away etcd for
# the tests, unless GITOPS_ETCD_ENDPOINTS already points at one.
#
#   start_test_etcd   installs etcd and protoc if missing (Debian packages),
#                     starts etcd on 127.0.0.1 with a temporary data directory
#                     and exports GITOPS_ETCD_ENDPOINTS
#   stop_test_etcd    stops it by its process id and removes its data
#
# Callers install an EXIT trap that captures rc=$? first, calls
# stop_test_etcd, then exits with rc (otherwise the script exits 143).

test_etcd_pid=""
test_etcd_dir=""

install_etcd_tools() {
  local need=()
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
  command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
  if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_test_etcd() {
  install_etcd_tools
  if [ -n "${GITOPS_ETCD_ENDPOINTS:-}" ]; then
    echo "using the etcd at $GITOPS_ETCD_ENDPOINTS"
    return 0
  fi
  test_etcd_dir=$(mktemp -d)
  local client peer
  client=$(free_port)
  peer=$(free_port)
  etcd --name gitops-test --data-dir "$test_etcd_dir/data" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "gitops-test=http://127.0.0.1:$peer" >"$test_etcd_dir/etcd.log" 2>&1 &
  test_etcd_pid=$!
  export GITOPS_ETCD_ENDPOINTS="http://127.0.0.1:$client"
  local deadline=$((SECONDS + 30))
  until ETCDCTL_API=3 etcdctl --endpoints "$GITOPS_ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$test_etcd_pid" 2>/dev/null; then
      echo "etcd did not become healthy; its log:" >&2
      cat "$test_etcd_dir/etcd.log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "etcd $(etcd --version | head -n1 | awk '{print $3}') at $GITOPS_ETCD_ENDPOINTS (pid $test_etcd_pid)"
}

stop_test_etcd() {
  if [ -n "$test_etcd_pid" ]; then
    kill "$test_etcd_pid" 2>/dev/null || true
    wait "$test_etcd_pid" 2>/dev/null || true
    test_etcd_pid=""
  fi
  if [ -n "$test_etcd_dir" ]; then
    rm -rf "$test_etcd_dir"
    test_etcd_dir=""
  fi
}
