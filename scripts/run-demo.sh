#!/usr/bin/env bash
# Runs the demo: the in-process demo mail system (_build/emailqos-demo, SMTP
# 127.0.0.1:2525 / IMAP 127.0.0.1:1143) and the otelcol-emailqos collector with
# examples/demo.yaml. Metrics: http://localhost:8889/metrics (and the debug
# exporter's output on this terminal).
#
# Ctrl-C (SIGINT) or SIGTERM stops both processes; if either one exits on its
# own, the other is stopped too. Nothing is left running.
#
# Usage: make run   (builds first), or scripts/run-demo.sh after `make build`.
# Overrides: DIST_BIN, DEMO_BIN, CONFIG, EMAILQOS_DEMO_ALICE_PASSWORD.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DIST_BIN="${DIST_BIN:-_build/otelcol-emailqos/otelcol-emailqos}"
DEMO_BIN="${DEMO_BIN:-_build/emailqos-demo}"
CONFIG="${CONFIG:-examples/demo.yaml}"
# examples/demo.yaml reads the demo account's password from the environment.
export EMAILQOS_DEMO_ALICE_PASSWORD="${EMAILQOS_DEMO_ALICE_PASSWORD:-alice-demo-password}"

SMTP_PORT=2525
IMAP_PORT=1143
PROM_PORT=8889
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

for port in "$SMTP_PORT" "$IMAP_PORT" "$PROM_PORT"; do
	if port_open 127.0.0.1 "$port"; then
		log "port $port is already in use (another demo running?); stop it first"
		exit 1
	fi
done

demo_pid=""
col_pid=""

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
	# The collector first, so it does not report the mail system going away.
	stop_pid "$col_pid" collector
	col_pid=""
	stop_pid "$demo_pid" "demo mail system"
	demo_pid=""
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

log "starting the demo mail system: $DEMO_BIN"
"$DEMO_BIN" &
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
log "collector started (pid $col_pid); metrics on http://localhost:$PROM_PORT/metrics; Ctrl-C to stop"

# Until Ctrl-C, or until either process exits on its own.
rc=0
wait -n "$demo_pid" "$col_pid" || rc=$?
if ! kill -0 "$col_pid" 2>/dev/null; then
	log "the collector exited (status $rc)"
	col_pid=""
else
	log "the demo mail system exited (status $rc)"
	demo_pid=""
fi
exit $((rc == 0 ? 1 : rc))
