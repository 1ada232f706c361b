#!/bin/sh
# Stops and disables the service when the package is removed (not when it
# is upgraded).
set -e

NAME=otelcol-emailqos

# deb: $1 = remove | upgrade | deconfigure ...; rpm: $1 = 0 on erase,
# 1 on upgrade.
case "$1" in
remove | deconfigure | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl stop "$NAME.service" >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable "$NAME.service" >/dev/null 2>&1 || true
fi
exit 0
