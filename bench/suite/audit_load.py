"""The audit stage: rows persisted on PostgreSQL for the requests a run sent, and the
`publish-audit-load` hook.

`publish-audit-load` (built by the audit-batching work, not by this suite) is looked up in
`--bin-dir`. The interface the suite expects:

    publish-audit-load --cp-addr http://127.0.0.1:PORT --seconds N
        environment: WARDEN_NODE_TOKEN (a node credential of that control plane)
        stdout: one JSON object on its last line with at least "events_per_s"
        (further fields, e.g. "events", "batch_size", are kept in the results as given)
        exit status 0 on success

It sends synthetic `PublishAudit` batches to the control plane, which persists them on the
suite's private PostgreSQL (synchronous_commit as reported beside the figure)."""

from __future__ import annotations

import time
from pathlib import Path

from .procs import BenchError, json_line, run_measured

TOOL = "publish-audit-load"


def audit_rows(pg, schema: str) -> int:
    return int(pg.query(f'SELECT count(*) FROM "{schema}".audit'))


def wait_settled(pg, schema: str, start_rows: int, requests: int, timeout: float = 60.0) -> dict:
    """Waits until at least `requests` audit rows were added since `start_rows` and no more
    arrive for half a second (requests in flight when wrk stopped are audited too), or none
    arrive for 5 s; returns how many and how long the drain took after the load ended."""
    t0 = time.monotonic()
    last, stable_since = -1, t0
    while True:
        added = audit_rows(pg, schema) - start_rows
        now = time.monotonic()
        if added != last:
            last, stable_since = added, now
        quiet = now - stable_since
        if (added >= requests and quiet >= 0.5) or quiet >= 5.0 or now - t0 > timeout:
            return {"audit_rows_added": added, "audit_drain_s": round(stable_since - t0, 2)}
        time.sleep(0.25)


def run_hook(bin_dir: Path, cp_addr: str, node_token: str, seconds: float, logs: Path) -> dict:
    tool = bin_dir / TOOL
    if not tool.exists():
        return {"status": "absent", "note": f"{tool} not found: the audit events/s stage did not run"}
    argv = [str(tool), "--cp-addr", cp_addr, "--seconds", str(max(1, round(seconds)))]
    status, out, cpu = run_measured(argv, {"WARDEN_NODE_TOKEN": node_token}, seconds + 120, logs / f"{TOOL}.log")
    if status != 0:
        raise BenchError(f"{TOOL} exited {status}; see {logs / (TOOL + '.log')}")
    result = json_line(out)
    if "events_per_s" not in result:
        raise BenchError(f"{TOOL} printed no events_per_s: {result}")
    result["status"] = "ran"
    result["tool_cpu_s"] = round(cpu, 3)
    return result
