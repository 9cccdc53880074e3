#!/usr/bin/env bash
# Run Prometheus and Alertmanager locally, without Docker, with this repository's configs.
#
#   monitoring/run-local.sh            # from any directory; Ctrl-C stops both
#
# Prometheus scrapes the demo's metrics at 127.0.0.1:$JUDGEVAL_METRICS_PORT/metrics and loads
# prometheus/alerts.yml; Alertmanager uses alertmanager/config.yml. Data lives in a temporary
# directory that is removed on exit. Grafana is not started (use docker-compose.yml, or import
# grafana/dashboards/judgeval_sdk.json into your own Grafana).
#
# Environment:
#   PROMETHEUS_PORT        (default 9090)  Prometheus UI/API on 127.0.0.1
#   ALERTMANAGER_PORT      (default 9093)  Alertmanager UI/API on 127.0.0.1
#   JUDGEVAL_METRICS_PORT  (default 9464)  where the instrumented service serves /metrics
#   PROMETHEUS_BIN, ALERTMANAGER_BIN       binaries to use (default: found on PATH; Debian names
#                                          Alertmanager "prometheus-alertmanager")
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prometheus_port="${PROMETHEUS_PORT:-9090}"
alertmanager_port="${ALERTMANAGER_PORT:-9093}"
metrics_port="${JUDGEVAL_METRICS_PORT:-9464}"

find_binary() {
    # find_binary VAR_OVERRIDE name...: print the first candidate found, or fail with a hint.
    local override="$1"
    shift
    if [[ -n "$override" ]]; then
        command -v "$override" || { echo "error: $override not found" >&2; return 1; }
        return 0
    fi
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    echo "error: none of [$*] found on PATH (Debian/Ubuntu: apt-get install prometheus" \
        "prometheus-alertmanager)" >&2
    return 1
}

prometheus_bin="$(find_binary "${PROMETHEUS_BIN:-}" prometheus)"
alertmanager_bin="$(find_binary "${ALERTMANAGER_BIN:-}" alertmanager prometheus-alertmanager)"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/judgeval-monitoring.XXXXXX")"
prometheus_pid=""
alertmanager_pid=""

cleanup() {
    local pids=() pid _
    for pid in "$prometheus_pid" "$alertmanager_pid"; do
        [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && pids+=("$pid")
    done
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        # Both exit within a second or two on SIGTERM; give them 10 s, then insist.
        for _ in $(seq 100); do
            kill -0 "${pids[@]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
# Background jobs of a non-interactive shell ignore SIGINT, so Ctrl-C reaches only this script;
# exiting runs the EXIT trap, which stops both servers.
trap 'exit 130' INT
trap 'exit 143' TERM

# The repository's prometheus.yml targets the Docker network; point it at 127.0.0.1 instead.
sed -e "s/host\.docker\.internal:9464/127.0.0.1:${metrics_port}/" \
    -e "s/alertmanager:9093/127.0.0.1:${alertmanager_port}/" \
    "$here/prometheus/prometheus.yml" >"$workdir/prometheus.yml"
if ! grep -q "127.0.0.1:${metrics_port}" "$workdir/prometheus.yml" ||
    ! grep -q "127.0.0.1:${alertmanager_port}" "$workdir/prometheus.yml"; then
    echo "error: could not rewrite the targets in $here/prometheus/prometheus.yml" >&2
    exit 1
fi
# rule_files is relative to the config file: link the rules in, so edits + reload are picked up.
ln -s "$here/prometheus/alerts.yml" "$workdir/alerts.yml"

"$prometheus_bin" \
    --config.file="$workdir/prometheus.yml" \
    --storage.tsdb.path="$workdir/prometheus-data" \
    --web.listen-address="127.0.0.1:${prometheus_port}" \
    --web.enable-lifecycle \
    >"$workdir/prometheus.log" 2>&1 &
prometheus_pid=$!

# --cluster.listen-address= disables clustering, which would otherwise also bind port 9094.
"$alertmanager_bin" \
    --config.file="$here/alertmanager/config.yml" \
    --storage.path="$workdir/alertmanager-data" \
    --web.listen-address="127.0.0.1:${alertmanager_port}" \
    --cluster.listen-address= \
    >"$workdir/alertmanager.log" 2>&1 &
alertmanager_pid=$!

cat <<EOF
Prometheus:    http://127.0.0.1:${prometheus_port}   (alerts: /alerts, targets: /targets)
Alertmanager:  http://127.0.0.1:${alertmanager_port}
Scraping:      http://127.0.0.1:${metrics_port}/metrics
Logs:          $workdir/prometheus.log, $workdir/alertmanager.log
Press Ctrl-C to stop both.
EOF

# Return as soon as either server exits; an unexpected exit is an error worth showing.
set +e
wait -n "$prometheus_pid" "$alertmanager_pid"
status=$?
set -e
for name in prometheus alertmanager; do
    pid_var="${name}_pid"
    if ! kill -0 "${!pid_var}" 2>/dev/null; then
        echo "error: $name exited (status $status); last lines of its log:" >&2
        tail -n 20 "$workdir/$name.log" >&2 || true
    fi
done
exit 1
