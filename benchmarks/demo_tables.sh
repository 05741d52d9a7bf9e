#!/usr/bin/env bash
# The parts of `distill demo` output that must not change between two versions of the code:
# everything but timings, latencies and output paths. Used to show a refactor is behaviour-
# preserving (benchmarks/RESULTS.md, "Architecture step"):
#   git checkout OLD && distill demo --quick --no-progress --out /tmp/a > a.txt 2>&1
#   git checkout NEW && distill demo --quick --no-progress --out /tmp/b > b.txt 2>&1
#   diff <(bash benchmarks/demo_tables.sh a.txt) <(bash benchmarks/demo_tables.sh b.txt) && echo IDENTICAL
set -euo pipefail
sed -E -e 's#/[^ ]*/(data|teacher|cache|runs|export)/#OUT/\1/#g' \
       -e 's#/[^ ]*/(cache|export)( |$)#OUT/\1\2#g' \
       -e 's#/[^ ]*/(report\.(html|md)|results\.md|bench\.jsonl)#OUT/\1#g' \
       -e "s#'/[^']*/runs/#'OUT/runs/#g" \
       -e 's/\(t=[0-9]+s\)//' -e 's/demo finished in [0-9]+s( \([^)]*\))?/demo finished/' "$1" \
  | grep -v -E 'latency on this CPU|^real|^user|^sys' \
  | awk '/latency p50 in ms/{tbl=1} tbl && NF==6 && $3 ~ /^[0-9]+$/ {print $1, $2, $3, $6; next} {print}'  \
  | awk 'NF { for (; blank > 0; blank--) print ""; print; next } { blank++ }'  # no trailing blank lines
