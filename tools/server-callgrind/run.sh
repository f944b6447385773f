#!/bin/bash
# User-space instructions per request of one loadbench server variant, under callgrind.
#
#     tools/server-callgrind/run.sh LOADBENCH_BINARY VARIANT OUT_FILE [REQUESTS]
#
# Starts `LOADBENCH_BINARY --serve VARIANT` under callgrind with instrumentation off, sends it
# 2 000 requests of warm-up, switches instrumentation on, sends REQUESTS (default 20 000) over 8
# keep-alive connections, switches it off, stops the server and prints the program total
# divided by REQUESTS. `callgrind_annotate --inclusive=yes OUT_FILE` then attributes them;
# `--tree=caller` gives call counts (batches: calls of `worker::deliver`).
set -euo pipefail
bin=$1
variant=$2
out=$3
n=${4:-20000}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
mkfifo "$tmp/in"
sleep 100000 >"$tmp/in" &
hold=$!
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$bin" --serve "$variant" <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
server=$!
for _ in $(seq 120); do
    grep -q '^PORT ' "$tmp/out" 2>/dev/null && break
    sleep 0.5
done
port=$(awk '/^PORT /{print $2}' "$tmp/out")
python3 "$here/drive.py" "$port" 2000 8 >/dev/null
callgrind_control -i on "$server" >/dev/null 2>&1
python3 "$here/drive.py" "$port" "$n" 8 >/dev/null
callgrind_control -i off "$server" >/dev/null 2>&1
echo stop >"$tmp/in"
kill "$hold" 2>/dev/null || true
wait "$server" || true
grep '^EVENTS' "$tmp/out" || true
rm -rf "$tmp"
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "instructions: $total total, $((total / n)) per request ($n requests)"
