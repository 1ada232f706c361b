#!/usr/bin/env bash
# Installs the built .deb on this (Debian) machine and checks it as an
# operator would meet it, then purges it and checks nothing is left; then
# inspects the .rpm with rpm. Needs root; installs rpm with apt-get if it is
# missing.
#
# Usage: make package-test (after make package), or scripts/package-test.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT="${OUT:-_build/packages}"
NAME=otelcol-emailqos
ETC=/etc/$NAME
UNIT=/usr/lib/systemd/system/$NAME.service

fails=0
log() { echo "package-test: $*" >&2; }
pass() { echo "  ok: $*"; }
fail() {
	echo "  FAIL: $*"
	fails=$((fails + 1))
}
check() { # DESCRIPTION COMMAND...: pass if the command succeeds
	local what="$1"
	shift
	if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
expect_stat() { # PATH MODE OWNER GROUP
	local got
	got="$(stat -c '%a %U %G' "$1" 2>/dev/null || echo missing)"
	if [ "$got" = "$2 $3 $4" ]; then pass "$1 is $2 $3:$4"; else fail "$1 is $got, want $2 $3:$4"; fi
}

if [ "$(id -u)" != 0 ]; then
	log "needs root (dpkg -i, a system user)"
	exit 1
fi
command -v dpkg >/dev/null || {
	log "needs dpkg (Debian)"
	exit 1
}
deb="$(ls "$OUT"/${NAME}_*.deb 2>/dev/null | head -n1 || true)"
rpmfile="$(ls "$OUT"/${NAME}-*.rpm 2>/dev/null | head -n1 || true)"
if [ -z "$deb" ] || [ -z "$rpmfile" ]; then
	log "no .deb or .rpm in $OUT: run 'make package' first"
	exit 1
fi

# A leftover installation would hide what this one does.
if dpkg-query -W -f '${Status}' "$NAME" 2>/dev/null | grep -q 'install\|config-files'; then
	log "purging an earlier installation of $NAME"
	dpkg --purge "$NAME" >/dev/null
fi

echo "==> dpkg -i $deb"
dpkg -i "$deb"

echo "==> user and group"
check "group $NAME exists" getent group "$NAME"
if entry="$(getent passwd "$NAME")"; then
	IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
	pass "user $NAME exists (uid $uid)"
	case "$shell" in
	*/nologin | /bin/false) pass "no login shell ($shell)" ;;
	*) fail "login shell $shell" ;;
	esac
	[ "$uid" -lt 1000 ] && pass "system uid" || fail "uid $uid is not a system uid"
	[ "$gid" = "$(getent group "$NAME" | cut -d: -f3)" ] && pass "primary group $NAME" || fail "primary group $gid"
	[ ! -e "$home" ] && pass "no home directory ($home)" || fail "home $home exists"
else
	fail "user $NAME exists"
fi

echo "==> files, owners and modes"
expect_stat /usr/bin/$NAME 755 root root
expect_stat /usr/bin/emailqos-check 755 root root
expect_stat "$UNIT" 644 root root
expect_stat "$ETC" 750 root "$NAME"
expect_stat "$ETC/config.yaml" 640 root "$NAME"
expect_stat "$ETC/$NAME.conf" 640 root "$NAME"
check "examples under /usr/share/doc/$NAME/examples" test -f /usr/share/doc/$NAME/examples/m365-oauth.yaml
check "alert rules under /usr/share/doc/$NAME/deploy" test -f /usr/share/doc/$NAME/deploy/prometheus/emailqos-alerts.yaml
conffiles="$(dpkg-query --showformat='${Conffiles}\n' --show "$NAME")"
for f in "$ETC/config.yaml" "$ETC/$NAME.conf"; do
	grep -q " $f " <<<"$conffiles" && pass "$f is a conffile" || fail "$f is not a conffile"
done
check "the installed collector runs" /usr/bin/$NAME --version

echo "==> systemd unit"
if [ -d /run/systemd/system ]; then
	check "enabled by postinst" systemctl is-enabled --quiet "$NAME.service"
	if systemctl is-active --quiet "$NAME.service"; then fail "started by postinst"; else pass "not started by postinst"; fi
else
	pass "systemd is not running here: postinst neither enabled nor started anything"
	check "not enabled without systemd" test ! -e /etc/systemd/system/multi-user.target.wants/$NAME.service
fi
verified=false
if command -v systemd-analyze >/dev/null; then
	if out="$(systemd-analyze verify "$UNIT" 2>&1)"; then
		# Unknown keys and bad values are only warnings to systemd.
		if grep -qiE 'unknown|ignoring|invalid|failed' <<<"$out"; then
			fail "systemd-analyze verify $UNIT warns: $out"
		else
			pass "systemd-analyze verify $UNIT"
		fi
		verified=true
	elif grep -qiE 'failed to (connect|initialize)|system has not been booted|No such file or directory.*bus' <<<"$out"; then
		log "systemd-analyze cannot run here ($out); parsing the unit instead"
	else
		fail "systemd-analyze verify $UNIT: $out"
		verified=true
	fi
fi
if [ "$verified" = false ]; then
	for want in "User=$NAME" "Group=$NAME" "EnvironmentFile=$ETC/$NAME.conf" "Restart=on-failure" \
		"NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" "WantedBy=multi-user.target"; do
		grep -qxF "$want" "$UNIT" && pass "unit has $want" || fail "unit lacks $want"
	done
	grep -qE "^ExecStart=/usr/bin/$NAME .*--config $ETC/config.yaml\$" "$UNIT" && pass "ExecStart runs /usr/bin/$NAME --config $ETC/config.yaml" || fail "ExecStart"
fi

echo "==> the default configuration validates as the service user, with the environment file"
as_service() { # COMMAND...: run as the service user with the unit's environment
	(
		set -a
		# shellcheck disable=SC1090
		. "$ETC/$NAME.conf"
		set +a
		setpriv --reuid="$NAME" --regid="$NAME" --init-groups --no-new-privs --inh-caps=-all "$@"
	)
}
if out="$(as_service /usr/bin/$NAME validate --config "$ETC/config.yaml" 2>&1)"; then
	pass "$NAME validate --config $ETC/config.yaml (as $NAME)"
else
	fail "$NAME validate as $NAME: $out"
fi
# emailqos-check reads the same file and names the configured targets; an
# unknown one is a configuration error (exit 2), so nothing is probed.
set +e
out="$(as_service /usr/bin/emailqos-check --config "$ETC/config.yaml" --target no-such-target 2>&1)"
rc=$?
set -e
if [ "$rc" = 2 ] && grep -q 'targets: mail' <<<"$out"; then
	pass "emailqos-check reads $ETC/config.yaml as $NAME"
else
	fail "emailqos-check as $NAME (exit $rc): $out"
fi
if as_service cat "$ETC/$NAME.conf" >/dev/null 2>&1; then pass "the service user can read its environment file"; else fail "the service user cannot read $ETC/$NAME.conf"; fi
if setpriv --reuid=nobody --regid=nogroup --clear-groups cat "$ETC/config.yaml" >/dev/null 2>&1; then
	fail "other users can read $ETC/config.yaml"
else
	pass "other users cannot read $ETC/config.yaml"
fi

echo "==> dpkg --purge $NAME"
dpkg --purge "$NAME"
for f in /usr/bin/$NAME /usr/bin/emailqos-check "$UNIT" "$ETC" /usr/share/doc/$NAME; do
	[ ! -e "$f" ] && pass "$f removed" || fail "$f left after purge"
done
if getent passwd "$NAME" >/dev/null || getent group "$NAME" >/dev/null; then
	fail "user or group $NAME left after purge"
else
	pass "user and group $NAME removed on purge"
fi
left="$(find /etc /usr /var/lib/systemd -path '/proc' -prune -o -name "*$NAME*" -print 2>/dev/null | grep -v '^/usr/share/doc/\|/var/lib/dpkg/' || true)"
[ -z "$left" ] && pass "no file named *$NAME* left" || fail "left after purge: $left"

echo "==> rpm: $rpmfile"
if ! command -v rpm >/dev/null; then
	log "apt-get install rpm"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q rpm >/dev/null || {
		apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rpm >/dev/null
	}
fi
info="$(rpm -qip "$rpmfile" 2>/dev/null)"
grep -q "^Name *: $NAME" <<<"$info" && pass "rpm name $NAME" || fail "rpm name: $info"
version="$(awk '/^[^[:space:]#]/ { d = ($0 ~ /^dist:/) } d && $1 == "version:" { print $2; exit }' builder-config.yaml)"
grep -q "^Version *: ${version//-/\~}" <<<"$info" && pass "rpm version ${version//-/\~} (dist.version $version)" || fail "rpm version: $(grep ^Version <<<"$info")"
files="$(rpm -qp --queryformat '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpmfile" 2>/dev/null)"
for want in \
	"-rwxr-xr-x root root  /usr/bin/$NAME" \
	"-rwxr-xr-x root root  /usr/bin/emailqos-check" \
	"-rw-r--r-- root root  $UNIT" \
	"drwxr-x--- root $NAME  $ETC" \
	"-rw-r----- root $NAME cn $ETC/config.yaml" \
	"-rw-r----- root $NAME cn $ETC/$NAME.conf"; do
	grep -qxF -- "$want" <<<"$files" && pass "rpm: $want" || fail "rpm lacks: $want"
done
scripts="$(rpm -qp --scripts "$rpmfile" 2>/dev/null)"
for want in "preinstall scriptlet" "useradd --system" "postinstall scriptlet" "systemctl enable" \
	"preuninstall scriptlet" "systemctl stop" "postuninstall scriptlet" "daemon-reload"; do
	grep -qF -- "$want" <<<"$scripts" && pass "rpm scripts: $want" || fail "rpm scripts lack: $want"
done

ls -l "$deb" "$rpmfile"
if [ "$fails" -gt 0 ]; then
	log "FAIL: $fails check(s) failed"
	exit 1
fi
log "PASS"
