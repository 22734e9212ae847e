#!/usr/bin/env bash
# Python venv for tests/tests/python_client.rs: openapi-python-client
# generates a client from openapi/openapi.json at test time and the venv's
# python drives tests/python/flow.py with it (cryptography signs Ed25519);
# PyJWT judges askee's consent tokens as an independent JWT implementation
# (server/tests/jwt_interop.rs).
set -euo pipefail
ASKEE_PYCLIENT_VENV="${ASKEE_PYCLIENT_VENV:-/opt/askee-pyclient-venv}"
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip
fi
if ! "$ASKEE_PYCLIENT_VENV/bin/python" -c 'import cryptography, httpx, attrs, jwt' >/dev/null 2>&1 \
    || [ "$("$ASKEE_PYCLIENT_VENV/bin/openapi-python-client" --version 2>/dev/null)" != "openapi-python-client version: 0.29.1" ]; then
    python3 -m venv "$ASKEE_PYCLIENT_VENV"
    "$ASKEE_PYCLIENT_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "openapi-python-client==0.29.1" "cryptography==46.0.3" "PyJWT==2.10.1"
fi
