#!/bin/sh
# Creates the otelcol-emailqos system group and user the service runs as:
# no login shell, no home directory (the service writes nothing).
set -e

NAME=otelcol-emailqos

nologin="$(command -v nologin 2>/dev/null || true)"
for candidate in /usr/sbin/nologin /sbin/nologin; do
	[ -n "$nologin" ] && break
	[ -x "$candidate" ] && nologin="$candidate"
done
[ -n "$nologin" ] || nologin=/bin/false

if ! getent group "$NAME" >/dev/null 2>&1; then
	groupadd --system "$NAME"
fi
if ! getent passwd "$NAME" >/dev/null 2>&1; then
	useradd --system --gid "$NAME" --no-create-home --home-dir /nonexistent \
		--shell "$nologin" --comment "otelcol-emailqos service" "$NAME"
fi
exit 0
