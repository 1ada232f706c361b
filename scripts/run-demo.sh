#!/usr/bin/env bash
# Runs the demo: the in-process demo mail system (_build/emailqos-demo, SMTP
# 127.0.0.1:2525 / IMAP 127.0.0.1:1143), the otelcol-emailqos collector with
# examples/demo.yaml, and a Prometheus (Debian package prometheus) on
# http://localhost:9090 that scrapes the collector and loads the shipped
# alert rules (deploy/prometheus/emailqos-alerts.yaml): alerts at
# http://localhost:9090/classic/alerts. Metrics: http://localhost:8889/metrics
# (and the debug exporter's output on this terminal).
#
# To see an alert fire, break the demo mail system: DEMO_FAULT=smtp-auth
# (or lost, cleanup, junk; cmd/emailqos-demo -fault), optionally after
# DEMO_FAULT_AFTER (e.g. 2m). With the shipped rules, EmailQoSProbeFailing
# fires about 8 minutes after the failures start.
#
# Ctrl-C (SIGINT) or SIGTERM stops all processes; if one exits on its own,
# the others are stopped too. Nothing is left running.
#
# Usage: make run   (builds first, installs prometheus when missing), or
# scripts/run-demo.sh after `make build`.
# Overrides: DIST_BIN, DEMO_BIN, CONFIG, EMAILQOS_DEMO_ALICE_PASSWORD,
# SMTP_PORT, IMAP_PORT, PROM_PORT (the collector's exporter; CONFIG must
# match these three), PROMETHEUS_PORT, PROMETHEUS (binary; PROMETHEUS=none
# runs without it), PROM_DIR, RULES, SCRAPE_INTERVAL, EVAL_INTERVAL,
# DEMO_FAULT, DEMO_FAULT_AFTER, DEMO_AUTH_RESULTS (cmd/emailqos-demo
# -auth-results), DEMO_TLS=1 (the demo's TLS listeners, CA written to
# DEMO_CA).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DIST_BIN="${DIST_BIN:-_build/otelcol-emailqos/otelcol-emailqos}"
DEMO_BIN="${DEMO_BIN:-_build/emailqos-demo}"
CONFIG="${CONFIG:-examples/demo.yaml}"
# examples/demo.yaml reads the demo account's password from the environment.
export EMAILQOS_DEMO_ALICE_PASSWORD="${EMAILQOS_DEMO_ALICE_PASSWORD:-alice-demo-password}"

SMTP_PORT="${SMTP_PORT:-2525}"
IMAP_PORT="${IMAP_PORT:-1143}"
PROM_PORT="${PROM_PORT:-8889}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
PROMETHEUS="${PROMETHEUS:-prometheus}"
PROM_DIR="${PROM_DIR:-_build/demo-prometheus}"
RULES="${RULES:-deploy/prometheus/emailqos-alerts.yaml}"
# The shipped rules are written for 1m scrapes and evaluations; the demo
# probes every 10s, so scrape it faster to see its results sooner.
SCRAPE_INTERVAL="${SCRAPE_INTERVAL:-10s}"
EVAL_INTERVAL="${EVAL_INTERVAL:-15s}"
DEMO_FAULT="${DEMO_FAULT:-}"
DEMO_FAULT_AFTER="${DEMO_FAULT_AFTER:-0s}"
READY_TIMEOUT=30 # seconds to wait for the demo mail system's ports
STOP_TIMEOUT=10  # seconds to wait after SIGTERM before SIGKILL

log() { echo "run-demo: $*" >&2; }

for bin in "$DIST_BIN" "$DEMO_BIN"; do
	if [ ! -x "$bin" ]; then
		log "$bin not found or not executable; run 'make build' (or 'make run') first"
		exit 1
	fi
done

port_open() { # HOST PORT: true if something accepts TCP connections there
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

if [ "$PROMETHEUS" != none ] && ! command -v "$PROMETHEUS" >/dev/null 2>&1; then
	log "$PROMETHEUS not found: install the Debian package prometheus (make run does), or set PROMETHEUS=none"
	exit 1
fi

ports=("$SMTP_PORT" "$IMAP_PORT" "$PROM_PORT")
[ "$PROMETHEUS" = none ] || ports+=("$PROMETHEUS_PORT")
for port in "${ports[@]}"; do
	if port_open 127.0.0.1 "$port"; then
		log "port $port is already in use (another demo running?); stop it first"
		exit 1
	fi
done

demo_pid=""
col_pid=""
prom_pid=""

# shellcheck disable=SC2317 # called from the EXIT trap
stop_pid() { # PID NAME: SIGTERM, wait, then SIGKILL if still there
	local pid=$1 name=$2 i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$name did not stop within ${STOP_TIMEOUT}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
	trap - EXIT INT TERM
	stop_pid "$prom_pid" prometheus
	prom_pid=""
	# The collector first, so it does not report the mail system going away.
	stop_pid "$col_pid" collector
	col_pid=""
	stop_pid "$demo_pid" "demo mail system"
	demo_pid=""
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

demo_args=(-smtp "127.0.0.1:$SMTP_PORT" -imap "127.0.0.1:$IMAP_PORT")
if [ -n "$DEMO_FAULT" ]; then
	demo_args+=(-fault "$DEMO_FAULT" -fault-after "$DEMO_FAULT_AFTER")
fi
if [ -n "${DEMO_AUTH_RESULTS:-}" ]; then
	demo_args+=(-auth-results "$DEMO_AUTH_RESULTS")
fi
if [ "${DEMO_TLS:-0}" = 1 ]; then
	demo_args+=(-tls -ca-out "${DEMO_CA:?DEMO_TLS=1 needs DEMO_CA}")
fi
log "starting the demo mail system: $DEMO_BIN ${demo_args[*]}"
"$DEMO_BIN" "${demo_args[@]}" &
demo_pid=$!

log "waiting for SMTP 127.0.0.1:$SMTP_PORT and IMAP 127.0.0.1:$IMAP_PORT"
deadline=$((SECONDS + READY_TIMEOUT))
until port_open 127.0.0.1 "$SMTP_PORT" && port_open 127.0.0.1 "$IMAP_PORT"; do
	if ! kill -0 "$demo_pid" 2>/dev/null; then
		rc=0
		wait "$demo_pid" || rc=$?
		demo_pid=""
		log "the demo mail system exited (status $rc) before accepting connections"
		exit 1
	fi
	if [ "$SECONDS" -ge "$deadline" ]; then
		log "the demo mail system did not accept connections within ${READY_TIMEOUT}s"
		exit 1
	fi
	sleep 0.2
done
log "demo mail system ready (pid $demo_pid)"

log "starting the collector: $DIST_BIN --config $CONFIG"
"$DIST_BIN" --config "$CONFIG" &
col_pid=$!
log "collector started (pid $col_pid); metrics on http://localhost:$PROM_PORT/metrics"

pids=("$demo_pid" "$col_pid")
if [ "$PROMETHEUS" != none ]; then
	# A fresh Prometheus each run: its data is the demo's only.
	rm -rf "$PROM_DIR"
	mkdir -p "$PROM_DIR"
	cat >"$PROM_DIR/prometheus.yml" <<EOF
# Written by scripts/run-demo.sh for the demo.
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: $EVAL_INTERVAL
rule_files:
  - $(realpath "$RULES")
scrape_configs:
  - job_name: emailqos
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]
EOF
	log "starting prometheus on http://localhost:$PROMETHEUS_PORT (rules: $RULES)"
	"$PROMETHEUS" --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
		--web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$PROM_DIR/prometheus.log" 2>&1 &
	prom_pid=$!
	pids+=("$prom_pid")
	log "prometheus started (pid $prom_pid, log $PROM_DIR/prometheus.log); alerts on http://localhost:$PROMETHEUS_PORT/classic/alerts"
fi
log "Ctrl-C to stop"

# Until Ctrl-C, or until any process exits on its own.
rc=0
wait -n "${pids[@]}" || rc=$?
if ! kill -0 "$col_pid" 2>/dev/null; then
	log "the collector exited (status $rc)"
	col_pid=""
elif [ -n "$prom_pid" ] && ! kill -0 "$prom_pid" 2>/dev/null; then
	log "prometheus exited (status $rc); see $PROM_DIR/prometheus.log"
	prom_pid=""
else
	log "the demo mail system exited (status $rc)"
	demo_pid=""
fi
exit $((rc == 0 ? 1 : rc))
