#!/bin/bash
# Usage: bench/plaincpu/ab.sh REV_A REV_B [PAIRS [JOBS [CONCURRENCY [PLAINCPU_FLAGS...]]]]
# Builds plaincpu against two revisions of rqgo (git worktrees under a temp
# directory), then runs them in PAIRS interleaved pairs (default 12; the
# order alternates), each run on a fresh redis-server on port 6399, and
# prints the median of the per-pair ratios B÷A of worker CPU, Redis CPU and
# rate, of Redis's time in scripts (commandstats) and of the worker's Go
# allocations per job, and of the rate of plain Enqueue calls, with their
# ranges.
set -euo pipefail
a=$1; b=$2; pairs=${3:-12}; n=${4:-20000}; c=${5:-50}; port=6399
shift $(($# < 5 ? $# : 5)); more=("$@")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=$(mktemp -d)
for r in "$a" "$b"; do
  git -C "$root" worktree add -f --detach "$dir/src-$r" "$r" >/dev/null 2>&1
  mkdir -p "$dir/mod-$r"
  cp "$here/main.go" "$dir/mod-$r/"
  printf 'module plaincpu\n\ngo 1.26\n\nrequire github.com/rqgo/rqgo v0.0.0\n\nreplace github.com/rqgo/rqgo => %s\n' "$dir/src-$r" >"$dir/mod-$r/go.mod"
  (cd "$dir/mod-$r" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 && go build -o "$dir/bin-$r" .)
done
for i in $(seq "$pairs"); do
  order="$a $b"; [ $((i % 2)) = 0 ] && order="$b $a"
  for r in $order; do
    redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
    sleep 0.3
    redis-server --port $port --save "" --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
    echo "$i $r $("$dir/bin-$r" -addr 127.0.0.1:$port -n "$n" -c "$c" ${more[@]+"${more[@]}"} | head -1)" | tee -a "$dir/runs.txt"
  done
done
redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
for r in "$a" "$b"; do git -C "$root" worktree remove --force "$dir/src-$r"; done
python3 - "$dir/runs.txt" "$a" "$b" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 16:
        runs[(f[0], f[1])] = f
a, b = sys.argv[2], sys.argv[3]
pairs = sorted({k[0] for k in runs}, key=int)
for name, i in (("worker CPU per job", 3), ("Redis CPU per job", 5), ("jobs/s", 7), ("Redis time in scripts per job", 9),
                ("Go allocations per job", 11), ("Go bytes allocated per job", 13), ("Enqueue calls/s, 8 producers", 15)):
    r = [float(runs[(p, b)][i]) / float(runs[(p, a)][i]) for p in pairs]
    print(f"{name}: {b} ÷ {a} median {statistics.median(r):.3f} over {len(r)} pairs (range {min(r):.2f}–{max(r):.2f})")
PY
echo "runs: $dir/runs.txt"
