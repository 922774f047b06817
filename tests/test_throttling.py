"""The fetch deadline against a throttling Secrets Manager on 127.0.0.1.

A real HTTP proxy (tests/bench/throttle.py) sits between botocore and moto and answers
ThrottlingException, as AWS does for an account over its quota, for the first N
GetSecretValue calls; it counts every call it sees. Nothing is patched.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace

import pytest
import structlog

from tests.bench.throttle import throttling_proxy
from tests.support import osroot
from tests.support.builders import manifest
from tests.support.certs import make_ca
from tests.support.moto import MotoServer, moto_server
from tests.test_install import nss_dir
from trustinstaller.config import Config
from trustinstaller.documents import status_to_json
from trustinstaller.errors import CertificatesRefusedError, Outcome
from trustinstaller.installer import Installer

# What a session that ran out of time says: how long it waited and how many calls were throttled.
OUT_OF_TIME = re.compile(
    r"secret (?P<arn>\S+): (still throttled \(ThrottlingException\)|no answer) when "
    r"fetch_timeout ran out after (?P<waited>\d+\.\d) s \(fetch_timeout = 3\); Secrets Manager "
    r"throttled (?P<throttled>\d+) of (?P<calls>\d+) calls in this session; retry the session "
    r"later, or raise fetch_timeout"
)


def unique(prefix: str = "throttled") -> str:
    """A secret name no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def test_throttling_that_ends_before_the_deadline_installs(
    config: Config, moto: MotoServer
) -> None:
    """A session throttled for its first 6 calls retries and installs; status and log count them."""
    arns = [moto.put_secret(unique(), make_ca(f"throttled {i}").pem) for i in range(3)]
    # 6 throttled calls cost one fetch at most 0.25+0.5+1+2+4+8 s of backoff, plus at most 2 s
    # per call waiting for botocore's rate limiter (its floor is 0.5 calls/s): under 60 s.
    with throttling_proxy(moto.port, rate=None, burst=0, first=6, cache=False) as proxy:
        cfg = replace(config, endpoint_url=proxy.endpoint, fetch_timeout=60.0)
        with structlog.testing.capture_logs() as logs:
            status = status_to_json(Installer(cfg).submit(manifest(arns)))
        seen = proxy.stats
    assert status["state"] == "locked"
    assert [c["source"]["arn"] for c in status["certificates"]] == arns
    assert seen.throttled == 6
    assert sum(seen.attempts.values()) == 9
    fetch = status["fetch"]
    assert (fetch["secrets"], fetch["calls"], fetch["throttled_calls"]) == (3, 9, 6)
    assert 1 <= fetch["throttled_fetches"] <= 3
    assert 0 < fetch["throttle_delay_s"] <= fetch["duration_s"] < 60
    assert fetch["timed_out"] is False
    [event] = [e for e in logs if e["event"] == "manifest_installed"]
    assert event["fetch"] == fetch
    assert event["count"] == 3


def test_throttling_past_the_deadline_fails_and_writes_nothing(
    config: Config, moto: MotoServer
) -> None:
    """Throttled past fetch_timeout, the session fails saying how long it waited and how many
    calls were throttled, and no store changes."""
    arns = [moto.put_secret(unique(), make_ca(f"never {i}").pem) for i in range(2)]
    before = osroot.snapshot_store(config.os_store), osroot.nss_listing(nss_dir(config))
    with throttling_proxy(moto.port, rate=None, burst=0, first=-1, cache=False) as proxy:
        cfg = replace(config, endpoint_url=proxy.endpoint, fetch_timeout=3.0)
        installer = Installer(cfg)
        with pytest.raises(CertificatesRefusedError) as info:
            installer.submit(manifest(arns))
        seen = proxy.stats
    lines = str(info.value).splitlines()
    assert lines[0] == "2 certificates could not be fetched; nothing was installed"
    assert info.value.outcome is Outcome.FETCH_FAILED
    matches = [OUT_OF_TIME.fullmatch(line.strip()) for line in lines[1:]]
    assert all(matches), lines
    assert [m["arn"] for m in matches if m] == arns
    for m in matches:
        assert m is not None
        assert 1.5 <= float(m["waited"]) <= 3.5
        # Every answered call was throttled; one still in flight at the deadline is not counted.
        assert int(m["throttled"]) == int(m["calls"]) <= seen.throttled
        assert int(m["calls"]) >= 2
    assert seen.forwarded == 0
    status = status_to_json(installer.status())
    assert status["state"] == "failed"
    assert status["fetch"]["timed_out"] is True
    assert status["fetch"]["throttled_calls"] == int(matches[0]["throttled"])  # type: ignore[index]
    assert (osroot.snapshot_store(config.os_store), osroot.nss_listing(nss_dir(config))) == before
    assert not config.os_store.our_dir.exists()


def test_access_denied_is_not_retried(config: Config) -> None:
    """Access denied fails the session after one call per secret, however long the deadline."""
    # moto lets the first N requests through unauthenticated: enough to set up IAM and secrets.
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as iam_moto:
        arns = [iam_moto.put_secret(unique(), make_ca(f"denied {i}").pem) for i in range(2)]
        iam = iam_moto.client("iam")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        with throttling_proxy(iam_moto.port, rate=None, burst=0, cache=False) as proxy:
            cfg = replace(config, endpoint_url=proxy.endpoint, fetch_timeout=60.0)
            creds = {"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}
            body = manifest(arns, credentials=creds)
            installer = Installer(cfg)
            with pytest.raises(CertificatesRefusedError, match=r"access denied \(403\)"):
                installer.submit(body)
            seen = proxy.stats
    assert sorted(seen.attempts.values()) == [1, 1]
    fetch = installer.status().fetch
    assert fetch is not None
    assert (fetch.calls, fetch.throttled_calls, fetch.timed_out) == (2, 0, False)
    assert fetch.duration_s < 30  # one round trip each, not a minute of retries


def test_not_found_is_not_retried(config: Config, moto: MotoServer) -> None:
    """A missing secret fails after one call (one more if that was throttled), never retried."""
    present = moto.put_secret(unique(), make_ca("present").pem)
    gone = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{unique('gone')}-AbCdEf"
    with throttling_proxy(moto.port, rate=None, burst=0, first=2, cache=False) as proxy:
        cfg = replace(config, endpoint_url=proxy.endpoint, fetch_timeout=30.0)
        with pytest.raises(CertificatesRefusedError, match="not found"):
            Installer(cfg).submit(manifest([present, gone]))
        seen = proxy.stats
    by_secret = {secret: n for (_key, secret), n in seen.attempts.items()}
    # The first two calls are throttled whichever they are; after those, the missing secret
    # is asked for once more at most (if one of the two was its own), never again after.
    assert by_secret[gone] <= 2
    assert seen.throttled == 2
