#!/usr/bin/env bash
# Smoke-tests the built otelcol-emailqos distribution:
#   - `components` lists the emailqos receiver (and the other bundled components),
#   - `validate` accepts testdata/config.yaml and examples/demo.yaml,
#   - `validate` rejects testdata/invalid_unknown_account.yaml, naming the
#     target and the unknown account, without printing the account's password.
# Prints PASS/FAIL per check and a final "N passed, M failed" line; exits
# non-zero if any check failed.
#
# Usage: scripts/check-distribution.sh   (after `make build`)
#        DIST_BIN=path/to/otelcol-emailqos scripts/check-distribution.sh
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

DIST_BIN="${DIST_BIN:-_build/otelcol-emailqos/otelcol-emailqos}"
passed=0
failed=0

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# indent and show a command's output under a FAIL line
show() { sed 's/^/    | /' <<<"$1"; }

finish() {
	echo "${passed} passed, ${failed} failed"
	[ "$failed" -eq 0 ]
	exit
}

if [ ! -x "$DIST_BIN" ]; then
	fail "distribution binary $DIST_BIN not found or not executable (run 'make build')"
	finish
fi
echo "Checking $DIST_BIN"

# --- components ------------------------------------------------------------
if components="$("$DIST_BIN" components 2>&1)"; then
	pass "'components' runs"
else
	fail "'components' exited non-zero"
	show "$components"
fi

# section KIND: the "- name:"/"- scheme:" entries of one top-level section
section() {
	awk -v sec="$1:" '
		/^[^ ]/ { in_sec = ($1 == sec); next }
		in_sec && $1 == "-" && ($2 == "name:" || $2 == "scheme:") { print $3 }
	' <<<"$components"
}

expect_component() { # KIND NAME [ALTERNATIVE NAME...]
	local kind=$1; shift
	local have n
	have="$(section "$kind")"
	for n in "$@"; do
		if grep -qxF "$n" <<<"$have"; then
			pass "components lists ${kind%s} '$n'"
			return
		fi
	done
	fail "components does not list ${kind%s} '$1' (${kind}: ${have//$'\n'/ })"
}

expect_component receivers emailqos
expect_component processors batch
expect_component processors memory_limiter
# The fleet's (deploy/kubernetes): the vantage point and liveness/readiness.
expect_component processors resource
expect_component extensions health_check
expect_component exporters debug
expect_component exporters otlp_grpc otlp
expect_component exporters otlp_http otlphttp
expect_component exporters prometheus
expect_component providers env
expect_component providers file
expect_component providers yaml

# --- validate: valid configurations -------------------------------------------
expect_valid() { # CONFIG [VAR=VALUE...]
	local cfg=$1; shift
	local out
	if [ ! -f "$cfg" ]; then
		fail "validate $cfg: file not found"
		return
	fi
	if out="$(env "$@" "$DIST_BIN" validate --config "$cfg" 2>&1)"; then
		pass "validate accepts $cfg"
	else
		fail "validate rejects $cfg (exit $?)"
		show "$out"
	fi
}

expect_valid testdata/config.yaml
expect_valid examples/demo.yaml EMAILQOS_DEMO_ALICE_PASSWORD=alice-demo-password

# --- validate: invalid configuration ------------------------------------------
invalid=testdata/invalid_unknown_account.yaml
if [ ! -f "$invalid" ]; then
	fail "validate $invalid: file not found"
else
	out="$("$DIST_BIN" validate --config "$invalid" 2>&1)"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		pass "validate rejects $invalid (exit $rc)"
	else
		fail "validate accepts $invalid (exit 0), expected a non-zero exit"
	fi
	if grep -qF broken <<<"$out" && grep -qF nosuch <<<"$out"; then
		pass "the error names target 'broken' and account 'nosuch'"
	else
		fail "the error does not name both target 'broken' and account 'nosuch'"
		show "$out"
	fi
	if grep -qF alice-demo-password <<<"$out"; then
		fail "the error output leaks the account password"
		show "$out"
	else
		pass "the error output does not leak the account password"
	fi
	if grep -qE '^(panic:|goroutine [0-9]+ \[)' <<<"$out"; then
		fail "validate panicked on $invalid"
		show "$out"
	fi
fi

finish
