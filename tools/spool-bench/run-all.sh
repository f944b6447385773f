#!/usr/bin/env bash
# Every measurement of the spool store evaluation (issue #24), as BENCHMARKS.md reports them.
# Each step is bounded (a bench run is seconds to a minute; crash and damage runs a few minutes).
#
# Usage: tools/spool-bench/run-all.sh [bench|replay|crash|damage|all] [RESULTS_DIR]
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-all}
res=${2:-/tmp/spool-results}
data=/tmp/spool-bench
mkdir -p "$res" "$data"
cargo build --release --locked --quiet
bin=./target/release/spool-bench

if [ "$what" = bench ] || [ "$what" = all ]; then
  # The queue pattern: 10 000 events spooled, 1 000 000 more appended and removed in batches of
  # 100. Three rounds, the stores taking turns, since the disk's fsync time moves with the load
  # of whatever else shares the machine.
  for round in 1 2 3; do
    for sync in always interval never; do
      for store in redb fjall sqlite; do
        timeout 300 $bin bench --store "$store" --sync "$sync" --events 1000000 --backlog 10000 --dir "$data"
        rm -rf "$data/bench-$store-$sync"
      done
    done
  done >"$res/bench.md" 2>"$res/bench.log"
fi

if [ "$what" = replay ] || [ "$what" = all ]; then
  # A long outage: 100 000 events spooled, then a restart and replay.
  for store in redb fjall sqlite; do
    timeout 300 $bin bench --store "$store" --sync interval --events 20000 --backlog 100000 --dir "$data"
    rm -rf "$data/bench-$store-interval"
  done >"$res/replay.md" 2>"$res/replay.log"
fi

if [ "$what" = crash ] || [ "$what" = all ]; then
  for store in redb fjall sqlite; do
    timeout 400 $bin crash --store "$store" --sync always --runs 20 --seed 1 --dir "$data"
  done >"$res/crash-always.md" 2>"$res/crash-always.log"
  # The other modes lose what was not yet synced on a power loss; a process crash is another
  # matter (what reached the OS survives it), which this shows.
  for sync in interval never; do
    for store in redb fjall sqlite; do
      timeout 300 $bin crash --store "$store" --sync "$sync" --runs 10 --max-ms 3000 --seed 2 --dir "$data"
    done
  done >"$res/crash-other.md" 2>"$res/crash-other.log"
  # Recovery time after a crash with a long outage's backlog (100 000 events; the writer picks up
  # where the last run stopped, so the backlog builds over the first runs).
  for store in redb fjall sqlite; do
    timeout 300 $bin crash --store "$store" --sync always --runs 6 --max-ms 4000 --backlog 100000 --seed 3 --dir "$data"
  done >"$res/crash-backlog.md" 2>"$res/crash-backlog.log"
  rm -rf "$data"/crash-*
fi

if [ "$what" = damage ] || [ "$what" = all ]; then
  for store in redb fjall sqlite; do
    for unclean in "" --unclean; do
      timeout 500 $bin damage --store "$store" $unclean --dir "$data" \
        >"$res/damage-$store$unclean.md" 2>"$res/damage-$store$unclean.log"
    done
  done
  rm -rf "$data"/damage-*
fi
