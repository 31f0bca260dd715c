#!/usr/bin/env bash
# Runs fault_worker under mpirun with one injected fault and checks the job ends well:
# non-zero exit, within BOUND seconds, no rank completing, and output matching PATTERN
# (which names the failed rank).
# usage: run_fault_case.sh MPIEXEC NP WORKER FAULT BOUND PATTERN
set -u
mpiexec=$1 np=$2 worker=$3 fault=$4 bound=$5 pattern=$6
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start_ms=$(($(date +%s%N) / 1000000))
# The outer timeout only guards the test itself against a hang (which is a failure).
LAMINA_FAULT_INJECT=$fault LAMINA_COLLECTIVE_TIMEOUT_S=${LAMINA_COLLECTIVE_TIMEOUT_S:-3} \
  timeout -k 10 $((bound * 3)) "$mpiexec" --oversubscribe -np "$np" -x LAMINA_FAULT_INJECT \
  -x LAMINA_COLLECTIVE_TIMEOUT_S "$worker" >"$log" 2>&1
rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
elapsed=$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))
cat "$log"
echo "--- fault $fault: exit code $rc after ${elapsed}s (bound ${bound}s)"
fail=0
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; fail=1; fi
if [ "$rc" -eq 124 ]; then echo "FAIL: the job hung and was killed by the test's guard"; fail=1; fi
if ((elapsed_ms > bound * 1000)); then echo "FAIL: took longer than ${bound}s"; fail=1; fi
if grep -q "completed .* steps" "$log"; then echo "FAIL: a rank completed normally"; fail=1; fi
if ! grep -Eq "$pattern" "$log"; then echo "FAIL: output does not match: $pattern"; fail=1; fi
exit $fail
