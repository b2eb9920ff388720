#!/usr/bin/env bash
# Issue 4 bar: the histories that runs write are judged clean by an independent checker of the
# spec too (tests/history_check.py, written from spec/history.md alone, not from oracle/).
# Positive part: clean runs give histories the checker judges valid. Negative part: runs with a
# planted bug give histories the checker judges violated under the invariant naming the damage.
# Usage: independent_check.sh MSGSIM_BINARY CHECKER SCENARIO_DIR
set -euo pipefail
msgsim="$1"
checker="$2"
scenarios="$3"
python=/usr/bin/python3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

clean_run() {  # clean_run SCENARIO SEED
  local history="$work/$1-$2.jsonl"
  if ! "$msgsim" run "$scenarios/$1" --seed "$2" --history "$history" > "$work/run.out" 2>&1; then
    echo "independent_check: msgsim run $1 --seed $2 failed" >&2
    cat "$work/run.out" >&2
    exit 1
  fi
  if ! "$python" "$checker" "$history" > "$work/check.out" 2>&1; then
    echo "independent_check: $1 seed $2: the independent checker rejects the history" >&2
    cat "$work/check.out" >&2
    exit 1
  fi
  echo "independent_check: $1 seed $2: valid ($(wc -l < "$history") events)"
}

buggy_run() {  # buggy_run SCENARIO SEED BUG INVARIANT
  local history="$work/$1-$2-$3.jsonl"
  # The run itself is expected to fail (its own oracle catches the bug): only the history matters.
  set +e
  "$msgsim" run "$scenarios/$1" --seed "$2" --bug "$3" --history "$history" > "$work/run.out" 2>&1
  set -e
  if [ ! -s "$history" ]; then
    echo "independent_check: msgsim run $1 --seed $2 --bug $3 wrote no history" >&2
    cat "$work/run.out" >&2
    exit 1
  fi
  set +e
  "$python" "$checker" "$history" > "$work/check.out" 2>&1
  local status=$?
  set -e
  if [ "$status" -ne 1 ] || ! grep -q "^$4: VIOLATED" "$work/check.out"; then
    echo "independent_check: $1 seed $2 --bug $3: expected exit 1 with $4 violated, got exit $status" >&2
    cat "$work/check.out" >&2
    exit 1
  fi
  echo "independent_check: $1 seed $2 --bug $3: $4 violated, as it must be"
}

clean_run chat-small.json 1
clean_run chat-server-crash.json 1
for seed in 1 2 3; do
  clean_run chat-faulty.json "$seed"
done
clean_run chat-offline-push.json 1

buggy_run chat-faulty.json 1 client-no-dedup no-duplicate
buggy_run chat-faulty.json 1 leave-one-late decrypt
