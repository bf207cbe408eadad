#!/usr/bin/env bash
# The summary table of a benchmark run, in Markdown, from the RESULT lines (scripts/bench_lib.sh)
# of a saved log: one row per workload, in the order they ran.
#
#   scripts/bench_summary.sh target/bench/bench.log > target/bench/summary.md
#
# Rates are events (or rows, or messages) per second: the median of the runs, then the
# slowest–fastest run. Ratio = logtide's median / the reference's median. RSS is logtide's
# peak over the runs; CPU is logtide's user + system time per event (median of the runs).
# Lines of the log starting with "latency " (scripts/bench_pg.sh) and "machine:" /
# "workload sizes:" (scripts/bench.sh) are kept as notes.
set -euo pipefail
LOG=${1:?usage: scripts/bench_summary.sh <bench log>}
[ -r "$LOG" ] || { echo "cannot read $LOG: give the log scripts/bench.sh wrote (target/bench/bench.log)" >&2; exit 1; }
awk -F'|' '
  function rate(x) {
    if (x == "-" || x == "") return "-"
    if (x >= 1e6) return sprintf("%.2fM", x / 1e6)
    if (x >= 1e5) return sprintf("%.0fk", x / 1e3)
    if (x >= 1e3) return sprintf("%.1fk", x / 1e3)
    return sprintf("%.0f", x)
  }
  function cell(tool, lo, med, hi) {
    if (med == "-") return tool " - (no accepted run)"
    return tool " " rate(med) " (" rate(lo) "–" rate(hi) ")"
  }
  /^== / { section = substr($0, 4); sub(/ \(.*/, "", section); next }
  /^(machine|workload sizes):/ { notes[++nn] = $0; next }
  /^latency / { notes[++nn] = section ": " $0; next }
  $1 != "RESULT" || NF != 8 { next }
  {
    w = $2
    if (!(w in seen)) { seen[w] = 1; order[++nw] = w }
    if ($3 == "logtide") { lt[w] = cell("", $4, $5, $6); lmed[w] = $5; rss[w] = $7; cpu[w] = $8 }
    else { ref[w] = cell($3, $4, $5, $6); rmed[w] = $5 }
  }
  END {
    print "| workload | logtide (median, min–max) | reference (median, min–max) | ratio (median) | logtide peak RSS | logtide CPU µs/event |"
    print "| --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= nw; i++) {
      w = order[i]
      ratio = (lmed[w] != "" && lmed[w] != "-" && rmed[w] != "" && rmed[w] != "-" && rmed[w] > 0) ? sprintf("%.2f", lmed[w] / rmed[w]) : "-"
      l = (w in lt) ? substr(lt[w], 2) : "-"
      r = (w in ref) ? ref[w] : "-"
      m = (rss[w] != "" && rss[w] != "-") ? rss[w] " MB" : "-"
      c = (cpu[w] != "") ? cpu[w] : "-"
      printf "| %s | %s | %s | %s | %s | %s |\n", w, l, r, ratio, m, c
    }
    if (nn) print ""
    for (i = 1; i <= nn; i++) print "- " notes[i]
  }' "$LOG"
