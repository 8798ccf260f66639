#!/usr/bin/env bash
# The whole performance run of docs/performance.md, on this machine, in one go: installs
# InspIRCd (Debian's package) when it is missing, then runs roomz's load generator against
# roomz and InspIRCd side by side, then roomz's other workloads and the TUI bench.
#
#   benches/compare.sh [--seconds N]      (default 10 s of measurement per fan-out row)
#
# The report goes to standard output as markdown; the per-run lines go to standard error.
# Run it on a quiet machine: the load generator shares the machine with the server.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
if [[ "${1:-}" == "--seconds" && -n "${2:-}" ]]; then
  seconds=$2
fi

if ! command -v inspircd >/dev/null; then
  echo "installing InspIRCd (apt-get install inspircd)" >&2
  if [[ $(id -u) -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y inspircd >&2
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y inspircd >&2
  fi
fi
# Debian's package may start a daemon of its own: it is not the one measured.
if command -v systemctl >/dev/null && systemctl is-active --quiet inspircd 2>/dev/null; then
  echo "note: the system's own InspIRCd service is running; the benchmark starts its own" >&2
fi

# 10,000 connections need more than the usual 1,024 open files.
ulimit -n "$(ulimit -Hn)"

cargo build --release --benches >&2

echo "## Run of $(date -u +%Y-%m-%d): $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/^Mem:/ {print $2}') GiB"
echo
echo "roomz $(git describe --always --dirty 2>/dev/null || echo '(no git)'), $(inspircd --version 2>/dev/null | head -1 || echo InspIRCd)"
echo
echo '### Side by side'
echo
cargo bench --bench load -- compare --seconds "$seconds"
echo
echo '### roomz alone'
echo
echo '```'
# Acknowledged messages: at the goal's latency (few in flight), then flat out.
cargo bench --bench load -- ingest --window 4 2>/dev/null | grep '^roomz'
cargo bench --bench load -- ingest --window 64 2>/dev/null | grep '^roomz'
cargo bench --bench load -- disk 2>/dev/null | grep '^disk'
cargo bench --bench load -- history 2>/dev/null | grep '^roomz'
cargo bench --bench load -- storm 2>/dev/null | grep '^roomz'
# As many idle connections as one process may open here (the open-file limit), at most
# the goal's 100,000.
idle=$(( $(ulimit -n) - 1000 ))
(( idle > 100000 )) && idle=100000
cargo bench --bench load -- idle --clients "$idle" 2>/dev/null | grep '^roomz'
cargo bench --bench tui 2>/dev/null | grep -v '^$'
echo '```'
echo
echo '### roomz on PostgreSQL, one node and two'
echo
echo "The same fan-out rows, each client on node i mod N, on a throwaway PostgreSQL server on"
echo "this machine (\`.ci/with-postgres\`); roomz's CPU only (PostgreSQL's is not counted)."
echo
for nodes in 1 2; do
  .ci/with-postgres bash -c 'LOAD_POSTGRES=$POSTGRES_URL LOAD_NODES='"$nodes"' cargo bench --bench load -- rows --seconds '"$seconds"' 2>/dev/null'
  echo
done
echo '```'
for nodes in 1 2; do
  .ci/with-postgres bash -c 'LOAD_POSTGRES=$POSTGRES_URL LOAD_NODES='"$nodes"' cargo bench --bench load -- ingest --window 4 2>/dev/null' | grep '^roomz'
done
echo '```'
