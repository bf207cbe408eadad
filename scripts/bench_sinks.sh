#!/usr/bin/env bash
# Sink throughput in one run: generated change events (default 1,000,000) into the file
# sink, the HTTP sink against a local counting receiver, and NATS JetStream, with the
# ratios to the file sink (target >= 0.7). No database needed: the events are generated
# (benches/sink_throughput.rs feeds them straight into the sinks in batches of 4096).
#
#   scripts/bench_sinks.sh [events] [nats-url]
# Without a NATS URL a private `nats-server -js` is started on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || {
    echo "nats-server is not installed (apt-get install nats-server)" >&2; exit 1; }
cargo bench --bench sink_throughput -- "${1:-1000000}" ${2:+"$2"}
