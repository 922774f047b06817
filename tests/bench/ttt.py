"""Time to trust: the agent against the hand-written script and the floor, in fresh namespaces.

Every measurement gets its own private mount namespace (fresh copies of /etc/ssl,
/usr/local/share/ca-certificates, /etc/ca-certificates, /var/lib/ca-certificates-java and
/var/lib/dpkg, a tmpfs on /run), so Debian's Java hook runs as it would in production and
the host's trust store is never touched. Rounds interleave the three paths, so that load
from other work on the machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench import common
from tests.bench.common import Secret
from tests.support.daemon import request
from tests.support.moto import MotoServer, moto_server
from tests.support.ns import PrivateNamespace
from trustinstaller import _run
from trustinstaller.stores.debian import DebianStore

DEFAULT_AWS = common.REPO / ".venv" / "bench" / "awscli" / "bin" / "aws"


def measure_agent(
    base: Path,
    moto: MotoServer,
    secrets: Sequence[Secret],
    label: str,
    *,
    settle: float,
    tree: str | None = None,
) -> dict[str, float]:
    """Start the agent in a fresh namespace; time exec -> answering, then PUT -> installed.

    ``tree`` is a directory holding another copy of the ``trustinstaller`` package, put first
    on the agent's PYTHONPATH, to compare versions under the same load.
    """
    body = common.manifest(secrets)
    env = {"PYTHONPATH": tree} if tree else None
    with common.fresh_namespace(base, label) as ns:
        cfg, sock = common.agent_config(ns, moto.endpoint)
        log = ns.scratch / "agent.log"
        with log.open("wb") as logf:
            started = time.perf_counter()
            proc = ns.popen([str(common.AGENT), "--config", str(cfg), "serve"],
                            stdout=logf, stderr=logf, cwd="/", env=env)  # fmt: skip
        try:
            cold = common.wait_answering(sock, proc) - started
            mem_ready = common.proc_memory_kb(proc.pid)
            time.sleep(settle)
            cpu0 = common.proc_cpu_s(proc.pid)
            t0 = time.perf_counter()
            code, doc = request(sock, "PUT", "/v1/manifest", body)
            elapsed = time.perf_counter() - t0
            cpu = common.proc_cpu_s(proc.pid) - cpu0
            if code != 200 or doc.get("outcome") != "installed":
                raise RuntimeError(f"agent answered {code}: {doc.get('message')}\n"
                                   f"{log.read_text()[-3000:]}")  # fmt: skip
            if len(doc.get("certificates", [])) != len(secrets):
                raise RuntimeError(f"agent installed {len(doc['certificates'])} of {len(secrets)}")
            mem_locked = common.proc_memory_kb(proc.pid)
            time.sleep(1.0)
            mem_after = common.proc_memory_kb(proc.pid)
        finally:
            common.stop(proc)
    return {
        "cold_start_s": cold,
        "t_agent_s": elapsed,
        "cpu_s": cpu,
        "rss_ready_kb": mem_ready["VmRSS"],
        "rss_locked_kb": mem_locked["VmRSS"],
        "rss_after_lock_kb": mem_after["VmRSS"],
        "peak_rss_kb": mem_after["VmHWM"],
    }


def unit_idle_exit(unit: Path = common.REPO / "systemd" / "trustinstaller.service") -> float:
    """The idle exit the packaged unit sets (``Environment=TRUSTINSTALLER_IDLE_EXIT=N``)."""
    for line in unit.read_text().splitlines():
        if line.startswith("Environment=TRUSTINSTALLER_IDLE_EXIT="):
            return float(line.rpartition("=")[2])
    raise SystemExit(f"bench: {unit} sets no TRUSTINSTALLER_IDLE_EXIT")


def _activate(
    ns: PrivateNamespace, cfg: Path, sock: Path, log: Path, idle_exit: float
) -> subprocess.Popen[bytes]:
    """systemd-socket-activate holding ``sock``: it execs the agent on the first connection."""
    sock.unlink(missing_ok=True)
    with log.open("ab") as logf:
        proc = ns.popen(["systemd-socket-activate", "-l", str(sock),
                         "-E", f"TRUSTINSTALLER_IDLE_EXIT={idle_exit:g}", "--",
                         str(common.AGENT), "--config", str(cfg), "serve"],
                        stdout=logf, stderr=logf, cwd="/")  # fmt: skip
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"systemd-socket-activate did not listen: {log.read_text()}")
        time.sleep(0.005)
    return proc


def _first_answer(sock: Path) -> tuple[float, dict[str, Any]]:
    """Seconds from the first connection attempt to the first answer, and that answer."""
    t0 = time.perf_counter()
    while True:  # the file appears at bind(), connections are taken from listen()
        try:
            _, doc = request(sock, "GET", "/v1/status")  # accepted at once, answered once ready
            return time.perf_counter() - t0, doc
        except ConnectionRefusedError:
            time.sleep(0.001)


def _wait_exit(proc: subprocess.Popen[bytes], since: float, limit: float) -> float:
    """Seconds from ``since`` until ``proc`` exits on its own."""
    while proc.poll() is None:
        if time.perf_counter() - since > limit:
            raise RuntimeError(f"agent did not exit within {limit:g} s")
        time.sleep(0.05)
    return time.perf_counter() - since


def measure_idle_exit(
    base: Path,
    moto: MotoServer,
    secrets: Sequence[Secret],
    label: str,
    *,
    settle: float,
    idle_exit: float,
) -> dict[str, float]:
    """Socket-activated, as the packaged unit runs it, with its TRUSTINSTALLER_IDLE_EXIT.

    systemd-socket-activate holds the socket and execs the agent on the first connection,
    as systemd does. Measures activation -> first answer, how long after the lock the agent
    exits, and then what a daemon started again after the lock costs to answer
    ``GET /v1/status`` (time, CPU seconds, RSS, and whether it loaded cryptography), until it
    exits too.
    """
    body = common.manifest(secrets)
    with common.fresh_namespace(base, label) as ns:
        cfg, sock = common.agent_config(ns, moto.endpoint)
        log = ns.scratch / "agent.log"
        proc = _activate(ns, cfg, sock, log, idle_exit)
        try:
            activation, _ = _first_answer(sock)
            time.sleep(settle)
            code, doc = request(sock, "PUT", "/v1/manifest", body)
            locked = time.perf_counter()
            if code != 200:
                raise RuntimeError(f"agent answered {code}: {doc.get('message')}")
            rss_locked = common.proc_memory_kb(proc.pid)["VmRSS"]
            exited = _wait_exit(proc, locked, idle_exit + 30)
        finally:
            common.stop(proc)
        # The next connection after the exit, as systemd would serve it: a new process.
        proc = _activate(ns, cfg, sock, log, idle_exit)
        try:
            restart, doc = _first_answer(sock)
            answered = time.perf_counter()
            if doc.get("state") != "locked":
                raise RuntimeError(f"restarted agent says {doc.get('state')!r}, not locked")
            rss_restarted = common.proc_memory_kb(proc.pid)["VmRSS"]
            cpu_restarted = common.proc_cpu_s(proc.pid)
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            restarted_exit = _wait_exit(proc, answered, idle_exit + 30)
        finally:
            common.stop(proc)
    return {
        "t_activation_s": activation,
        "t_exit_after_lock_s": exited,
        "rss_locked_kb": rss_locked,
        "t_restart_answer_s": restart,
        "rss_restarted_kb": rss_restarted,
        "cpu_restarted_s": cpu_restarted,
        "restarted_loaded_cryptography": float("cryptography" in maps),
        "t_restarted_exit_s": restarted_exit,
    }


def script_text(
    ns: PrivateNamespace, endpoint: str, secrets: Sequence[Secret], aws: str = "aws"
) -> str:
    """What a user would write: one aws call per secret, update-ca-certificates, one certutil -A
    per certificate."""
    db = f"sql:{common.nss_dir(ns.scratch)}"
    lines = [
        "set -eu",
        "d=/usr/local/share/ca-certificates/by-hand",
        'mkdir -p "$d"',
    ]
    for i, s in enumerate(secrets):
        lines.append(
            f"{aws} secretsmanager get-secret-value --endpoint-url {endpoint} --region {s.region} "
            f"--secret-id {shlex.quote(s.arn)} --query SecretString --output text "
            f'> "$d/ca-{i:02d}.crt"'
        )
    lines.append("update-ca-certificates")
    for i in range(len(secrets)):
        lines.append(f'certutil -A -d {db} -n by-hand-{i:02d} -t C,, -i "$d/ca-{i:02d}.crt"')
    return "\n".join(lines) + "\n"


def measure_script(
    base: Path, moto: MotoServer, secrets: Sequence[Secret], label: str, aws: Path
) -> dict[str, float]:
    """Run the hand-written script in a fresh namespace; time it end to end."""
    with common.fresh_namespace(base, label) as ns:
        script = ns.scratch / "by-hand.sh"
        # By absolute path: commands in the namespace start in its /, and another aws may be
        # first on PATH.
        script.write_text(script_text(ns, moto.endpoint, secrets, shlex.quote(str(aws))))
        env = {"PATH": f"{aws.parent}:{os.environ['PATH']}"}
        cpu0 = common.children_cpu_s()
        t0 = time.perf_counter()
        done = ns.run(["bash", str(script)], env=env)
        elapsed = time.perf_counter() - t0
        cpu = common.children_cpu_s() - cpu0
        if done.returncode != 0:
            raise RuntimeError(f"by-hand script failed ({done.returncode}): {done.stderr[-2000:]}")
        _check_bundle(ns, secrets)
    return {"t_script_s": elapsed, "cpu_s": cpu}


def measure_floor(base: Path, secrets: Sequence[Secret], label: str) -> dict[str, float]:
    """The same files already in place; time update-ca-certificates alone (Java hook included)."""
    with common.fresh_namespace(base, label) as ns:
        d = ns.path("/usr/local/share/ca-certificates") / "trustinstaller"
        d.mkdir(mode=0o755)
        for s in secrets:
            (d / f"{s.fingerprint}.crt").write_text(s.pem)
        cpu0 = common.children_cpu_s()
        t0 = time.perf_counter()
        # As the agent runs it: the same arguments, and the C locale its runner sets.
        argv = ["update-ca-certificates", *DebianStore(_run.run)._args()]
        done = ns.run(argv, env={"LC_ALL": "C"})
        elapsed = time.perf_counter() - t0
        cpu = common.children_cpu_s() - cpu0
        if done.returncode != 0:
            raise RuntimeError(f"update-ca-certificates: {done.stdout}{done.stderr}")
        _check_bundle(ns, secrets)
    return {"t_floor_s": elapsed, "cpu_s": cpu}


def measure_store(base: Path, secrets: Sequence[Secret], label: str, way: str) -> dict[str, float]:
    """The same files in place; time the OS store's update ``way`` ("fast" or "script") and
    then its rollback, from a process in the namespace (tests/bench/osstore.py)."""
    with common.fresh_namespace(base, label) as ns:
        d = ns.path("/usr/local/share/ca-certificates") / "trustinstaller"
        d.mkdir(mode=0o755)
        for s in secrets:
            (d / f"{s.fingerprint}.crt").write_text(s.pem)
        done = ns.run([sys.executable, "-m", "tests.bench.osstore", way], cwd="/",
                      env={"PYTHONPATH": str(common.REPO)})  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"osstore {way}: {done.stdout}{done.stderr[-3000:]}")
        row: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
        if way == "fast" and row["fast"] != 1.0:
            raise RuntimeError("the fast path was not taken: is this script in PROVEN?")
    return row


def _check_bundle(ns: PrivateNamespace, secrets: Sequence[Secret]) -> None:
    bundle = ns.path("/etc/ssl/certs/ca-certificates.crt").read_text()
    squashed = "".join(bundle.split())
    missing = [s.arn for s in secrets if "".join(s.pem.split()) not in squashed]
    if missing:
        raise RuntimeError(f"{len(missing)} certificate(s) missing from the bundle: {missing[:3]}")


# -- the run ------------------------------------------------------------------------------------

Rows = list[dict[str, float]]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every path for every count, interleaved, ``args.runs`` times."""
    aws = Path(args.aws).resolve()
    if not args.no_script and not aws.exists():
        raise SystemExit(f"bench: {aws} is missing; run `make bench` (it makes that venv)")
    variants: list[tuple[str, str | None]] = args.agent or [("agent", None)]
    results: dict[int, dict[str, Rows]] = {n: {} for n in args.counts}
    with moto_server() as moto, common.scratch_root() as base:
        secrets = {n: common.make_secrets(moto, n, f"n{n}") for n in args.counts}
        # One untimed pass warms the page cache (the JVM, awscli, the agent's imports).
        smallest = min(args.counts)
        for name, tree in variants:
            measure_agent(base, moto, secrets[smallest], f"warmup-{name}", settle=args.settle,
                          tree=tree)  # fmt: skip
        measure_floor(base, secrets[smallest], "warmup-floor")
        if not args.no_script:
            measure_script(base, moto, secrets[smallest], "warmup-script", aws)
        for r in range(args.runs):
            for n in args.counts:
                tag = f"r{r}-n{n}"
                one = results[n]
                for name, tree in variants:
                    one.setdefault(f"agent/{name}", []).append(
                        measure_agent(
                            base, moto, secrets[n], f"{tag}-{name}", settle=args.settle, tree=tree
                        )
                    )
                    if args.at_ready:
                        one.setdefault(f"ready/{name}", []).append(
                            measure_agent(
                                base, moto, secrets[n], f"{tag}-{name}-r", settle=0.0, tree=tree
                            )
                        )
                one.setdefault("floor", []).append(measure_floor(base, secrets[n], f"{tag}-floor"))
                for way in ("fast", "script"):
                    one.setdefault(f"store/{way}", []).append(
                        measure_store(base, secrets[n], f"{tag}-store-{way}", way)
                    )
                if n == max(args.counts):
                    exit_row = measure_idle_exit(
                        base, moto, secrets[n], f"{tag}-exit",
                        settle=args.settle, idle_exit=args.idle_exit,
                    )  # fmt: skip
                    one.setdefault("idle_exit", []).append(exit_row)
                if not args.no_script:
                    one.setdefault("script", []).append(
                        measure_script(base, moto, secrets[n], f"{tag}-script", aws)
                    )
                _progress(r, n, one)
    return {
        "machine": machine(),
        "args": {"runs": args.runs, "counts": args.counts, "settle": args.settle,
                 "idle_exit": args.idle_exit, "variants": [name for name, _ in variants]},
        "results": results,
    }  # fmt: skip


def _progress(r: int, n: int, one: dict[str, Rows]) -> None:
    parts = [f"run {r + 1} n={n}:"]
    for key, rows in one.items():
        t = next(v for k, v in rows[-1].items() if k.startswith("t_"))
        parts.append(f"{key} {t:.3f}s")
    print("  " + " ".join(parts), file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""

    def sh(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=10).stdout.strip()  # fmt: skip
        except OSError:
            return "?"

    return {
        "nproc": sh("nproc"),
        "lscpu": "\n".join(sh("lscpu").splitlines()[:10]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


# -- the tables ---------------------------------------------------------------------------------


def _col(rows: Rows | None, key: str) -> list[float]:
    return [row[key] for row in rows or []]


def _cell(values: Sequence[float], unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "-"
    m = common.median(values) * scale
    lo, hi = min(values) * scale, max(values) * scale
    return f"{m:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def _ratio(num: Sequence[float], den: Sequence[float]) -> str:
    """The median of per-round ratios: each pair was measured seconds apart."""
    pairs = [a / b for a, b in zip(num, den, strict=False) if b > 0]
    return f"{common.median(pairs):.3f}" if pairs else "-"


def table(report: dict[str, Any]) -> str:
    """The results as Markdown: medians, with (min-max) over the runs."""
    results: dict[int, dict[str, Rows]] = report["results"]
    variants: list[str] = report["args"]["variants"]
    main = variants[0]
    out = [
        f"Medians over {report['args']['runs']} runs, each in a fresh namespace, (min-max) in "
        "brackets; ratios are medians of the per-round ratios.",
        "",
        "| certs | T_agent | T_script | T_floor | T_agent/T_script | T_agent/T_floor "
        "| T_agent, PUT at ready |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted(results):
        one = results[n]
        agent = _col(one.get(f"agent/{main}"), "t_agent_s")
        script = _col(one.get("script"), "t_script_s")
        floor = _col(one.get("floor"), "t_floor_s")
        at_ready = _col(one.get(f"ready/{main}"), "t_agent_s")
        out.append(
            f"| {n} | {_cell(agent)} | {_cell(script)} | {_cell(floor)} "
            f"| {_ratio(agent, script)} | {_ratio(agent, floor)} | {_cell(at_ready)} |"
        )
    starts = [row for n in results for key in (f"agent/{main}", f"ready/{main}")
              for row in results[n].get(key, [])]  # fmt: skip
    biggest = max(results)
    big = results[biggest].get(f"agent/{main}", []) + results[biggest].get(f"ready/{main}", [])
    exits = results[biggest].get("idle_exit", [])
    idle = report["args"].get("idle_exit", float("nan"))
    mb = 1 / 1024
    out += [
        "",
        "| measure | median (min-max) |",
        "|---|---:|",
        f"| cold start, exec -> socket answering ({len(starts)} starts) "
        f"| {_cell(_col(starts, 'cold_start_s'), digits=3)} |",
        f"| RSS when ready | {_cell(_col(starts, 'rss_ready_kb'), 'MB', mb, 1)} |",
        f"| peak RSS (VmHWM) of a {biggest}-certificate install "
        f"| {_cell(_col(big, 'peak_rss_kb'), 'MB', mb, 1)} |",
        f"| RSS 1 s after the lock, {biggest} certificates "
        f"| {_cell(_col(big, 'rss_after_lock_kb'), 'MB', mb, 1)} |",
        f"| socket-activated, TRUSTINSTALLER_IDLE_EXIT={idle:g}: activation -> first answer "
        f"| {_cell(_col(exits, 't_activation_s'), digits=3)} |",
        f"| socket-activated: RSS at the lock "
        f"| {_cell(_col(exits, 'rss_locked_kb'), 'MB', mb, 1)} |",
        f"| socket-activated: exited this long after the lock (RSS then: 0) "
        f"| {_cell(_col(exits, 't_exit_after_lock_s'))} |",
        f"| restarted after the lock: activation -> GET /v1/status answered "
        f"| {_cell(_col(exits, 't_restart_answer_s'), digits=3)} |",
        f"| restarted after the lock: CPU seconds to answer "
        f"| {_cell(_col(exits, 'cpu_restarted_s'))} |",
        f"| restarted after the lock: RSS once answered "
        f"| {_cell(_col(exits, 'rss_restarted_kb'), 'MB', mb, 1)} |",
        f"| restarted after the lock: cryptography loaded "
        f"| {sum(_col(exits, 'restarted_loaded_cryptography')):g} of {len(exits)} |",
        f"| restarted after the lock: exited this long after answering "
        f"| {_cell(_col(exits, 't_restarted_exit_s'))} |",
        "",
        "CPU seconds (user + system, the process and every child it waited for), medians:",
        "",
        "| certs | agent | script | floor |",
        "|---:|---:|---:|---:|",
    ]
    for n in sorted(results):
        one = results[n]
        out.append(f"| {n} | {_cell(_col(one.get(f'agent/{main}'), 'cpu_s'))} "
                   f"| {_cell(_col(one.get('script'), 'cpu_s'))} "
                   f"| {_cell(_col(one.get('floor'), 'cpu_s'))} |")  # fmt: skip
    out += [
        "",
        "The OS store alone, from a process in the namespace (the Java hook included): its "
        "update by the fast path and by update-ca-certificates, then the rollback of that "
        "install; CPU seconds beside each:",
        "",
        "| certs | store/fast | store/script | fast/script | rollback/fast | rollback/script "
        "| CPU store fast / script | CPU rollback fast / script |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted(results):
        fast, script = results[n].get("store/fast"), results[n].get("store/script")
        out.append(
            f"| {n} | {_cell(_col(fast, 't_store_s'))} | {_cell(_col(script, 't_store_s'))} "
            f"| {_ratio(_col(fast, 't_store_s'), _col(script, 't_store_s'))} "
            f"| {_cell(_col(fast, 't_rollback_s'))} | {_cell(_col(script, 't_rollback_s'))} "
            f"| {_cell(_col(fast, 'cpu_s'))} / {_cell(_col(script, 'cpu_s'))} "
            f"| {_cell(_col(fast, 'cpu_rollback_s'))} / {_cell(_col(script, 'cpu_rollback_s'))} |"
        )
    if len(variants) > 1:
        out += [
            "",
            "Agent versions, measured in the same rounds:",
            "",
            "| version | certs | T_agent | T_agent/T_floor | PUT at ready | cold start "
            "| RSS after lock |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for v in variants:
            for n in sorted(results):
                one = results[n]
                rows = one.get(f"agent/{v}", [])
                ready = one.get(f"ready/{v}", [])
                floor = _col(one.get("floor"), "t_floor_s")
                out.append(
                    f"| {v} | {n} | {_cell(_col(rows, 't_agent_s'))} "
                    f"| {_ratio(_col(rows, 't_agent_s'), floor)} "
                    f"| {_cell(_col(ready, 't_agent_s'))} "
                    f"| {_cell(_col(rows + ready, 'cold_start_s'), digits=3)} "
                    f"| {_cell(_col(rows, 'rss_after_lock_kb'), 'MB', mb, 1)} |"
                )
    return "\n".join(out)


def machine_text(m: dict[str, str]) -> str:
    """The machine block for the README."""
    return (
        f"nproc: {m['nproc']}; kernel {m['kernel']}; Python {m['python']}; "
        f"load average at the end {m['loadavg']}; {m['date']}\n\n"
        f"```\n$ lscpu | head\n{m['lscpu']}\n```"
    )


def _variant(text: str) -> tuple[str, str | None]:
    name, sep, tree = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("use NAME=DIR (DIR holds a trustinstaller package)")
    if not Path(tree, "trustinstaller", "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{tree}: no trustinstaller package in it")
    return name, str(Path(tree).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.bench``: run the benchmark and print the table."""
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--counts", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 10, 20], help="certificate counts (default 1,10,20)")  # fmt: skip
    p.add_argument("--settle", type=float, default=1.5,
                   help="seconds between ready and the PUT (default 1.5)")  # fmt: skip
    p.add_argument("--no-at-ready", dest="at_ready", action="store_false",
                   help="skip the PUT-at-ready measurement")  # fmt: skip
    p.add_argument("--no-script", action="store_true", help="skip the hand-written path")
    p.add_argument("--agent", action="append", type=_variant, metavar="NAME=DIR",
                   help="measure the package in DIR too (repeatable; the first is the main one; "
                   "default: the installed package)")  # fmt: skip
    p.add_argument("--aws", default=str(DEFAULT_AWS), help="the aws CLI to use")
    p.add_argument("--idle-exit", type=float, default=None,
                   help="TRUSTINSTALLER_IDLE_EXIT for the socket-activated runs (default: the "
                   "packaged unit's)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write raw results here")
    args = p.parse_args(argv)
    if args.idle_exit is None:
        args.idle_exit = unit_idle_exit()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (private mount namespaces)")
    common.clean_environment()
    started = time.monotonic()
    report = run(args)
    report["wall_s"] = time.monotonic() - started
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report))
    print()
    print(machine_text(report["machine"]))
    print(f"\nbenchmark wall time: {report['wall_s']:.0f} s")
    return 0
