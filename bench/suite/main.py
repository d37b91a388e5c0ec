"""`bench/run`: the benchmark suite in one command (see BENCHMARKS.md, "Issue 17: benchmark
suite"). Starts private backends, two Warden set-ups and the peer gateways against the same
mocks, runs every scenario side by side and writes results.json and results.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import audit_load, profile, report, scenarios
from .backends import start_mock, start_postgres, start_redis
from .peers import start_litellm, start_tensorzero
from .procs import BenchError, Proc, http_status, raise_nofile, stop_all
from .scenarios import Target
from .warden import MODEL, MODEL_60MS, MODEL_SLOW, ControlPlane, wait_accepts

REPO = Path(__file__).resolve().parents[2]
SCHEMA = audit_load.SCHEMA
DIRECT_MODEL = "gpt-4o-mini"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--bin-dir", type=Path, default=REPO / "target" / "release",
                   help="warden-cp, warden-dp, wardenctl (and examples/publish_audit_load if built) [target/release]")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run [10]")
    p.add_argument("--connections", type=int, default=32, help="wrk connections, non-streaming [32]")
    p.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    p.add_argument("--quick", action="store_true", help="short runs for a smoke test (3 s, fewer samples)")
    p.add_argument("--self-check", action="store_true",
                   help="seconds-long run of every Warden scenario without the peers; fails on any error")
    p.add_argument("--peers", default="tensorzero,litellm", help="peers to run beside Warden, or 'none'")
    p.add_argument("--streams", help="concurrent slow streams for the memory stage "
                   "[1000,2000,5000; --quick 200,500; --self-check 50]")
    p.add_argument("--tools-dir", type=Path,
                   default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "warden-bench",
                   help="virtualenvs of the peers (installed on first use) [~/.cache/warden-bench]")
    p.add_argument("--out", type=Path, help="results directory [target/bench-results/<UTC time>]")
    p.add_argument("--keep", action="store_true", help="keep the work directory (databases, spools)")
    p.add_argument("--profile", type=float, metavar="SECONDS",
                   help="only profile the everything-on node and control plane with perf for SECONDS")
    p.add_argument("--memory-only", action="store_true",
                   help="only the memory stage: node RSS idle and with --streams slow streams (peers off)")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="print the Markdown of a results.json and exit")
    args = p.parse_args(argv)
    if args.profile or args.memory_only:
        args.peers = "none"
    if args.self_check:
        args.seconds, args.peers, streams = 1.0, "none", "50"
        args.rounds, args.revocations, args.warmup_s = 20, 2, 1.0
    elif args.quick:
        args.seconds, streams = 3.0, "200,500"
        args.rounds, args.revocations, args.warmup_s = 100, 5, 1.0
    else:
        streams = "1000,2000,5000"
        args.rounds, args.revocations, args.warmup_s = 300, 30, 2.0
    args.streams = args.streams or streams
    args.peer_list = [] if args.peers == "none" else [x.strip() for x in args.peers.split(",") if x.strip()]
    unknown = set(args.peer_list) - {"tensorzero", "litellm"}
    if unknown:
        p.error(f"unknown peers: {', '.join(sorted(unknown))} (known: tensorzero, litellm)")
    args.stream_levels = [int(x) for x in args.streams.split(",") if x.strip()]
    return args


def filler(n: int) -> str:
    """`n` bytes of prose that no built-in DLP rule matches (as warden-bench's --body-bytes)."""
    words = ["the", "gateway", "order", "1234", "invoice", "2026-12-06", "sky-high", "task", "AKIA", "number",
             "555-0100", "account", "ref", "42", "summary", "of", "the", "quarter,"]
    out, i = [], 0
    size = 0
    while size < n:
        out.append(words[i % len(words)])
        size += len(words[i % len(words)]) + 1
        i += 1
    return " ".join(out)[:n]


class Suite:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.out = (args.out or REPO / "target" / "bench-results" / stamp).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = self.out / "work"
        self.work.mkdir(exist_ok=True)
        self.logs = self.out / "logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        self.clusters: list[ControlPlane] = []
        self.results: dict = {"machine": machine(), "settings": settings(args), "started": stamp}
        self.text = filler(1024)
        self.warnings: list[str] = []
        self.results["warnings"] = self.warnings

    def body(self, model: str, stream: bool) -> Path:
        path = self.work / f"body-{model.replace(':', '_')}-{'stream' if stream else 'plain'}.json"
        if not path.exists():
            doc = {"model": model, "messages": [{"role": "user", "content": self.text}], "max_tokens": 16}
            if stream:
                doc["stream"] = True
            path.write_text(json.dumps(doc))
        return path

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ set-up

    def start(self) -> None:
        a = self.args
        self.log(f"results in {self.out}")
        self.mock = start_mock("mock", self.logs)
        self.mock60 = start_mock("mock-60ms", self.logs, delay_ms=60)
        self.mock_slow = start_mock("mock-slow", self.logs, slow_interval_ms=1000, slow_chunks=180)
        self.redis = start_redis(self.work, self.logs)
        self.pg = start_postgres(self.work, self.logs)
        self.procs += [self.mock.proc, self.mock60.proc, self.mock_slow.proc, self.redis.proc, self.pg.proc]
        self.results["postgres"] = {"synchronous_commit": self.pg.setting("synchronous_commit"),
                                    "fsync": self.pg.setting("fsync"), "version": self.pg.setting("server_version")}
        self.peers = {}
        if "tensorzero" in a.peer_list:
            self.log("starting TensorZero's gateway")
            self.peers["tensorzero"] = start_tensorzero(a.tools_dir, self.work, self.logs, self.mock.port,
                                                        self.mock60.port, 24 * 3600)
        if "litellm" in a.peer_list:
            self.log("starting LiteLLM's proxy (2 workers)")
            self.peers["litellm"] = start_litellm(a.tools_dir, self.work, self.logs, self.mock.port, self.mock60.port)
        self.procs += [p.proc for p in self.peers.values()]
        for peer in self.peers.values():
            self.warm(peer)
            peer.pause()

        self.log("starting Warden, minimal path (SQLite, no Redis, a JWT, no DLP)")
        mini = ControlPlane("minimal", a.bin_dir, self.work, self.logs)
        self.clusters.append(mini)
        mini.start()
        mini.add_provider("mock", self.mock.base_url, 1, [(MODEL, 0.15, 0.6)])
        mini.add_provider("mock60", self.mock60.base_url, 1, [(MODEL_60MS, 0.15, 0.6)])
        self.mini_token = mini.ctl("token", "issue", "--subject", "bench", "--models", "*", "--ttl", "12h")
        mini.add_node(1)
        self.mini = mini

        self.log("starting Warden, everything on (PostgreSQL, Redis, limits, budget, 2 keys, DLP, audit)")
        full = ControlPlane("full", a.bin_dir, self.work, self.logs, redis_url=self.redis.url,
                            database_url=self.pg.url, schema=SCHEMA)
        self.clusters.append(full)
        full.start()
        full.add_provider("mock", self.mock.base_url, 2, [(MODEL, 0.15, 0.6)])
        full.add_provider("mock60", self.mock60.base_url, 2, [(MODEL_60MS, 0.15, 0.6)])
        full.add_provider("mockslow", self.mock_slow.base_url, 2, [(MODEL_SLOW, 0.15, 0.6)])
        full.ctl("dlp", "enable-builtin", "--action", "redact")
        _, self.full_key = full.create_vkey("bench-everything-on", "--rpm", "100000000", "--tpm", "100000000000",
                                            "--max-parallel", "100000", "--max-budget", "1000000",
                                            "--budget-period", "30d")
        for _ in range(3):
            full.add_node(3)
        self.idle_rss_at_start = _rss(full.nodes[0].proc.pid)
        certs = self.work / "certs"
        full.ctl("certs", "dev", "--out", str(certs))
        self.tls_node = full.add_node(3, ["--http-tls-cert-file", str(certs / "server.pem"),
                                          "--http-tls-key-file", str(certs / "server.key")])
        self.full = full
        for c in self.clusters:
            self.procs += c.procs()
        body = self.body(MODEL, False).read_bytes()
        wait_accepts(mini.nodes[0].url("/v1/chat/completions"), self.mini_token, body)
        for node in full.nodes[:3]:
            wait_accepts(node.url("/v1/chat/completions"), self.full_key, body)

    def warm(self, peer) -> None:
        """A few requests of each kind one at a time: the peers set things up on first use."""
        headers = {"Content-Type": "application/json"}
        if peer.auth:
            headers["Authorization"] = f"Bearer {peer.auth}"
        for model in peer.models:
            for stream in (False, True):
                body = self.body(model, stream).read_bytes()
                for _ in range(10):
                    status = http_status(peer.base_url, "POST", body, headers, timeout=60)
                    if status != 200:
                        raise BenchError(f"{peer.name} answered {status} to {model} (stream={stream}); "
                                         f"log: {peer.proc.log}")

    def groups(self) -> dict[str, list[int]]:
        g = {
            "mock": [self.mock.proc.pid, self.mock60.proc.pid, self.mock_slow.proc.pid],
            "redis": [self.redis.proc.pid],
            "postgres": [self.pg.proc.pid],
            "node (minimal)": [self.mini.nodes[0].proc.pid],
            "control plane (minimal)": [self.mini.proc.pid],
            "node 1 (everything on)": [self.full.nodes[0].proc.pid],
            "nodes 1-3 (everything on)": [n.proc.pid for n in self.full.nodes[:3]],
            "HTTPS node (everything on)": [self.tls_node.proc.pid],
            "control plane (everything on)": [self.full.proc.pid],
        }
        for name, peer in self.peers.items():
            g[peer.name] = [peer.proc.pid]
        return g

    # ------------------------------------------------------------------ targets

    def targets(self, stream: bool, slow_provider: bool) -> list[tuple[Target, str, str]]:
        """(target, gateway group, control-plane group) for each side of the comparison."""
        mock = self.mock60 if slow_provider else self.mock
        model = MODEL_60MS if slow_provider else MODEL
        chat = "/v1/chat/completions"
        out = [(Target("direct to the mock", f"{mock.base_url}/chat/completions", "sk-mock-direct",
                       self.body(DIRECT_MODEL, stream)), "", "")]
        out.append((Target("Warden, minimal path", self.mini.nodes[0].url(chat), self.mini_token,
                           self.body(model, stream)), "node (minimal)", "control plane (minimal)"))
        out.append((Target("Warden, everything on", self.full.nodes[0].url(chat), self.full_key,
                           self.body(model, stream)), "node 1 (everything on)", "control plane (everything on)"))
        for peer in self.peers.values():
            out.append((Target(peer.name, peer.base_url, peer.auth, self.body(peer.models[int(slow_provider)], stream)),
                        peer.name, ""))
        return out

    # ------------------------------------------------------------------ stages

    def load(self, target: Target, gw: str, cp: str, connections: int, audited: bool = False) -> dict:
        """A warm-up run, then the measured one. With `audited`, every process's CPU is read
        once the audit rows of the run have stopped arriving on PostgreSQL (so the control
        plane's and PostgreSQL's share of persisting them is in the figure)."""
        for p in self.procs:
            p.check_alive()
        a = self.args
        peer = next((p for p in self.peers.values() if p.name == gw), None)
        if peer is not None:
            peer.resume()
            try:
                return self._load(target, gw, cp, connections, audited)
            finally:
                peer.pause()
        return self._load(target, gw, cp, connections, audited)

    def _load(self, target: Target, gw: str, cp: str, connections: int, audited: bool) -> dict:
        a = self.args
        settle = None
        if audited:
            before_warmup = audit_load.audit_rows(self.pg, SCHEMA)
            settle = lambda n: audit_load.wait_settled(self.pg, SCHEMA, before_warmup, n)  # noqa: E731
        scenarios.wrk_run(target, connections, a.threads, a.warmup_s, self.groups(), self.logs, settle)
        after = None
        if audited:
            start = audit_load.audit_rows(self.pg, SCHEMA)
            after = lambda n: audit_load.wait_settled(self.pg, SCHEMA, start, n)  # noqa: E731
        result = scenarios.wrk_run(target, connections, a.threads, a.seconds, self.groups(), self.logs, after)
        if audited:
            result["audit_complete"] = result["audit_rows_added"] >= result["requests"]
        result["gateway_group"], result["cp_group"] = gw, cp
        if result["requests"] == 0:
            self.warnings.append(f"{target.name}: no request completed within the {a.seconds:.0f} s run")
        if result["non_2xx"] or result["socket_errors"]:
            self.warnings.append(f"{target.name}: {result['non_2xx']} non-2xx answers, "
                                 f"{result['socket_errors']} socket errors (see logs/)")
        self.log(f"  {target.name:<34} {result['rps']:>9.0f} req/s  p50 {result['p50_us'] / 1000:.2f} ms  "
                 f"p99 {result['p99_us'] / 1000:.2f} ms  non-2xx {result['non_2xx']}")
        return result

    def run(self) -> None:
        a = self.args
        r = self.results
        r["load_before"] = os.getloadavg()
        self.log(f"non-streaming, 1 KB request, {a.connections} connections, {a.seconds:.0f} s each")
        rows = []
        for target, gw, cp in self.targets(False, False):
            audited = target.name == "Warden, everything on"
            rows.append(self.load(target, gw, cp, a.connections, audited))
            if audited:
                three = Target("Warden, everything on, 3 nodes", self.full.nodes[0].url("/v1/chat/completions"),
                               self.full_key, target.body_file, [n.port for n in self.full.nodes[:3]])
                rows.append(self.load(three, "nodes 1-3 (everything on)", cp, a.connections, True))
        r["non_streaming"] = rows
        tls = Target("Warden, everything on, HTTPS", f"https://127.0.0.1:{self.tls_node.port}/v1/chat/completions",
                     self.full_key, self.body(MODEL, False))
        r["tls"] = [self.load(tls, "HTTPS node (everything on)", "control plane (everything on)", a.connections, True)]

        self.log("streaming (wrk: until the last byte)")
        r["streaming"] = [self.load(t, gw, cp, a.connections) for t, gw, cp in self.targets(True, False)]
        self.log(f"streaming, sequential: time to first and last byte, {a.rounds} rounds alternating")
        for peer in self.peers.values():
            peer.resume()
        r["streaming_sequential"] = scenarios.stream_sequential([t for t, _, _ in self.targets(True, False)],
                                                                a.rounds, max(5, a.rounds // 10))
        for peer in self.peers.values():
            peer.pause()
        self.log("60 ms provider, 64 connections")
        r["slow_provider"] = [self.load(t, gw, cp, 64) for t, gw, cp in self.targets(False, True)]

        r["memory"] = self.memory()
        self.log(f"revocation propagation to 3 nodes, {a.revocations} samples")
        r["revocation"] = scenarios.revocation(self.full, self.full.nodes[:3], self.body(MODEL, False).read_bytes(),
                                               a.revocations)
        batches = [256] if a.self_check else [64, 256, 1000]
        events = 10_000 if a.self_check else max(20_000, round(a.seconds * 10_000))
        self.log(f"audit events/s end to end (publish_audit_load, batches {batches}, {events:,} events each)")
        r["audit_load"] = audit_load.run_hook(a.bin_dir, self.pg, events, batches, self.logs)
        r["load_after"] = os.getloadavg()

    def memory(self) -> dict:
        a = self.args
        self.log(f"node memory with {a.streams} concurrent slow streams")
        node = self.full.nodes[0]
        mem = scenarios.slow_streams(node.proc.pid, node.url("/v1/chat/completions"), self.full_key,
                                     self.body(MODEL_SLOW, True), a.stream_levels)
        mem["idle_rss_at_start_kib"] = self.idle_rss_at_start
        return mem

    def stop(self) -> None:
        stop_all()


def _rss(pid: int) -> int:
    from .procs import rss_kib

    return rss_kib(pid)[0]


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "open_files_limit": _nofile()}


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def settings(a: argparse.Namespace) -> dict:
    version = subprocess.run([str(a.bin_dir / "warden-dp"), "--version"], capture_output=True, text=True)
    return {"bin_dir": str(a.bin_dir), "warden_version": version.stdout.strip(), "seconds": a.seconds,
            "connections": a.connections, "threads": a.threads, "mode": mode(a), "peers": a.peer_list,
            "streams": a.stream_levels, "rounds": a.rounds, "revocations": a.revocations,
            "request_bytes": 1024}


def mode(a: argparse.Namespace) -> str:
    return "self-check" if a.self_check else "quick" if a.quick else "full"


def _partial(suite: Suite) -> None:
    path = suite.out / "results.partial.json"
    path.write_text(json.dumps(suite.results, indent=2, default=str) + "\n")
    suite.log(f"what was measured before the failure: {path}")


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        print(report.markdown(json.loads(args.render.read_text())))
        return 0
    raise_nofile()
    signal.signal(signal.SIGTERM, _interrupted)
    suite = Suite(args)
    try:
        suite.start()
        if args.profile:
            suite.results["profile"] = profile.run(suite, args.profile)
            (suite.out / "results.json").write_text(json.dumps(suite.results, indent=2) + "\n")
            return 0
        if args.memory_only:
            suite.results["memory"] = mem = suite.memory()
            (suite.out / "results.json").write_text(json.dumps(suite.results, indent=2) + "\n")
            print("\n".join(report.memory(mem)))
            return 0
        suite.run()
        failures = report.check(suite.results) if args.self_check else []
    except BenchError as e:
        suite.log(f"FAILED: {e}")
        _partial(suite)
        return 1
    except Exception:
        suite.log(f"FAILED: {traceback.format_exc()}")
        _partial(suite)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        suite.stop()
    (suite.out / "results.json").write_text(json.dumps(suite.results, indent=2) + "\n")
    md = report.markdown(suite.results)
    (suite.out / "results.md").write_text(md)
    print(md)
    suite.log(f"wrote {suite.out / 'results.md'} and results.json")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(suite.work)], check=False)
    if failures:
        for f in failures:
            suite.log(f"self-check: {f}")
        return 1
    if args.self_check:
        suite.log("self-check passed")
    return 0
