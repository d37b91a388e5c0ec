"""`bench/run --profile`: where the everything-on node and its control plane spend their
CPU. Starts the suite's set-up without the peers, runs `wrk` against one everything-on node
(the non-streaming 1 KB request) with `perf record` attached to that node and to the control
plane (the software `cpu-clock` event: this machine has no hardware counters), and writes
`perf report` flat profiles (self time per symbol) next to the results. The recording and
the per-process CPU run until the audit rows of the load have reached PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from . import audit_load, scenarios
from .procs import BenchError
from .scenarios import Target
from .warden import MODEL

FREQUENCY = 499  # samples per second per CPU: a prime, off the timer ticks
TOP = 60  # symbols kept in each report


def run(suite, seconds: float) -> dict:
    perf = shutil.which("perf")
    if perf is None:
        raise BenchError("perf is not installed: apt-get install -y linux-perf")
    node = suite.full.nodes[0]
    cp = suite.full
    target = Target("Warden, everything on (profiled)", node.url("/v1/chat/completions"), suite.full_key,
                    suite.body(MODEL, False))
    suite.log(f"warm-up, then {seconds:.0f} s of wrk with perf on the node (pid {node.proc.pid}) "
              f"and the control plane (pid {cp.proc.pid})")
    scenarios.wrk_run(target, suite.args.connections, suite.args.threads, suite.args.warmup_s, suite.groups(),
                      suite.logs)
    recorders = {}
    for name, pid in (("node", node.proc.pid), ("control-plane", cp.proc.pid)):
        data = suite.out / f"perf-{name}.data"
        recorders[name] = (data, subprocess.Popen(
            [perf, "record", "-e", "cpu-clock", "-F", str(FREQUENCY), "-g", "-p", str(pid), "-o", str(data)],
            stdout=subprocess.DEVNULL, stderr=open(suite.logs / f"perf-{name}.log", "wb")))  # noqa: SIM115
    time.sleep(0.5)
    # perf stays attached, and the CPU figures run, until the run's audit rows have stopped
    # arriving on PostgreSQL: the control plane's and PostgreSQL's share of persisting them
    # is in the profile and in the per-request figures.
    start = audit_load.audit_rows(suite.pg, audit_load.SCHEMA)
    result = scenarios.wrk_run(target, suite.args.connections, suite.args.threads, seconds, suite.groups(),
                               suite.logs, lambda n: audit_load.wait_settled(suite.pg, audit_load.SCHEMA, start, n))
    reports = {}
    for name, (data, proc) in recorders.items():
        proc.send_signal(2)  # SIGINT: perf writes its data and exits
        proc.wait(timeout=60)
        text = _report(perf, data)
        path = suite.out / f"perf-{name}.txt"
        path.write_text(text)
        reports[name] = str(path)
        suite.log(f"{name}: {path}")
    syscalls = _syscalls(suite, target, node.proc.pid)
    cpu = result["cpu_ms_per_request"]
    suite.log(f"  {result['rps']:.0f} req/s; {result['audit_rows_added']} audit rows, the last "
              f"{result['audit_drain_s']} s after the load; CPU per request, drain included: node "
              f"{cpu['node 1 (everything on)']:.3f} ms, control plane {cpu['control plane (everything on)']:.3f} ms, "
              f"PostgreSQL {cpu['postgres']:.3f} ms")
    return {"wrk": result, "reports": reports, "frequency": FREQUENCY, "node_syscalls_per_request": syscalls}


def _syscalls(suite, target: Target, pid: int) -> dict:
    """System calls of the node per request: `strace -c -f` attached during a short run
    (strace slows the node down; only the counts are read)."""
    strace = shutil.which("strace")
    if strace is None:
        suite.log("strace is not installed (apt-get install -y strace): no system-call counts")
        return {}
    out = suite.out / "strace-node.txt"
    proc = subprocess.Popen([strace, "-c", "-f", "-p", str(pid), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    result = scenarios.wrk_run(target, suite.args.connections, suite.args.threads, 5, suite.groups(), suite.logs)
    proc.send_signal(2)
    proc.wait(timeout=60)
    n = max(result["requests"], 1)
    counts = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0].replace(".", "", 1).isdigit() and parts[-1] != "total":
            counts[parts[-1]] = round(int(parts[3]) / n, 2)
    suite.log("  node system calls per request (strace, 5 s): "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:12]))
    return counts


def _report(perf: str, data: Path) -> str:
    """Self time per symbol (flat), then per shared object: the top of each."""
    out = []
    for sort in ("symbol", "dso"):
        r = subprocess.run([perf, "report", "-i", str(data), "--no-children", "--stdio", "--sort", sort,
                            "-g", "none", "--percent-limit", "0.3"],
                           capture_output=True, text=True, timeout=600)
        lines = [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
        out.append(f"## by {sort}\n" + "\n".join(lines[:TOP]) + "\n")
    return "\n".join(out)
