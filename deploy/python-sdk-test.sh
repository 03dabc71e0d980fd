#!/usr/bin/env bash
# The Python SDK's tests (clients/python, pytest) with the real Pipecat and LiveKit Agents from
# PyPI, in a virtualenv made here, against a real `voicemeter serve` and PostgreSQL that the tests
# start (a fresh database on DATABASE_URL's server, or a private PostgreSQL when it is unset).
#
#   deploy/python-sdk-test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."

swift build --product voicemeter >/dev/null
export VOICEMETER_BIN="$(swift build --show-bin-path)/voicemeter"
venv=.build/python-sdk-venv
if [ ! -x "$venv/bin/pytest" ] || [ clients/python/pyproject.toml -nt "$venv/bin/pytest" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e './clients/python[pipecat,livekit,test]'
    touch "$venv/bin/pytest"
fi
cd clients/python
"../../$venv/bin/mypy" src
exec "../../$venv/bin/pytest" -q "$@"
