#!/bin/bash
# The capacity report renders in a browser: `msgsim plan --small --live-json` (a saved
# `msgsim live bench --json`, tests/data/live_bench_fixture.json) writes report.html, headless
# Chromium loads it (no JavaScript needed) and dumps the rendered DOM, and every plot must be
# there as an SVG with drawn series. Skips (exit 77) only when chromium is not installed;
# scripts/setup installs it, so CI runs it.
set -euo pipefail
msgsim="$1"
source_dir="$2"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "SKIP: chromium is not installed (scripts/setup installs Debian's chromium package)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$msgsim" plan "$source_dir/workloads/seed.json" --cost-table "$source_dir/reports/cost_table.json" \
  --small --live-json "$source_dir/tests/data/live_bench_fixture.json" --out "$work/report" > "$work/plan.md"
grep -q "Chat servers" "$work/plan.md"
# The comparison table: one row per rate of the fixture, measured figures from it (us -> ms).
for row in "| 500 | " "| 1,000 | " "| 2,000 | " "| 4,000 | "; do
  grep -qF "$row" "$work/plan.md" || { echo "FAIL: no comparison row starting $row"; exit 1; }
done
grep -qF "| 42.91 ms | " "$work/plan.md" || { echo "FAIL: the measured p50 of 500/s is not in the table"; exit 1; }
grep -qF "below the knee" "$work/plan.md" || { echo "FAIL: no knee column"; exit 1; }
timeout 120 "$browser" --headless --disable-gpu --no-sandbox --user-data-dir="$work/profile" \
  --dump-dom "file://$work/report/report.html" > "$work/dom.html" 2> "$work/chromium.log" || {
  cat "$work/chromium.log"; exit 1; }
status=0
for id in plot-servers-vs-dau plot-latency-p99 plot-latency-p50 plot-storm-online plot-storm-cpu plot-model-vs-live; do
  # The element exists in the rendered DOM as an svg, and holds at least one drawn series.
  block=$(awk -v id="$id" 'index($0, "<svg") && index($0, "id=\"" id "\"") {on=1} on {print} on && index($0, "</svg>") {exit}' "$work/dom.html")
  if [ -z "$block" ]; then
    echo "FAIL: no <svg id=\"$id\"> in the rendered DOM"; status=1; continue
  fi
  series=$(grep -c '<polyline class="series"' <<< "$block" || true)
  if [ "$series" -lt 1 ]; then
    echo "FAIL: $id has no series"; status=1; continue
  fi
  if [ "$id" = plot-model-vs-live ] && [ "$series" -lt 4 ]; then
    echo "FAIL: $id has $series series, expected predicted and measured p50 and p99"; status=1; continue
  fi
  echo "ok: $id rendered with $series series"
done
if grep -q "<script" "$work/dom.html"; then echo "FAIL: the report contains a script"; status=1; fi
exit $status
