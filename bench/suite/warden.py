"""Warden's own processes for the suite: a control plane (`warden-cp`), its nodes
(`warden-dp`) and `wardenctl` calls, started the way tests/src/cluster.rs starts them,
from release binaries in `--bin-dir`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import BenchError, Proc, free_port, http_status, spawn, wait_until

# Model aliases the suite registers.
MODEL = "gpt-mock"
MODEL_60MS = "gpt-mock-60ms"
MODEL_SLOW = "gpt-mock-slow"


def binary(bin_dir: Path, name: str) -> Path:
    path = bin_dir / name
    if not path.exists():
        raise BenchError(f"{path} is missing: build release binaries first "
                         "(`cargo build --release --workspace --bins`) or pass --bin-dir")
    return path


@dataclass
class Node:
    proc: Proc
    port: int
    ops_port: int
    node_id: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass
class ControlPlane:
    """One `warden-cp` with its nodes; `label` names it in logs (`minimal`, `full`)."""

    label: str
    bin_dir: Path
    work: Path
    logs: Path
    redis_url: str = ""
    database_url: str = ""
    schema: str = ""
    proc: Proc | None = None
    port: int = 0
    admin_token: str = ""
    node_token: str = ""
    nodes: list[Node] = field(default_factory=list)
    master_key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        data_dir = self.work / f"cp-{self.label}"
        stdout = self.logs / f"cp-{self.label}.stdout"
        env = {
            "WARDEN_MASTER_KEY": self.master_key,
            "WARDEN_REDIS_URL": self.redis_url,
            "WARDEN_REDIS_PREFIX": f"bench-{self.label}",
            "WARDEN_DATABASE_URL": self.database_url,
            "WARDEN_JWT_ALGORITHM": "EdDSA",
            "RUST_LOG": "info",
        }
        if self.schema:
            env["WARDEN_DATABASE_SCHEMA"] = self.schema
        argv = [str(binary(self.bin_dir, "warden-cp")), "--grpc-addr", f"127.0.0.1:{self.port}",
                "--data-dir", str(data_dir)]
        full_env = _clean_env(env)
        log = self.logs / f"cp-{self.label}.log"
        with open(stdout, "wb") as out, open(log, "ab") as err:
            popen = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env,
                                     start_new_session=True)
        self.proc = Proc(f"cp-{self.label}", popen, log)

        def printed():
            text = stdout.read_text(errors="replace")
            return text if "WARDEN_CP_ADDR=" in text else None

        text = wait_until(f"warden-cp ({self.label}) to be ready", printed, 60, self.proc)
        for line in text.splitlines():
            if line.startswith("WARDEN_ADMIN_TOKEN="):
                self.admin_token = line.split("=", 1)[1].strip()
        if not self.admin_token:
            raise BenchError(f"warden-cp ({self.label}) printed no admin credential; see {stdout}")
        self.node_token = self.ctl("node", "credential", "issue", "--name", f"bench-{self.label}")

    def ctl(self, *args: str, stdin: str | None = None) -> str:
        """Runs `wardenctl` against this control plane; returns trimmed stdout."""
        argv = [str(binary(self.bin_dir, "wardenctl")), *args]
        env = _clean_env({"WARDEN_CP_ADDR": self.addr, "WARDEN_ADMIN_TOKEN": self.admin_token})
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60)
        if out.returncode != 0:
            raise BenchError(f"wardenctl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def add_provider(self, name: str, base_url: str, keys: int, models: list[tuple[str, float, float]]) -> None:
        """A provider with `keys` upstream keys and (alias, input $/Mtok, output $/Mtok) models."""
        self.ctl("provider", "add", name, "--format", "openai", "--base-url", base_url)
        for i in range(keys):
            self.ctl("provider", "key", "add", name, stdin=f"sk-bench-upstream-{name}-{i}-{os.urandom(6).hex()}")
        for alias, inp, outp in models:
            self.ctl("model", "add", alias, "--provider", name, "--upstream-model", "gpt-4o-mini",
                     "--input-price", str(inp), "--output-price", str(outp))

    def add_node(self, node_count: int, extra_args: list[str] | None = None) -> Node:
        node_id = f"{self.label}-node-{len(self.nodes) + 1}"
        port, ops_port = free_port(), free_port()
        argv = [str(binary(self.bin_dir, "warden-dp")), "--http-addr", f"127.0.0.1:{port}",
                "--ops-addr", f"127.0.0.1:{ops_port}", "--cp-addr", self.addr, "--node-id", node_id,
                "--audit-spool-dir", str(self.work / "spool" / node_id), "--egress-allow-loopback",
                # Every client here is 127.0.0.1: the revocation stage's refused requests (one
                # per node per sample) would reach the default 50 failed logins and block the
                # address (403 ip_blocked) for every later stage. Automatic blocks stay on.
                "--ip-block-threshold", "100000",
                # …and the 20 per minute that answer 429 before any lookup (the revocation
                # stage's refusals and its waits for new keys exceed it within a minute).
                "--failed-login-limit", "100000",
                *(extra_args or [])]
        env = {
            "WARDEN_NODE_TOKEN": self.node_token,
            "WARDEN_REDIS_URL": self.redis_url,
            "WARDEN_REDIS_PREFIX": f"bench-{self.label}",
            "WARDEN_NODE_COUNT": str(node_count),
            "RUST_LOG": "info",
        }
        proc = spawn(node_id, argv, self.logs, env=_clean_env(env), inherit_env=False)
        node = Node(proc, port, ops_port, node_id)
        wait_until(f"{node_id} to be ready", lambda: http_status(f"http://127.0.0.1:{ops_port}/readyz") == 200,
                   60, proc, interval=0.1)
        self.nodes.append(node)
        return node

    def create_vkey(self, name: str, *policy: str) -> tuple[str, str]:
        """(id, key) of a new virtual key with the given policy flags."""
        out = json.loads(self.ctl("vkey", "create", "--name", name, *policy, "-o", "json"))
        return out["id"], out["key"]

    def procs(self) -> list[Proc]:
        return ([self.proc] if self.proc else []) + [n.proc for n in self.nodes]

    def stop(self) -> None:
        for n in self.nodes:
            n.proc.stop()
        if self.proc:
            self.proc.stop()


def wait_accepts(url: str, key: str, body: bytes, timeout: float = 20.0) -> None:
    """Waits until a node answers 200 for `key` (the snapshot with it has arrived)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    wait_until(f"{url} to accept the credential",
               lambda: http_status(url, "POST", body, headers) == 200, timeout, interval=0.05)


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def settle(seconds: float) -> None:
    time.sleep(seconds)
