"""Fleet view: many agents start sessions at once against one account's Secrets Manager quota.

``python -m tests.bench.fleet`` starts N agents (50 by default), each with its own state
directory, socket, OS store on a temporary root and NSS database, all pointed at one moto
server through a throttling proxy on 127.0.0.1 (``tests.bench.throttle``). Once every agent
is ready and idle, each gets a 20-certificate manifest at the same moment. The run reports
whether every agent installed, the p50/p99 time to trust, from the proxy how many
GetSecretValue calls were throttled and how many attempts each fetch needed, and from the
agents' own answers how long throttling held their fetches back.

Every agent runs on this one 2-core machine, so time to trust here is mostly queueing for
the CPU. So that the install does not starve the fetches it measures, each agent's OS store is
a small temporary root (an empty ca-certificates.conf: update-ca-certificates handles only the
agent's own 20 CAs, and no hooks) and it has no NSS database; the fetch span, from an agent's
first GetSecretValue to its last answered one, is the part that throttling stretches.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.bench import common
from tests.bench.throttle import throttling_proxy
from tests.support.daemon import write_config
from tests.support.moto import moto_server
from trustinstaller.cli import UnixHTTPConnection
from trustinstaller.config import Config
from trustinstaller.stores.debian import DebianPaths

MAX_AGENTS = 200
DEADLINE_S = 600.0  # the whole run, start to stop


def fleet_manifest(secrets: Sequence[common.Secret], index: int) -> bytes:
    """The shared 20-CA manifest, with an access key unique to this agent (for the proxy)."""
    doc = json.loads(common.manifest(secrets))
    doc["credentials"]["accessKeyId"] = f"AKIAFLEET{index:011d}"
    return json.dumps(doc).encode()


Agent = tuple[subprocess.Popen[bytes], Path]


@contextlib.contextmanager
def agents(base: Path, count: int, endpoint: str, tree: str | None) -> Iterator[list[Agent]]:
    """Start ``count`` agents, each with its own state and stores; stop them all on exit."""
    env = {**os.environ, "PYTHONPATH": tree} if tree else None
    procs: list[Agent] = []
    try:
        for i in range(count):
            home = base / f"agent-{i:03d}"
            paths = DebianPaths(
                local_certs_dir=home / "local",
                etc_certs_dir=home / "etc-certs",
                certs_dir=home / "distro",
                certs_conf=home / "ca-certificates.conf",
                hooks_dir=home / "hooks",
            )
            for d in (paths.local_certs_dir, paths.etc_certs_dir, paths.certs_dir, paths.hooks_dir):
                d.mkdir(parents=True)
            paths.certs_conf.write_text("")
            cfg = Config(
                socket=home / "ti.sock",
                state_dir=home / "state",
                nss_databases=(),
                endpoint_url=endpoint,
                os_store=paths,
                firefox_policies=(),  # never the host's /etc/firefox
                chromium_policies=(),  # nor its /etc/chromium
            )
            cfg_path = write_config(replace(cfg), home / "config.toml")
            log = (home / "agent.log").open("wb")
            proc = subprocess.Popen([str(common.AGENT), "--config", str(cfg_path), "serve"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env)  # fmt: skip
            log.close()
            procs.append((proc, cfg.socket))
        yield procs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in procs:
            common.stop(proc)


def wait_idle(pids: Sequence[int], *, quiet_s: float = 1.0, limit_s: float = 120.0) -> float:
    """Wait until the agents stop using CPU (their background warm-up is done)."""
    started = time.monotonic()
    last = sum(common.proc_cpu_s(p) for p in pids)
    while time.monotonic() - started < limit_s:
        time.sleep(quiet_s)
        now = sum(common.proc_cpu_s(p) for p in pids)
        if (now - last) / quiet_s < 0.005 * len(pids):  # 5 ms of CPU a second each: idle
            break
        last = now
    return time.monotonic() - started


def run_fleet(args: argparse.Namespace, rate: float | None, deadline: float) -> dict[str, Any]:
    """One fleet run; ``rate=None`` runs without the rate limit. Bounded by ``deadline``."""
    with moto_server() as moto, common.scratch_root("trustinstaller-fleet-") as base:
        secrets = common.make_secrets(moto, args.certs, "fleet")
        with throttling_proxy(moto.port, rate=rate, burst=args.burst, fraction=args.fraction,
                              cache=not args.no_cache) as proxy:  # fmt: skip
            with agents(base, args.agents, proxy.endpoint, args.agent_tree) as procs:
                for proc, sock in procs:
                    try:
                        common.wait_answering(
                            sock, proc, deadline_s=max(1.0, deadline - time.monotonic())
                        )
                    except RuntimeError as exc:
                        log = sock.with_name("agent.log").read_text()[-2000:]
                        raise RuntimeError(f"{exc}; {sock.parent.name}'s log:\n{log}") from exc
                idle_after = wait_idle([p.pid for p, _ in procs])
                print(f"  {len(procs)} agents ready and idle after {idle_after:.1f} s more",
                      file=sys.stderr)  # fmt: skip

                def submit(i: int) -> tuple[float, float, int, str, dict[str, Any]]:
                    conn = UnixHTTPConnection(procs[i][1], max(1.0, deadline - time.monotonic()))
                    t0 = time.monotonic()
                    try:
                        conn.request("PUT", "/v1/manifest", body=fleet_manifest(secrets, i))
                        resp = conn.getresponse()
                        doc = json.loads(resp.read())
                    finally:
                        conn.close()
                    fetched = doc.get("fetch") if isinstance(doc.get("fetch"), dict) else {}
                    return t0, time.monotonic(), resp.status, str(doc.get("message", "")), fetched

                with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
                    answers = list(pool.map(submit, range(len(procs))))
            stats = proxy.stats
    start = min(a[0] for a in answers)
    ttt = [a[1] - a[0] for a in answers]
    delays = [float(a[4].get("throttle_delay_s", 0.0)) for a in answers if a[4]]
    installed = sum(1 for a in answers if a[2] == 200)
    spans = [max(0.0, last - first) for first, last in stats.span.values() if last]
    per_fetch = list(stats.attempts.values())
    failures = collections.Counter(a[3] for a in answers if a[2] != 200)
    fetch_window = max((s[1] for s in stats.span.values()), default=start) - start
    calls = stats.forwarded + stats.throttled
    return {
        "fetch_timeout_s": Config().fetch_timeout,
        "rate_limit_rps": rate,
        "agents": len(answers),
        "installed": installed,
        "failures": dict(failures),
        "ttt_p50_s": common.percentile(ttt, 0.50),
        "ttt_p99_s": common.percentile(ttt, 0.99),
        "ttt_max_s": max(ttt),
        "fetch_span_p50_s": common.percentile(spans, 0.50),
        "fetch_span_p99_s": common.percentile(spans, 0.99),
        "get_secret_value_calls": calls,
        "throttled": stats.throttled,
        "offered_rps": calls / fetch_window if fetch_window > 0 else float("nan"),
        "attempts_per_fetch_p50": common.percentile(per_fetch, 0.50),
        "attempts_per_fetch_p99": common.percentile(per_fetch, 0.99),
        "attempts_per_fetch_max": max(per_fetch, default=0),
        "throttle_delay_p50_s": common.percentile(delays, 0.50),
        "throttle_delay_max_s": max(delays, default=float("nan")),
    }


def render(results: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    """The fleet table as Markdown."""
    timeout = results[0]["fetch_timeout_s"] if results else Config().fetch_timeout
    out = [
        f"{args.agents} agents x {args.certs} certificates, one moto server behind the "
        f"throttling proxy (burst {args.burst:g}, random fraction {args.fraction:g}), "
        f"fetch_timeout {timeout:g} s:",
        "",
        "| rate limit | installed | time to trust p50 / p99 / max | fetch span p50 / p99 "
        "| GetSecretValue calls | throttled | attempts per fetch p50 / p99 / max "
        "| throttle delay p50 / max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        limit = f"{r['rate_limit_rps']:g} rps" if r["rate_limit_rps"] else "none"
        out.append(
            f"| {limit} | {r['installed']}/{r['agents']} "
            f"| {r['ttt_p50_s']:.1f} / {r['ttt_p99_s']:.1f} / {r['ttt_max_s']:.1f} s "
            f"| {r['fetch_span_p50_s']:.2f} / {r['fetch_span_p99_s']:.2f} s "
            f"| {r['get_secret_value_calls']} | {r['throttled']} "
            f"| {r['attempts_per_fetch_p50']:g} / {r['attempts_per_fetch_p99']:g} "
            f"/ {r['attempts_per_fetch_max']:g} "
            f"| {r['throttle_delay_p50_s']:.1f} / {r['throttle_delay_max_s']:.1f} s |"
        )
        if r["failures"]:
            # One line per distinct reason, without the ARNs (they differ only by name) and
            # with numbers as N (each session reports its own counts).
            reasons = collections.Counter(
                re.sub(r"\d+(\.\d+)?", "N", line.split(": ", 1)[-1].strip())
                for message, n in r["failures"].items()
                for line in message.splitlines()[1:]
                for _ in range(n)
            )
            out.append(f"|  | failed fetches: {dict(reasons)} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fleet once without and once with the rate limit; print the table."""
    p = argparse.ArgumentParser(prog="python -m tests.bench.fleet", description=__doc__)
    p.add_argument(
        "--agents", type=int, default=50, help=f"agents (default 50, at most {MAX_AGENTS})"
    )
    p.add_argument("--certs", type=int, default=20, help="certificates per manifest (default 20)")
    p.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")],
                   default=[150.0, 100.0, 50.0], help="simulated GetSecretValue quotas in "
                   "calls/s, one throttled run each (default 150,100,50)")  # fmt: skip
    p.add_argument("--burst", type=float, default=50.0, help="token-bucket burst (default 50)")
    p.add_argument("--fraction", type=float, default=0.0,
                   help="also throttle this fraction of calls at random (default 0)")  # fmt: skip
    p.add_argument("--no-cache", action="store_true",
                   help="send every call on to moto (it then becomes the bottleneck)")  # fmt: skip
    p.add_argument("--only-throttled", action="store_true", help="skip the unthrottled run")
    p.add_argument("--agent-tree", metavar="DIR", help="run the trustinstaller package in DIR")
    p.add_argument("--json", metavar="PATH", help="also write raw results here")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= MAX_AGENTS:
        raise SystemExit(f"fleet: --agents must be 1..{MAX_AGENTS}")
    if not 0 <= args.fraction < 1:
        raise SystemExit("fleet: --fraction must be in [0, 1)")
    common.clean_environment()
    started = time.monotonic()
    results = []
    rates: list[float | None] = [*([] if args.only_throttled else [None]), *args.rates]
    for rate in rates:
        print(f"fleet run, rate limit {rate or 'none'}:", file=sys.stderr)
        results.append(run_fleet(args, rate, started + DEADLINE_S))
        if time.monotonic() - started > DEADLINE_S:
            break
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(render(results, args))
    print(f"\nfleet wall time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
