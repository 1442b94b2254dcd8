#!/usr/bin/env bash
# Starts (or stops) what the test suite needs beyond Python packages.
# PostgreSQL and Redis for the many-replica tests are added here by that work; until then the
# suite needs nothing else.
set -euo pipefail
case "${1:-}" in
  start) ;;
  stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
