"""The environment a client under test starts with: none of the variables that steer trust.

Machines that run CI export SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS and others
for their own egress CA. A client that inherits them proves nothing about the agent, so the
suite drops them at start (conftest.py), and clients run under ``env -i`` with only these.
"""

from __future__ import annotations

import os

from trustinstaller.stores.runtime_env import BUNDLE_KEYS, CUSTOM_KEYS, DIR_KEY, FIREFOX_KEY

# Every variable the env file sets, and others that redirect or widen a client's roots.
TRUST_VARIABLES = (
    *BUNDLE_KEYS, *CUSTOM_KEYS, DIR_KEY, FIREFOX_KEY,
    "NODE_OPTIONS", "NODE_TLS_REJECT_UNAUTHORIZED", "NPM_CONFIG_CAFILE", "DENO_TLS_CA_STORE",
    "UV_NATIVE_TLS", "PIP_CONFIG_FILE", "GIT_SSL_NO_VERIFY", "GIT_SSL_CAPATH", "CARGO_HTTP_CAINFO",
    "WEBSOCKET_CLIENT_CA_BUNDLE", "PYTHONHTTPSVERIFY", "SSLKEYLOGFILE",
)  # fmt: skip
# Clean environments for the clients: nothing from the test run leaks into them.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def client_env(**env: str) -> dict[str, str]:
    """A client's whole environment: PATH, the C locale and ``env``; nothing inherited."""
    return {"PATH": BASE_PATH, "LC_ALL": "C.UTF-8", **env}


def clean_env(**env: str) -> list[str]:
    """An ``env -i`` prefix that starts a command with ``client_env(**env)``."""
    return ["env", "-i", *(f"{k}={v}" for k, v in client_env(**env).items())]


def scrub() -> list[str]:
    """Remove every trust variable from ``os.environ``; return the names that were set."""
    found = [k for k in TRUST_VARIABLES if k in os.environ]
    for k in found:
        del os.environ[k]
    return found
