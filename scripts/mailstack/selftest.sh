#!/usr/bin/env bash
# selftest.sh - end-to-end check of a running mailstack (scripts/mailstack.sh).
#
#   scripts/mailstack/selftest.sh [DIR]
#
# Uses only swaks, openssl and bash's /dev/tcp. Checks every submission mode
# with AUTH, local delivery and the relay hop in both directions (Maildir and
# postfix log), the security rules of the ports, IMAP in every mode, IMAP
# IDLE, and POP3 UIDL/TOP/DELE in every mode. Ends with "N passed, N failed"
# and exits non-zero on any failure. It leaves a few messages in the
# user@ mailboxes (and deletes what it puts into probe@b.test over POP3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mailstack=$here/../mailstack.sh
env_out=$("$mailstack" env "$@") || { echo "selftest: the stack is not started" >&2; exit 1; }
eval "$env_out"
"$mailstack" status "$@" >/dev/null || { echo "selftest: \`mailstack.sh status\` fails" >&2; exit 1; }

CA=$EMAILQOS_CA_FILE
RUN=$$-$RANDOM
passed=0 failed=0
check() { # DESCRIPTION COMMAND...
	local what=$1 t0=${EPOCHREALTIME/./} dt
	shift
	if "$@"; then
		passed=$((passed + 1))
		what="PASS  $what"
	else
		failed=$((failed + 1))
		what="FAIL  $what"
	fi
	dt=$(((${EPOCHREALTIME/./} - t0) / 1000))
	printf '%s (%d ms)\n' "$what" "$dt"
}
v() { printf '%s' "${!1}"; } # value of the variable named $1

# swaks against an endpoint: ENDPOINT MODE(plain|starttls|tls) ARGS...
sw() {
	local ep=$1 mode=$2
	shift 2
	local tls=()
	case $mode in
	starttls) tls=(--tls --tls-verify --tls-ca-path "$CA") ;;
	tls) tls=(--tlsc --tls-verify --tls-ca-path "$CA") ;;
	esac
	swaks -4 --helo selftest.local --server "${ep%:*}" --port "${ep##*:}" "${tls[@]}" \
		--timeout 15 "$@" 2>&1 || true
}

submit() { # ENDPOINT MODE MECH USER PASS TO SUBJECT
	sw "$1" "$2" --auth "$3" --auth-user "$4" --auth-password "$5" \
		--from "$4" --to "$6" --header "Subject: $7" | grep -q '^<[-~]  250 2.0.0 Ok: queued'
}

in_maildir() { # MAILDIR TOKEN [TIMEOUT]: wait for a message holding TOKEN
	local deadline=$((SECONDS + ${3:-15}))
	while ((SECONDS < deadline)); do
		grep -rqsF -- "$2" "$1/new" "$1/cur" && return 0
		sleep 0.1
	done
	return 1
}

# An IMAP or POP3 session: ENDPOINT MODE(plain|starttls|tls) PROTO(imap|pop3);
# the commands come on stdin (pipelined), the server's answers go to stdout.
session() {
	local ep=$1 mode=$2 proto=$3
	case $mode in
	plain)
		# shellcheck disable=SC2016 # expanded by the inner bash
		timeout 15 bash -c 'exec 3<>"/dev/tcp/$1/$2"; cat >&3; timeout 5 cat <&3' _ "${ep%:*}" "${ep##*:}"
		;;
	starttls)
		timeout 15 openssl s_client -quiet -starttls "$proto" -connect "$ep" -CAfile "$CA" -verify_return_error 2>/dev/null
		;;
	tls)
		timeout 15 openssl s_client -quiet -connect "$ep" -CAfile "$CA" -verify_return_error 2>/dev/null
		;;
	esac | tr -d '\r' || true
}

expect() { # PATTERN TEXT: TEXT has a line matching the extended regexp
	grep -qE -- "$1" <<<"$2"
}

# ------------------------------------------------------------ SMTP submission
for D in A B; do
	if [[ $D == A ]]; then O=B; else O=A; fi
	dom=$(v "EMAILQOS_${D}_DOMAIN") odom=$(v "EMAILQOS_${O}_DOMAIN")
	probe=$(v "EMAILQOS_${D}_PROBE_ADDR") pw=$(v "EMAILQOS_${D}_PROBE_PASS")
	for mode in plain starttls tls; do
		case $mode in
		plain) ep=$(v "EMAILQOS_${D}_SMTP_PLAIN") ;;
		starttls) ep=$(v "EMAILQOS_${D}_SMTP_STARTTLS") ;;
		tls) ep=$(v "EMAILQOS_${D}_SMTPS") ;;
		esac
		for target in "user@$dom" "user@$odom"; do
			tok="selftest-$RUN-$D-$mode-$target"
			if [[ $target == *"@$dom" ]]; then md=$(v "EMAILQOS_${D}_USER_MAILDIR"); else md=$(v "EMAILQOS_${O}_USER_MAILDIR"); fi
			mech=PLAIN
			[[ $target == *"@$odom" ]] && mech=LOGIN
			check "$dom submission $mode $ep: AUTH $mech, send to $target" submit "$ep" "$mode" "$mech" "$probe" "$pw" "$target" "$tok"
			check "  ... delivered into $md" in_maildir "$md" "$tok"
		done
		out=$(sw "$ep" "$mode" --from "$probe" --to "user@$dom")
		check "$dom submission $mode: no AUTH -> recipient refused" expect '^<(\*\*|~\*) 5[0-9][0-9] ' "$out"
		out=$(sw "$ep" "$mode" --auth PLAIN --auth-user "$probe" --auth-password wrong --from "$probe" --to "user@$dom")
		check "$dom submission $mode: wrong password -> 535" expect '^<(\*\*|~\*) 535 ' "$out"
	done
	ep=$(v "EMAILQOS_${D}_SMTP_PLAIN")
	out=$(sw "$ep" starttls --from "$probe" --to "user@$dom")
	check "$dom SMTP plain port offers no STARTTLS" expect 'did not advertise STARTTLS' "$out"
	ep=$(v "EMAILQOS_${D}_SMTP_STARTTLS")
	out=$(sw "$ep" plain --from "$probe" --to "user@$dom")
	check "$dom SMTP STARTTLS port: MAIL before STARTTLS -> 530" expect '^<\*\* 530 ' "$out"
	out=$(sw "$ep" plain --auth PLAIN --auth-user "$probe" --auth-password "$pw" --from "$probe" --to "user@$dom")
	check "$dom SMTP STARTTLS port: no AUTH before STARTTLS" expect 'did not advertise authentication' "$out"
	ep=$(v "EMAILQOS_${D}_MX")
	out=$(sw "$ep" plain --from "x@$odom" --to someone@example.com)
	check "$dom MX: no relaying to other domains" expect '^<\*\* 554 5.7.1 .*Relay access denied' "$out"
	out=$(sw "$ep" plain --from "x@$odom" --to "nobody@$dom")
	check "$dom MX: unknown user -> 550" expect '^<\*\* 550 ' "$out"
	ep=$(v "EMAILQOS_${D}_SMTPS")
	out=$(sw "$ep" tls --auth PLAIN --auth-user "$probe" --auth-password "$pw" --from "$probe" --to someone@example.com)
	check "$dom submission: domains outside the stack refused" expect '^<~\* 550 ' "$out"
done

for D in A B; do
	if [[ $D == A ]]; then O=B; else O=A; fi
	log=$(v "EMAILQOS_${D}_POSTFIX_LOG") mx=$(v "EMAILQOS_${O}_MX")
	check "${D,,}.test postfix.log: relay hop to ${O,,}.test MX $mx with TLS" expect "relay=[^ ]*:${mx##*:}, .*status=sent" "$(cat "$log")"
	check "  ... over trusted TLS" expect "Trusted TLS connection established to [^ ]*:${mx##*:}" "$(cat "$log")"
done

# ------------------------------------------------------------ IMAP
for D in A B; do
	user=$(v "EMAILQOS_${D}_USER_ADDR") pw=$(v "EMAILQOS_${D}_USER_PASS")
	dom=$(v "EMAILQOS_${D}_DOMAIN")
	for mode in plain starttls tls; do
		case $mode in
		plain) ep=$(v "EMAILQOS_${D}_IMAP") ;;
		starttls) ep=$(v "EMAILQOS_${D}_IMAP_STARTTLS") ;;
		tls) ep=$(v "EMAILQOS_${D}_IMAPS") ;;
		esac
		out=$(printf 'a1 LOGIN %s %s\r\na2 SELECT INBOX\r\na3 SEARCH SUBJECT "selftest-%s-A-plain"\r\na4 LOGOUT\r\n' "$user" "$pw" "$RUN" | session "$ep" "$mode" imap)
		check "$dom IMAP $mode $ep: LOGIN" expect '^a1 OK' "$out"
		check "  ... SEARCH finds the message sent from a.test" expect '^\* SEARCH [0-9]' "$out"
		[[ $mode == plain ]] && check "$dom IMAP plain port offers STARTTLS" expect '^\* OK .*STARTTLS' "$out"
	done
	ep=$(v "EMAILQOS_${D}_IMAP")
	out=$(printf 'a1 LOGIN %s wrong\r\na2 LOGOUT\r\n' "$user" | session "$ep" plain imap)
	check "$dom IMAP: wrong password -> NO" expect '^a1 NO' "$out"
done

# IMAP IDLE: a message delivered while idling is announced with EXISTS.
idle_test() {
	local ep=$EMAILQOS_B_IMAP user=$EMAILQOS_B_PROBE_ADDR pw=$EMAILQOS_B_PROBE_PASS fd line tok=selftest-$RUN-idle
	exec {fd}<>"/dev/tcp/${ep%:*}/${ep##*:}" || return 1
	read_until() { # PATTERN
		local deadline=$((SECONDS + 15))
		while ((SECONDS < deadline)); do
			IFS= read -r -t 15 line <&"$fd" || return 1
			line=${line%$'\r'}
			[[ $line =~ $1 ]] && return 0
		done
		return 1
	}
	local ok=1
	read_until '^\* OK' &&
		printf 'i1 LOGIN %s %s\r\n' "$user" "$pw" >&"$fd" && read_until '^i1 OK' &&
		printf 'i2 SELECT INBOX\r\n' >&"$fd" && read_until '^i2 OK' &&
		printf 'i3 IDLE\r\n' >&"$fd" && read_until '^\+ ' &&
		submit "$EMAILQOS_A_SMTPS" tls PLAIN "$EMAILQOS_A_PROBE_ADDR" "$EMAILQOS_A_PROBE_PASS" "$user" "$tok" &&
		read_until '^\* [0-9]+ EXISTS' &&
		printf 'DONE\r\n' >&"$fd" && read_until '^i3 OK' &&
		printf 'i4 LOGOUT\r\n' >&"$fd" && ok=0
	exec {fd}>&-
	return $ok
}
check "b.test IMAP IDLE: EXISTS pushed when mail from a.test arrives" idle_test

# ------------------------------------------------------------ POP3
pop3_test() { # MODE
	local mode=$1 ep user=$EMAILQOS_B_PROBE_ADDR pw=$EMAILQOS_B_PROBE_PASS out n1 n2 tok=selftest-$RUN-pop3-$1
	case $mode in
	plain) ep=$EMAILQOS_B_POP3 ;;
	starttls) ep=$EMAILQOS_B_POP3_STARTTLS ;;
	tls) ep=$EMAILQOS_B_POP3S ;;
	esac
	submit "$EMAILQOS_A_SMTP_PLAIN" plain PLAIN "$EMAILQOS_A_PROBE_ADDR" "$EMAILQOS_A_PROBE_PASS" "$user" "$tok" &&
		in_maildir "$EMAILQOS_B_PROBE_MAILDIR" "$tok" || return 1
	out=$(printf 'USER %s\r\nPASS %s\r\nSTAT\r\nUIDL\r\nTOP 1 0\r\nDELE 1\r\nQUIT\r\n' "$user" "$pw" | session "$ep" "$mode" pop3)
	expect '^\+OK Logged in' "$out" || { echo "  pop3 $mode: login failed" >&2; return 1; }
	expect '^1 [0-9a-f]+$' "$out" || { echo "  pop3 $mode: no UIDL listing" >&2; return 1; }
	expect '^Subject: ' "$out" || { echo "  pop3 $mode: TOP gave no headers" >&2; return 1; }
	expect '^\+OK Marked to be deleted' "$out" || { echo "  pop3 $mode: DELE failed" >&2; return 1; }
	n1=$(sed -n 's/^+OK \([0-9]*\) [0-9]*$/\1/p' <<<"$out" | head -n 1)
	out=$(printf 'USER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n' "$user" "$pw" | session "$ep" "$mode" pop3)
	n2=$(sed -n 's/^+OK \([0-9]*\) [0-9]*$/\1/p' <<<"$out" | head -n 1)
	[[ -n $n1 && -n $n2 && $n2 == $((n1 - 1)) ]] || { echo "  pop3 $mode: STAT $n1 -> $n2 after DELE" >&2; return 1; }
}
for mode in plain starttls tls; do
	check "b.test POP3 $mode: USER/PASS, STAT, UIDL, TOP, DELE (message gone after QUIT)" pop3_test "$mode"
done
out=$(printf 'AUTH PLAIN %s\r\nQUIT\r\n' "$(printf '\0%s\0%s' "$EMAILQOS_A_USER_ADDR" "$EMAILQOS_A_USER_PASS" | base64)" | session "$EMAILQOS_A_POP3" plain pop3)
check "a.test POP3 plain: AUTH PLAIN" expect '^\+OK Logged in' "$out"

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
