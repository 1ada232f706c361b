#!/usr/bin/env bash
# Builds the otelcol-emailqos .deb and .rpm into _build/packages/ with nfpm
# (packaging/nfpm.yaml): the ocb-built collector, emailqos-check, the systemd
# unit, the default configuration and environment file.
#
# Usage: make package (installs nfpm, builds the collector if it is missing),
# or scripts/package.sh after `make build` (NFPM names nfpm if not on PATH).
# The binaries' paths are fixed in packaging/nfpm.yaml.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NFPM="${NFPM:-nfpm}"
GO="${GO:-go}"
DIST_BIN=_build/otelcol-emailqos/otelcol-emailqos
CHECK_BIN=_build/emailqos-check
OUT="${OUT:-_build/packages}"

log() { echo "package: $*" >&2; }

if [ ! -x "$DIST_BIN" ]; then
	log "$DIST_BIN not found: run 'make build' first"
	exit 1
fi

# The version is the distribution's, from builder-config.yaml's dist block.
version="$(awk '
	/^[^[:space:]#]/ { in_dist = ($0 ~ /^dist:/) }
	in_dist && $1 == "version:" { gsub(/["'\'']/, "", $2); print $2; exit }
' builder-config.yaml)"
if [ -z "$version" ]; then
	log "no dist.version in builder-config.yaml"
	exit 1
fi
arch="$("$GO" env GOARCH)"

log "go build -o $CHECK_BIN ./cmd/emailqos-check"
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$CHECK_BIN" ./cmd/emailqos-check

mkdir -p "$OUT"
rm -f "$OUT"/otelcol-emailqos*.deb "$OUT"/otelcol-emailqos*.rpm
export EMAILQOS_VERSION="$version" EMAILQOS_ARCH="$arch"
for packager in deb rpm; do
	log "nfpm package --packager $packager (version $version, $arch)"
	"$NFPM" package --config packaging/nfpm.yaml --packager "$packager" --target "$OUT/"
done
ls -l "$OUT"/otelcol-emailqos*
