"""Private backends of one suite run: the mock providers (node), a Redis and a PostgreSQL
cluster of its own on free ports, so that each one's CPU is its own process tree."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .procs import BenchError, Proc, free_port, port_open, spawn, wait_until

BENCH_DIR = Path(__file__).resolve().parent.parent


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed: {hint}")
    return path


@dataclass
class Mock:
    proc: Proc
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def start_mock(name: str, logs: Path, delay_ms: int = 0, slow_interval_ms: int = 0, slow_chunks: int = 0) -> Mock:
    node = require_tool("node", "apt-get install -y nodejs")
    port = free_port()
    env = {"PORT": str(port), "DELAY_MS": str(delay_ms), "SLOW_INTERVAL_MS": str(slow_interval_ms),
           "SLOW_CHUNKS": str(slow_chunks)}
    proc = spawn(name, [node, str(BENCH_DIR / "mock.js")], logs, env=env)
    wait_until(f"{name} to listen", lambda: port_open(port), 10, proc)
    return Mock(proc, port)


@dataclass
class Redis:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


def start_redis(work: Path, logs: Path) -> Redis:
    server = require_tool("redis-server", "apt-get install -y redis-server")
    port = free_port()
    data = work / "redis"
    data.mkdir()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(data), "--protected-mode", "yes"]
    proc = spawn("redis", argv, logs)
    wait_until("redis to listen", lambda: port_open(port), 10, proc)
    return Redis(proc, port)


@dataclass
class Postgres:
    proc: Proc
    port: int
    bin_dir: Path
    data: Path

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def query(self, sql: str) -> str:
        out = subprocess.run([str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                              "-d", "postgres", "-tAc", sql], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise BenchError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def setting(self, name: str) -> str:
        return self.query(f"SHOW {name}")


def start_postgres(work: Path, logs: Path) -> Postgres:
    """A private cluster (initdb, trust on loopback) as the `postgres` user when run as root."""
    bin_dir = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
    if not (bin_dir / "initdb").exists() or not (bin_dir / "postgres").exists():
        raise BenchError(f"PostgreSQL server binaries are missing in {bin_dir} "
                         "(apt-get install postgresql-15, or set PG_BIN)")
    user = "postgres" if os.geteuid() == 0 else None
    root = work / "pg"
    root.mkdir()
    if user:
        shutil.chown(root, user, user)
    data = root / "data"
    argv = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    init = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        raise BenchError(f"initdb failed: {init.stderr.strip()[-1500:]}")
    port = free_port()
    # Defaults of a stock install (synchronous_commit=on, fsync on); only the socket
    # directory and address are private.
    proc = spawn("postgres", [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
                              "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
                 logs, user=user)
    pg = Postgres(proc, port, bin_dir, data)
    wait_until("postgres to accept connections", lambda: pg_ready(pg), 30, proc, interval=0.2)
    return pg


def pg_ready(pg: Postgres) -> bool:
    r = subprocess.run([str(pg.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)],
                       capture_output=True, timeout=10)
    return r.returncode == 0
