"""results.json -> results.md: the tables and ratios of one run, and the self-check's
assertions (every scenario answered, nothing refused, CPU and memory figures present)."""

from __future__ import annotations

DIRECT = "direct to the mock"
FULL = "Warden, everything on"
MINIMAL = "Warden, minimal path"


def ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["target"]: r for r in rows}


def _cpu_cells(r: dict) -> tuple[list[str], float]:
    cpu = r["cpu_ms_per_request"]
    gw = cpu.get(r["gateway_group"], 0.0) if r["gateway_group"] else 0.0
    cp = cpu.get(r["cp_group"], 0.0) if r["cp_group"] else 0.0
    cells = [gw, cp, cpu.get("redis", 0.0), cpu.get("postgres", 0.0), cpu.get("mock", 0.0),
             cpu.get("load generator (wrk)", 0.0)]
    total = sum(cells)
    return [f"{c:.3f}" for c in cells] + [f"{total:.3f}"], total


def load_table(rows: list[dict], title: str) -> list[str]:
    direct = _by_name(rows).get(DIRECT)
    out = [f"### {title}", "",
           "| target | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | non-2xx / errors |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        added = ("—", "—")
        if direct and r is not direct:
            added = (ms(r["p50_us"] - direct["p50_us"]), ms(r["p99_us"] - direct["p99_us"]))
        out.append(f"| {r['target']} | {r['rps']:,.0f} | {ms(r['p50_us'])} | {ms(r['p90_us'])} | {ms(r['p99_us'])} | "
                   f"{ms(r['p999_us'])} | {added[0]} | {added[1]} | {r['non_2xx']} / {r['socket_errors']} |")
    return out + [""]


def cpu_table(rows: list[dict], title: str) -> list[str]:
    out = [f"### {title}", "",
           "CPU milliseconds per request, per process (utime+stime from /proc, children included; wrk from its "
           "rusage). *gateway* = the Warden node(s) or the peer's process tree.", "",
           "| target | gateway | control plane | Redis | PostgreSQL | mock | wrk | sum |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells, _ = _cpu_cells(r)
        out.append(f"| {r['target']} | " + " | ".join(cells) + " |")
    return out + [""]


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:.2f}×"


def ratios(res: dict) -> list[str]:
    rows = _by_name(res["non_streaming"])
    full, mini = rows.get(FULL), rows.get(MINIMAL)
    three = rows.get(f"{FULL}, 3 nodes")
    out = ["### Ratios (same run)", "", "| | ratio |", "|---|---|"]
    for peer in ("TensorZero", "LiteLLM"):
        p = rows.get(peer)
        if p is None:
            continue
        out.append(f"| throughput, everything on ÷ {peer} | {ratio(full and full['rps'], p['rps'])} |")
        out.append(f"| throughput, minimal path ÷ {peer} | {ratio(mini and mini['rps'], p['rps'])} |")
        fcpu = full and full["cpu_ms_per_request"].get(full["gateway_group"])
        out.append(f"| gateway CPU per request, everything on ÷ {peer} | "
                   f"{ratio(fcpu, p['cpu_ms_per_request'].get(p['gateway_group']))} |")
    if full and mini:
        out.append(f"| throughput, everything on ÷ minimal path | {ratio(full['rps'], mini['rps'])} |")
        out.append(f"| node CPU per request, everything on ÷ minimal | "
                   f"{ratio(full['cpu_ms_per_request'].get(full['gateway_group']), mini['cpu_ms_per_request'].get(mini['gateway_group']))} |")
    if full and three:
        out.append(f"| throughput, 3 nodes ÷ 1 node (one Redis, same 2 cores) | {ratio(three['rps'], full['rps'])} |")
    if full and res.get("tls"):
        t = res["tls"][0]
        out.append(f"| throughput, HTTPS ÷ plain HTTP (everything on) | {ratio(t['rps'], full['rps'])} |")
    return out + [""]


def streaming_sequential(seq: dict) -> list[str]:
    direct = seq.get(DIRECT)
    out = ["### Streaming, one request at a time (alternating targets): time to first and last byte", "",
           "| target | n | first byte p50 ms | p99 ms | added p50 / p99 ms | last byte p50 ms | p99 ms | added p50 / p99 ms |",
           "|---|---|---|---|---|---|---|---|"]
    for name, s in seq.items():
        f, last = s["first_byte"], s["last_byte"]
        af = al = "—"
        if direct and name != DIRECT:
            af = f"{ms(f['p50_us'] - direct['first_byte']['p50_us'])} / {ms(f['p99_us'] - direct['first_byte']['p99_us'])}"
            al = f"{ms(last['p50_us'] - direct['last_byte']['p50_us'])} / {ms(last['p99_us'] - direct['last_byte']['p99_us'])}"
        out.append(f"| {name} | {s['n']} | {ms(f['p50_us'])} | {ms(f['p99_us'])} | {af} | {ms(last['p50_us'])} | "
                   f"{ms(last['p99_us'])} | {al} |")
    return out + [""]


def memory(mem: dict) -> list[str]:
    out = ["### Node memory with concurrent slow streams (everything on, one chunk a second)", "",
           f"Idle: {mem['idle_rss_at_start_kib'] / 1024:.1f} MiB RSS just after start, "
           f"{mem['idle_rss_kib'] / 1024:.1f} MiB after the load stages.", "",
           "| streams | opened in s | failed | node RSS MiB | KiB per stream | node open files | RSS after close MiB |",
           "|---|---|---|---|---|---|---|"]
    for row in mem["levels"]:
        out.append(f"| {row['streams']:,} | {row['open_seconds']} | {row['failed']} | {row['rss_kib'] / 1024:.1f} | "
                   f"{row['kib_per_stream']:.1f} | {row['node_open_files']:,} | {row['rss_after_close_kib'] / 1024:.1f} |")
    return out + [""]


def goals(res: dict) -> list[str]:
    """Issue 17's goals beside this run's figures (everything on, one node)."""
    ns = _by_name(res["non_streaming"])
    full, tz = ns.get(FULL), ns.get("TensorZero")
    sp = _by_name(res["slow_provider"])
    seq = res["streaming_sequential"]
    mem = res["memory"]
    rv = res.get("revocation", {"p99_us": float("nan")})
    al = res.get("audit_load", {"status": "not reached"})
    rows = []
    if full:
        cpu = full["cpu_ms_per_request"]
        rows.append(("node CPU per request", "≤ 0.06 ms", f"{cpu[full['gateway_group']]:.3f} ms"))
        rows.append(("control-plane CPU per audited request", "≤ 0.02 ms", f"{cpu[full['cp_group']]:.3f} ms"))
        if tz:
            rows.append(("throughput ÷ TensorZero's", "≥ 2×", ratio(full["rps"], tz["rps"])))
    if FULL in sp and DIRECT in sp:
        d, f = sp[DIRECT], sp[FULL]
        rows.append(("60 ms provider, 64 connections: added p50 / p99", "≤ 0.3 / ≤ 1 ms",
                     f"{ms(f['p50_us'] - d['p50_us'])} / {ms(f['p99_us'] - d['p99_us'])} ms"))
    if FULL in seq and DIRECT in seq:
        added = seq[FULL]["first_byte"]["p99_us"] - seq[DIRECT]["first_byte"]["p99_us"]
        rows.append(("added time to first streamed byte, p99 (sequential)", "≤ 1 ms", f"{ms(added)} ms"))
    rows.append(("node memory idle", "≤ 30 MB", f"{mem['idle_rss_at_start_kib'] / 1024:.1f} MiB at start"))
    if mem["levels"]:
        worst = max(r["kib_per_stream"] for r in mem["levels"])
        rows.append(("memory per concurrent stream", "≤ 50 KB", f"{worst:.1f} KiB (largest of the levels)"))
    rows.append(("revocation on every node, p99", "≤ 1 s",
                 f"{ms(rv['p99_us'])} ms" if "revocation" in res else "not reached"))
    rows.append(("audit end to end on PostgreSQL", "≥ 20,000 events/s",
                 f"{al['events_per_s']:,.0f} events/s" if al["status"] == "ran" else "not run"))
    out = ["### Issue 17's goals beside this run (everything on)", "", "| figure | goal | this run |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


def markdown(res: dict) -> str:
    m, s = res["machine"], res["settings"]
    lines = ["# Warden benchmark suite: results", "",
             f"Mode `{s['mode']}`, binaries `{s['bin_dir']}` ({s['warden_version']}); started {res['started']}.",
             f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, kernel {m['kernel']}, "
             f"open-files limit {m['open_files_limit']:,}. Load average before "
             f"{'/'.join(f'{x:.2f}' for x in res.get('load_before', []))}, after "
             f"{'/'.join(f'{x:.2f}' for x in res.get('load_after', [])) or '(not reached)'}.",
             f"wrk -t{s['threads']}, {s['seconds']:.0f} s per run after a warm-up run; request body 1 KB of text "
             f"(no DLP match) for every target; PostgreSQL {res['postgres']['version']} private, "
             f"synchronous_commit={res['postgres']['synchronous_commit']}, fsync={res['postgres']['fsync']}.", ""]
    if res.get("warnings"):
        lines += ["**Warnings of this run** (figures of these rows are not comparable):", ""]
        lines += [f"- {w}" for w in res["warnings"]] + [""]
    ns = res["non_streaming"]
    lines += goals(res)
    lines += load_table(ns, f"Non-streaming, {ns[0]['connections']} connections")
    lines += cpu_table(ns, "CPU per request, non-streaming")
    lines += ratios(res)
    for r in ns + res.get("tls", []):
        if "audit_rows_added" in r:
            lines.append(f"- {r['target']}: {r['requests']:,} requests answered, {r['audit_rows_added']:,} audit rows "
                         f"persisted on PostgreSQL, the last {r['audit_drain_s']} s after the load ended.")
    lines += ["  (Rows beyond the answered count are requests still in flight when wrk stopped: the client went",
              "  away and the node audits them too.)", ""]
    plain = [r for r in ns if r["target"] in (DIRECT, FULL)]
    lines += load_table(plain + res["tls"], "HTTPS (TLS 1.3, kept-alive connections) beside plain HTTP, everything on")
    lines += cpu_table(plain + res["tls"], "CPU per request over HTTPS beside plain HTTP")
    lines += load_table(res["streaming"], "Streaming (wrk: latency until the last byte)")
    lines += cpu_table(res["streaming"], "CPU per request, streaming")
    lines += streaming_sequential(res["streaming_sequential"])
    sp = res["slow_provider"]
    lines += load_table(sp, f"60 ms provider, {sp[0]['connections']} connections")
    lines += cpu_table(sp, "CPU per request, 60 ms provider")
    lines += memory(res["memory"])
    if "revocation" not in res:
        lines += ["### Revocation propagation and audit events/s", "",
                  "Not reached: the run stopped before these stages (see the warnings).", ""]
        return "\n".join(lines) + "\n"
    rv = res["revocation"]
    lines += ["### Revocation propagation", "",
              f"From `wardenctl vkey revoke` starting to all {rv['nodes']} nodes answering 401, {rv['samples']} samples: "
              f"p50 {ms(rv['p50_us'])} ms, p90 {ms(rv['p90_us'])} ms, p99 {ms(rv['p99_us'])} ms, max {ms(rv['max_us'])} ms "
              f"(the `wardenctl` call itself: p50 {ms(rv['wardenctl_call_p50_us'])} ms).", ""]
    al = res["audit_load"]
    lines += ["### Audit events per second end to end (publish_audit_load)", ""]
    if al["status"] == "ran":
        lines += [f"Synthetic `PublishAudit` batches, 8 node connections, a control plane of its own on the suite's "
                  f"PostgreSQL (synchronous_commit={al['synchronous_commit']}); every event acknowledged after "
                  "commit, counted and the chain verified.", "",
                  "| batch | events | events/s | PublishAudit p50 / p99 | CP CPU per event | PostgreSQL CPU per event |",
                  "|---|---|---|---|---|---|"]
        for r in al["runs"]:
            lat = f"{r['publish_p50_ms']} / {r['publish_p99_ms']} ms" if "publish_p50_ms" in r else "–"
            lines.append(f"| {r['batch_size']:.0f} | {r['events']:,.0f} | {r['events_per_s']:,.0f} | {lat} | "
                         f"{r['cp_cpu_ms_per_event']:.4f} ms | {r['postgres_cpu_ms_per_event']:.4f} ms |")
        lines.append("")
    else:
        lines.append(f"Not run: {al['note']}.")
    return "\n".join(lines) + "\n"


def check(res: dict) -> list[str]:
    """What a self-check run must show; an empty list when everything holds."""
    bad = []
    loads = res["non_streaming"] + res["tls"] + res["streaming"] + res["slow_provider"]
    for r in loads:
        name = r["target"]
        if r["requests"] <= 0:
            bad.append(f"{name}: no request completed")
        if r["non_2xx"] or r["socket_errors"]:
            bad.append(f"{name}: {r['non_2xx']} non-2xx answers, {r['socket_errors']} socket errors")
        if r["gateway_group"] and r["cpu_ms_per_request"].get(r["gateway_group"], 0.0) <= 0.0:
            bad.append(f"{name}: no gateway CPU was measured")
        if r["cpu_ms_per_request"].get("load generator (wrk)", 0.0) <= 0.0:
            bad.append(f"{name}: no load-generator CPU was measured")
        if "audit_complete" in r and not r["audit_complete"]:
            bad.append(f"{name}: {r['audit_rows_added']} audit rows for {r['requests']} answered requests")
    for name, s in res["streaming_sequential"].items():
        if s["n"] <= 0 or s["first_byte"]["p50_us"] <= 0:
            bad.append(f"streaming sequential {name}: no samples")
    for row in res["memory"]["levels"]:
        if row["failed"]:
            bad.append(f"slow streams: {row['failed']} of {row['streams']} failed ({row['failures_sample']})")
        if row["rss_kib"] <= 0:
            bad.append("slow streams: no node memory read")
    if res["revocation"]["samples"] <= 0:
        bad.append("revocation: no sample")
    al = res.get("audit_load", {"status": "not reached"})
    if al["status"] != "ran" or al["events_per_s"] <= 0:
        bad.append(f"audit events/s: {al.get('note', al['status'])}")
    return bad
