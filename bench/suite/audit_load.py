"""The audit stage: rows persisted on PostgreSQL for the requests a run sent, and audit
events per second end to end (`run_hook`).

`run_hook` runs the control plane's `publish_audit_load` example (looked up as
`<bin-dir>/examples/publish_audit_load`, or `<bin-dir>/publish-audit-load`): it starts its own
`warden-cp` (`--cp-bin <bin-dir>/warden-cp`, the binary under test) on a fresh schema of the
suite's private PostgreSQL, sends synthetic `Sync.PublishAudit` batches over 8 node
connections (each acknowledged only after commit), counts the rows and verifies the chain,
and prints events/s, the batch size, `synchronous_commit` and the control plane's CPU per
event. The suite adds PostgreSQL's CPU per event (its whole process tree over the run), one
run per batch size.

"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .procs import BenchError, cpu_ticks, json_line, run_measured

TOOL = "publish-audit-load"
# The everything-on control plane's schema on the suite's PostgreSQL.
SCHEMA = "bench"


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


def find_tool(bin_dir: Path) -> Path | None:
    for tool in (bin_dir / "examples" / "publish_audit_load", bin_dir / TOOL):
        if tool.exists():
            return tool
    return None


# The example's human line, for builds older than its JSON line.
TEXT_LINE = re.compile(r"batch +(?P<batch_size>\d+) +concurrency +(?P<concurrency>\d+) +"
                       r"synchronous_commit=(?P<synchronous_commit>\S+) +(?P<events>\d+) events in "
                       r"(?P<seconds>[\d.]+) s +(?P<events_per_s>[\d.]+) events/s.*?= (?P<cp_cpu_ms_per_event>[\d.]+) ms/event")


def parse(out: str) -> dict:
    try:
        return json_line(out)
    except BenchError:
        m = TEXT_LINE.search(out)
        if not m:
            raise
        return {k: (v if k == "synchronous_commit" else float(v)) for k, v in m.groupdict().items()}


def run_hook(bin_dir: Path, pg, events: int, batches: list[int], logs: Path) -> dict:
    """One run of the example per batch size in `batches`, `events` events each."""
    tool = find_tool(bin_dir)
    if tool is None:
        return {"status": "absent", "note": f"no examples/publish_audit_load in {bin_dir}: "
                "the audit events/s stage did not run (build it with --example publish_audit_load)"}
    runs = []
    for batch in batches:
        argv = [str(tool), "--cp-bin", str(bin_dir / "warden-cp"), "--events", str(events), "--batch", str(batch),
                "--concurrency", "8"]
        log = logs / f"publish-audit-load-{batch}.log"
        pg_before = cpu_ticks([pg.proc.pid])
        status, out, cpu = run_measured(argv, {"WARDEN_BENCH_DATABASE_URL": pg.url}, 600, log)
        pg_s = (cpu_ticks([pg.proc.pid]) - pg_before) / os.sysconf("SC_CLK_TCK")
        if status != 0:
            raise BenchError(f"{tool.name} --batch {batch} exited {status}; see {log}")
        result = parse(out)
        result["postgres_cpu_ms_per_event"] = round(pg_s * 1000 / events, 4)
        # The example waits for its control plane, so its CPU includes the control plane's.
        result["tool_and_cp_cpu_s"] = round(cpu, 3)
        runs.append(result)
    best = max(runs, key=lambda r: r["events_per_s"])
    return {"status": "ran", "events_per_s": best["events_per_s"], "batch_size": best["batch_size"],
            "synchronous_commit": best["synchronous_commit"], "runs": runs}
