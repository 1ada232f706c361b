#!/bin/sh
# Makes systemd see the unit and enables it at boot, without starting it:
# the default configuration has to be edited first. On an upgrade a running
# service is restarted onto the new binary.
set -e

NAME=otelcol-emailqos

# deb: $1 = configure, $2 = the previously configured version (empty on a
# first install). rpm: $1 = 1 on install, 2 on upgrade.
upgrade=false
case "$1" in
configure) [ -n "$2" ] && upgrade=true ;;
[0-9]*) [ "$1" -gt 1 ] && upgrade=true ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl enable "$NAME.service" >/dev/null 2>&1 || true
	if [ "$upgrade" = true ]; then
		systemctl try-restart "$NAME.service" >/dev/null 2>&1 || true
	fi
fi
exit 0
