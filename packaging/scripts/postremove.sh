#!/bin/sh
# After removal: systemd forgets the unit. On purge (deb) everything the
# package created goes too: the configuration directory and the service's
# user and group. A plain remove keeps them, as dpkg keeps conffiles; rpm
# has no purge and keeps the user, as is usual there (config.yaml and the
# environment file are saved as .rpmsave if they were changed).
set -e

NAME=otelcol-emailqos

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi

if [ "$1" = purge ]; then
	rm -rf "/etc/$NAME"
	if getent passwd "$NAME" >/dev/null 2>&1; then
		userdel "$NAME" >/dev/null 2>&1 || true
	fi
	if getent group "$NAME" >/dev/null 2>&1; then
		groupdel "$NAME" >/dev/null 2>&1 || true
	fi
fi
exit 0
