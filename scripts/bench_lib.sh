# Shared by the bench_*.sh scripts (sourced, not run).
#
# bench_result <workload> <tool> <events> <seconds...> -- <rss_kb...> -- <cpu_seconds...>
# prints one machine-readable line for scripts/bench.sh's summary table:
#
#   RESULT|<workload>|<tool>|<min ev/s>|<median ev/s>|<max ev/s>|<peak RSS MB>|<CPU us/event>
#
# Rates come from the accepted runs' wall-clock seconds (min = the slowest run); the RSS is
# the highest of the runs; the CPU time (user + system of the tool's process) per event is
# the median of the runs. `-` where a list is empty (no accepted run, or not measured).
# The tool is "logtide" for logtide's side; any other name is the reference of the workload.
bench_result() {
  local workload=$1 tool=$2 events=$3
  shift 3
  printf '%s\n' "$@" | awk -v w="$workload" -v t="$tool" -v n="$events" '
    function median(a, k,   i, j, x) {
      for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    $0 == "--" { part++; next }
    $0 == "" { next }
    part == 0 && $1 > 0 { r[++nr] = n / $1 }
    part == 1 && $1 > 0 { if ($1 > rss) rss = $1; nrss++ }
    part == 2 && $1 != "" { c[++nc] = $1 * 1e6 / n }
    END {
      if (nr == 0) { lo = "-"; med = "-"; hi = "-" }
      else { med = sprintf("%.0f", median(r, nr)); lo = sprintf("%.0f", r[1]); hi = sprintf("%.0f", r[nr]) }
      printf "RESULT|%s|%s|%s|%s|%s|%s|%s\n", w, t, lo, med, hi,
        (nrss ? sprintf("%.1f", rss / 1024) : "-"), (nc ? sprintf("%.2f", median(c, nc)) : "-")
    }'
}
