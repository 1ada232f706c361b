#!/usr/bin/env bash
# bench-report.sh - splice the benchmark tables into BENCHMARKS.md.
#
#   scripts/bench-report.sh
#
# Each _build/bench/NAME.md replaces what lies between the lines
# `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` of BENCHMARKS.md. Everything
# else is left untouched; a section without a file keeps its content, and a
# file without a (complete) pair of markers is reported and skipped.
#
# Knobs (environment): BENCH_OUT (_build/bench), BENCH_DOC (BENCHMARKS.md).
set -euo pipefail

readonly PROG=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
readonly ROOT
readonly OUT=${BENCH_OUT:-$ROOT/_build/bench}
readonly DOC=${BENCH_DOC:-$ROOT/BENCHMARKS.md}

[[ -f $DOC ]] || { echo "$PROG: error: $DOC not found" >&2; exit 1; }

names=()
shopt -s nullglob
for f in "$OUT"/*.md; do
	name=$(basename "$f" .md)
	open=$(grep -cxF "<!-- bench:$name -->" "$DOC" || true)
	close=$(grep -cxF "<!-- /bench:$name -->" "$DOC" || true)
	if [[ $open != 1 || $close != 1 ]]; then
		echo "$PROG: $name.md: no single <!-- bench:$name --> ... <!-- /bench:$name --> pair in $(basename "$DOC"), skipped" >&2
		continue
	fi
	names+=("$name")
done
if ((${#names[@]} == 0)); then
	echo "$PROG: nothing to splice from $OUT" >&2
	exit 0
fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
awk -v out="$OUT" -v names="${names[*]}" '
BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) splice[list[i]] = 1 }
skip && $0 == "<!-- /bench:" skip " -->" { skip = ""; print; next }
skip { next }
/^<!-- bench:[A-Za-z0-9_.-]+ -->$/ {
	name = substr($0, 12, length($0) - 15)
	print
	if (name in splice) {
		file = out "/" name ".md"
		while ((getline line < file) > 0) print line
		close(file)
		skip = name
	}
	next
}
{ print }
' "$DOC" >"$tmp"
if ! cmp -s "$tmp" "$DOC"; then
	cat "$tmp" >"$DOC"
fi
echo "$PROG: spliced ${names[*]} into $(basename "$DOC")" >&2
