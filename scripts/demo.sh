#!/usr/bin/env bash
# Runs the demo: a durable workflow survives its worker being killed with SIGKILL.
source "$(dirname "$0")/_env.sh" ""
exec .venv/bin/tether demo "$@"
