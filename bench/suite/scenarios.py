"""The measurements: a fixed-length `wrk` run with every process's CPU read around it, a
sequential streaming client for time to first and last byte, slow streams held open for
the node's memory, revocation propagation and the audit-load hook."""

from __future__ import annotations

import asyncio
import http.client
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .backends import BENCH_DIR, require_tool
from .procs import CLK_TCK, BenchError, cpu_snapshot, json_line, open_fds, rss_kib, run_measured


@dataclass
class Target:
    """Something to load: a URL (or several nodes' ports), a credential and a body file."""

    name: str
    url: str
    auth: str
    body_file: Path
    ports: list[int] = field(default_factory=list)  # several nodes from one wrk


def wrk_run(target: Target, connections: int, threads: int, seconds: float, groups: dict[str, list[int]],
            logs: Path, after=None) -> dict:
    """One `wrk` run; CPU of every process group read before it and after it (after
    `after(requests)` returns, when given: e.g. once the audit has drained)."""
    wrk = require_tool("wrk", "apt-get install -y wrk")
    if target.ports:
        threads = max(threads, len(target.ports))
        threads -= threads % len(target.ports)
    connections = max(connections - connections % threads, threads)  # wrk gives each thread c/t
    env = {"BENCH_BODY_FILE": str(target.body_file), "BENCH_AUTH": target.auth,
           "BENCH_PORTS": ",".join(str(p) for p in target.ports)}
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(BENCH_DIR / "lua" / "post.lua"), target.url]
    before = cpu_snapshot(groups)
    status, out, wrk_cpu = run_measured(argv, env, seconds + 60, logs / "wrk.log")
    if status != 0:
        raise BenchError(f"wrk against {target.name} exited {status}: {out[-1000:]}")
    r = json_line(out, "BENCH_JSON")
    extra = after(r["requests"]) if after else {}
    after_ticks = cpu_snapshot(groups)
    n = max(r["requests"], 1)
    cpu = {g: (after_ticks[g] - before[g]) * 1000.0 / CLK_TCK / n for g in groups}
    cpu["load generator (wrk)"] = wrk_cpu * 1000.0 / n
    return {
        "target": target.name,
        "connections": connections,
        "threads": threads,
        "requests": r["requests"],
        "seconds": r["duration_us"] / 1e6,
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_us": r["p50_us"], "p90_us": r["p90_us"], "p99_us": r["p99_us"], "p999_us": r["p999_us"],
        "max_us": r["max_us"],
        "non_2xx": r["err_status"],
        "socket_errors": r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"],
        "cpu_ms_per_request": cpu,
        **extra,
    }


# ------------------------------------------------------------- streaming, sequential

def _split(url: str) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.rsplit(":", 1)
    return host, int(port), "/" + path


def _one_stream(conn: http.client.HTTPConnection, path: str, auth: str, body: bytes) -> tuple[float, float]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    t0 = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        text = resp.read()[:300]
        raise BenchError(f"streaming request answered {resp.status}: {text!r}")
    first = None
    while True:
        data = resp.read1(65536)
        if not data:
            break
        if first is None:
            first = time.perf_counter()
    last = time.perf_counter()
    if first is None:
        raise BenchError("streaming answer had no body")
    return first - t0, last - t0


def stream_sequential(targets: list[Target], rounds: int, warmup: int) -> dict:
    """Time to first and last byte, one request at a time, alternating between targets
    request by request (drift hits every target equally)."""
    conns, bodies, samples = {}, {}, {t.name: ([], []) for t in targets}
    for t in targets:
        host, port, path = _split(t.url)
        conns[t.name] = (http.client.HTTPConnection(host, port, timeout=30), path)
        bodies[t.name] = t.body_file.read_bytes()
    for i in range(warmup + rounds):
        for t in targets:
            conn, path = conns[t.name]
            ttfb, ttlb = _one_stream(conn, path, t.auth, bodies[t.name])
            if i >= warmup:
                samples[t.name][0].append(ttfb)
                samples[t.name][1].append(ttlb)
    for conn, _ in conns.values():
        conn.close()
    out = {}
    for name, (first, last) in samples.items():
        out[name] = {"n": len(first), "first_byte": percentiles(first), "last_byte": percentiles(last)}
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9 in microseconds (nearest rank)."""
    s = sorted(values)

    def p(q: float) -> float:
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] * 1e6

    return {"p50_us": p(0.50), "p90_us": p(0.90), "p99_us": p(0.99), "p999_us": p(0.999),
            "mean_us": statistics.fmean(s) * 1e6}


# ------------------------------------------------------------- slow streams, memory

async def _hold_streams(port: int, path: str, auth: str, body: bytes, n: int, measure, ramp: int = 64,
                        per_stream_timeout: float = 30.0) -> dict:
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Authorization: Bearer {auth}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    gate = asyncio.Semaphore(ramp)
    writers: list[asyncio.StreamWriter] = []
    failures: list[str] = []

    async def first_chunk():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return head.split(b"\r\n", 1)[0].decode(errors="replace")
        got = b""
        while b"data:" not in got:
            chunk = await reader.read(4096)
            if not chunk:
                return "closed before the first chunk"
            got += chunk
        return None

    async def one():
        async with gate:
            try:
                failure = await asyncio.wait_for(first_chunk(), per_stream_timeout)
            except asyncio.TimeoutError:
                failure = f"no first chunk within {per_stream_timeout:.0f} s"
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                failure = type(e).__name__
            if failure:
                failures.append(failure)

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    opened_s = time.monotonic() - t0
    await asyncio.sleep(1.0)
    result = measure()
    for w in writers:
        w.close()
    for w in writers:
        try:
            await w.wait_closed()
        except OSError:
            pass
    result.update({"streams": n, "failed": len(failures), "failures_sample": sorted(set(failures))[:5],
                   "open_seconds": round(opened_s, 2)})
    return result


def slow_streams(node_pid: int, url: str, auth: str, body_file: Path, levels: list[int]) -> dict:
    """Node memory idle and with each number of concurrent slow streams open through it."""
    _, port, path = _split(url)
    body = body_file.read_bytes()
    idle_rss, _ = rss_kib(node_pid)
    rows = []
    for n in levels:
        def measure():
            rss, hwm = rss_kib(node_pid)
            return {"rss_kib": rss, "hwm_kib": hwm, "node_open_files": open_fds(node_pid)}

        row = asyncio.run(_hold_streams(port, path, auth, body, n, measure))
        row["kib_per_stream"] = (row["rss_kib"] - idle_rss) / n
        time.sleep(2.0)
        row["rss_after_close_kib"] = rss_kib(node_pid)[0]
        rows.append(row)
        if row["failed"]:
            break
    return {"idle_rss_kib": idle_rss, "levels": rows}


# ------------------------------------------------------------- revocation

def revocation(cp, nodes, body: bytes, samples: int) -> dict:
    """From `wardenctl vkey revoke` starting to every node refusing the key."""
    from .warden import wait_accepts

    times, ctl_times = [], []
    for i in range(samples):
        key_id, key = cp.create_vkey(f"bench-revoke-{i}")
        for node in nodes:
            wait_accepts(node.url("/v1/chat/completions"), key, body)
        refused_at: dict[str, float] = {}
        stop = threading.Event()
        errors: list[str] = []

        def poll(node):
            conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            try:
                while not stop.is_set():
                    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
                    r = conn.getresponse()
                    r.read()
                    if r.status == 401:  # refused: the credential is revoked
                        refused_at[node.node_id] = time.perf_counter()
                        return
                    if r.status != 200:
                        errors.append(f"{node.node_id} answered {r.status}")
                        return
                    time.sleep(0.002)
            except OSError as e:
                errors.append(f"{node.node_id}: {e}")
            finally:
                conn.close()

        threads = [threading.Thread(target=poll, args=(n,), daemon=True) for n in nodes]
        for t in threads:
            t.start()
        time.sleep(0.05)
        t0 = time.perf_counter()
        cp.ctl("vkey", "revoke", key_id)
        ctl_times.append(time.perf_counter() - t0)
        for t in threads:
            t.join(15)
        stop.set()
        if errors or len(refused_at) != len(nodes):
            raise BenchError(f"revocation sample {i}: {errors or 'not every node refused within 15 s'}")
        times.append(max(refused_at.values()) - t0)
    out = percentiles(times)
    out.update({"samples": samples, "nodes": len(nodes), "max_us": max(times) * 1e6,
                "wardenctl_call_p50_us": percentiles(ctl_times)["p50_us"]})
    return out
