#!/usr/bin/env bash
# The long variant of tests/model.rs: a random upstream with random faults,
# subscribers cutting at random event boundaries and resuming; every event is
# checked against the model and every subscriber must converge exactly.
#
#   bash bench/model.sh [SECONDS] [SEED] [SUBSCRIBERS]   (defaults: 300, random, 17)
#
# Prints what the run covered: events, changes, status events, snapshots,
# resumes (and how many right after a status event), mutations and faults.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-300}"
seed="${2:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
subs="${3:-17}"
echo "model: ${secs}s, seed ${seed}, ${subs} subscribers (release build)"
POLLCAST_MODEL_SECS="$secs" POLLCAST_MODEL_SEED="$seed" POLLCAST_MODEL_SUBSCRIBERS="$subs" \
  cargo test --release --locked --test model -- --nocapture 2>&1 | grep -E "^model:|test result|panicked|subscriber"
