#!/usr/bin/env bash
# Runs a claim's experiment: launch/experiments/run.sh CLAIM [--scale cpu|gpu|paper] [...]
# (see driver.py and launch/experiments/README.md).
exec python3 "$(dirname "$0")/driver.py" "$@"
