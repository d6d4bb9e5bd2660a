#!/bin/bash
# Usage: [PREFETCH=N] bench/callgrind/run.sh [JOBS [CONCURRENCY]]  (defaults 1000 and 1;
# PREFETCH is the worker's Prefetch, default -1: none; needs valgrind)
# Starts redis-server under callgrind on port 6398, runs the workload of
# main.go against it and prints Redis's instructions per job for each phase.
set -euo pipefail
n=${1:-1000}; c=${2:-1}; port=6398
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
(cd "$here" && go build -o "$dir/driver" .)
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  redis-server --port $port --save "" --appendonly no >"$dir/valgrind.log" 2>&1 &
vpid=$!
for _ in $(seq 100); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.2; done
"$dir/driver" -addr 127.0.0.1:$port -pid $vpid -n "$n" -c "$c" -prefetch "${PREFETCH:--1}" -tag run >"$dir/driver.log"
redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
wait $vpid || true
# serverCron's share is left out: it runs ten times a second whatever the
# workload, so it grows with the time a run takes on a busy machine.
for f in "$dir"/cg.out.*; do
  phase=$(sed -n 's/^desc: Trigger: dump run-//p' "$f")
  total=$(sed -n 's/^summary: //p' "$f")
  cron=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
    awk '/[?]:serverCron /{gsub(",", "", $1); print $1; exit}' || true) # awk's exit may end the pipe early
  jobs=$n; [ "$phase" = process ] && jobs=$((2 * n))
  echo "$phase: $total instructions, $((total / jobs)) per job; without serverCron $(((total - ${cron:-0}) / jobs)) per job"
done
echo "Redis commands per phase: $dir/driver.log"
