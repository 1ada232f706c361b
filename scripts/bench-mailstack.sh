#!/usr/bin/env bash
# bench-mailstack.sh - measurement error of the emailqos receiver against
# ground truth on real Postfix/Dovecot, side by side with the Nagios plugin
# check_email_delivery.
#
#   scripts/bench-mailstack.sh
#
# Run as root on Debian 12 (`make bench` calls it). It installs what it needs
# with apt-get (the mail stack's packages, monitoring-plugins-contrib and the
# Perl modules check_email_delivery loads for plain SMTP AUTH and IMAP),
# starts its own mail stack (scripts/mailstack.sh in $BENCH_STACK_DIR, default
# /tmp/emailqos-bench), adds the accounts gt1..gt5 in a.test and b.test, routes
# a.test's mail for b.test through the delaying relay of the harness
# (internal/bench/groundtruth, build tag bench), runs it, and stops the stack again.
# It writes _build/bench/groundtruth.md and _build/bench/peer.md (Markdown
# tables for BENCHMARKS.md) and takes about 12-15 minutes.
#
# Knobs (environment): BENCH_N probes per cell and method (30), BENCH_PEER_N
# peer checks per cell and configuration (16), BENCH_IDLE_N samples of
# Dovecot's IDLE announcement delay (20), BENCH_DELAYS injected relay
# delays (0s,1s,5s; 0s passes the relay without a hold), BENCH_POLL_INTERVAL
# (10s, the receiver's default), BENCH_METHODS (auto,idle,poll,precise,pop3),
# BENCH_PEER=0 skips the peer, BENCH_OUT (_build/bench).
set -euo pipefail

readonly PROG=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly ROOT
readonly STACK_DIR=${BENCH_STACK_DIR:-/tmp/emailqos-bench}
readonly OUT=${BENCH_OUT:-$ROOT/_build/bench}
readonly RELAY=127.0.0.3:12725
readonly STREAMS=5
# check_email_delivery, and the modules its plugins `require` for what is
# used here: Mail::IMAPClient (check_imap_receive), Net::SMTP_auth
# (check_smtp_send --auth without TLS). Net::SMTP and Getopt::Long come
# with perl.
readonly PEER_PACKAGES=(monitoring-plugins-contrib libmail-imapclient-perl libnet-smtpauth-perl)
readonly PLUGINS=/usr/lib/nagios/plugins

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (it starts postfix and dovecot instances and installs packages)"
command -v go >/dev/null || die "go is not on PATH"

install_peer() {
	local missing=() p
	for p in "${PEER_PACKAGES[@]}"; do
		[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	log "installing ${missing[*]} (apt-get, non-interactive)"
	local aptlog
	aptlog=$(mktemp /tmp/emailqos-bench-apt.XXXXXX)
	if ! { DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 update &&
		DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends "${missing[@]}"; } >"$aptlog" 2>&1; then
		tail -n 30 "$aptlog" >&2
		die "apt-get failed; full log: $aptlog"
	fi
	rm -f "$aptlog"
}

peer=${BENCH_PEER:-1}
if [[ $peer != 0 ]]; then
	install_peer
	[[ -x $PLUGINS/check_email_delivery ]] || die "$PLUGINS/check_email_delivery is missing"
fi

mkdir -p "$OUT"
bin=$OUT/groundtruth
log "building the harness (go build -tags bench ./internal/bench/groundtruth)"
(cd "$ROOT" && go build -tags bench -o "$bin" ./internal/bench/groundtruth)

mailstack=$ROOT/scripts/mailstack.sh
log "starting the mail stack in $STACK_DIR"
"$mailstack" start "$STACK_DIR"
cleanup() {
	local rc=$?
	"$mailstack" relay a off "$STACK_DIR" >/dev/null 2>&1 || true
	log "stopping the mail stack"
	"$mailstack" stop "$STACK_DIR" || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for d in a b; do
	for i in $(seq 1 "$STREAMS"); do
		"$mailstack" adduser "gt$i@$d.test" "gt-$d-$i-pw" "$STACK_DIR" 2>/dev/null
	done
done
"$mailstack" relay a "$RELAY" "$STACK_DIR"
eval "$("$mailstack" env "$STACK_DIR")"
# postfix picks up the new accounts and the route on reload; give it a moment.
sleep 1

args=(-out "$OUT" -n "${BENCH_N:-30}" -idle-n "${BENCH_IDLE_N:-20}" -peer-n "${BENCH_PEER_N:-16}" -delays "${BENCH_DELAYS:-0s,1s,5s}"
	-poll-interval "${BENCH_POLL_INTERVAL:-10s}" -relay-listen "$RELAY" -streams "$STREAMS" -plugins "$PLUGINS")
[[ $peer != 0 ]] || args+=(-peer=false)
[[ -z ${BENCH_METHODS:-} ]] || args+=(-methods "$BENCH_METHODS")
log "running the benchmark (about 12-15 minutes)"
t0=$SECONDS
"$bin" run "${args[@]}"
log "done in $((SECONDS - t0))s: tables in $OUT (groundtruth.md, peer.md)"
