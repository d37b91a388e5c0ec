"""Processes of the benchmark suite: starting them with a log file, stopping them by PID,
and reading what they cost from /proc (CPU time of a whole process tree, resident memory).

CPU is `utime + stime + cutime + cstime` of every process in a tree (children that exited
and were reaped are in their parent's `c*` fields), in clock ticks. Load generators run
to completion and are measured exactly with `os.wait4`'s resource usage instead.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A step of the suite failed; the message says which and where its log is."""


def free_port() -> int:
    """A free loopback port (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile() -> None:
    """Raises this process's open-files soft limit to the hard limit (inherited by children)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Every process the suite started, in order: stopped (last first) by `stop_all`, so that
# a failure at any step leaves nothing running.
STARTED: list["Proc"] = []


def stop_all() -> None:
    for proc in reversed(STARTED):
        proc.stop()


@dataclass
class Proc:
    """A long-running process the suite started; stopped by its own PID only."""

    name: str
    popen: subprocess.Popen
    log: Path

    def __post_init__(self) -> None:
        STARTED.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.popen.returncode}; log: {self.log}\n{tail(self.log)}")

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGCONT)  # a paused peer handles SIGTERM only once resumed
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
          user: str | None = None, inherit_env: bool = True) -> Proc:
    """Starts `argv` in its own process group, stdout and stderr to logs/<name>.log; `env`
    is added to this process's environment, or is the whole of it without `inherit_env`."""
    log = logs / f"{name}.log"
    out = open(log, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
    full_env = dict(os.environ) if inherit_env else {}
    if env:
        full_env.update(env)
    if user is not None and os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=full_env, cwd=cwd, start_new_session=True)
    return Proc(name, popen, log)


def wait_until(what: str, check, timeout: float, proc: Proc | None = None, interval: float = 0.05):
    """Polls `check()` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None:
            proc.check_alive()
        if time.monotonic() > deadline:
            extra = f"; log: {proc.log}\n{tail(proc.log)}" if proc else ""
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
                timeout: float = 5.0) -> int:
    """The status of one request (0 when the connection fails)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except (OSError, urllib.error.URLError):
        return 0


# ---------------------------------------------------------------- /proc readings

def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2:].split()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def tree_pids(root: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = _children_map() if kids is None else kids
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, []))
    return out


def cpu_ticks(roots: list[int], kids: dict[int, list[int]] | None = None) -> int:
    """utime+stime+cutime+cstime over the trees under `roots`, in clock ticks."""
    kids = _children_map() if kids is None else kids
    total = 0
    for root in roots:
        for pid in tree_pids(root, kids):
            f = _stat_fields(pid)
            if f is not None:
                # Fields after the name: state=0, ppid=1, ... utime=11, stime=12, cutime=13, cstime=14.
                total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, int]:
    """Ticks per named group of process trees, read at one moment."""
    kids = _children_map()
    return {name: cpu_ticks(pids, kids) for name, pids in groups.items()}


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def run_measured(argv: list[str], env: dict[str, str], timeout: float, log: Path) -> tuple[int, str, float]:
    """Runs a load generator to completion: (exit status, stdout, CPU seconds it used)."""
    full_env = dict(os.environ)
    full_env.update(env)
    with open(log, "ab") as err:
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=full_env)
        deadline = time.monotonic() + timeout
        chunks = []
        assert popen.stdout is not None
        os.set_blocking(popen.stdout.fileno(), False)
        while True:
            try:
                data = popen.stdout.read()
            except BlockingIOError:
                data = None
            if data:
                chunks.append(data)
            pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
            if pid != 0:
                break
            if time.monotonic() > deadline:
                popen.kill()
                os.wait4(popen.pid, 0)
                raise BenchError(f"{argv[0]} did not finish within {timeout:.0f}s")
            time.sleep(0.05)
        rest = popen.stdout.read()
        if rest:
            chunks.append(rest)
        popen.returncode = os.waitstatus_to_exitcode(status)
    return popen.returncode, b"".join(chunks).decode(errors="replace"), usage.ru_utime + usage.ru_stime


def json_line(text: str, prefix: str = "") -> dict:
    """The last line of `text` that is a JSON object (after `prefix`)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if prefix:
            if not line.startswith(prefix):
                continue
            line = line[len(prefix):].strip()
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"no JSON line{' ' + prefix if prefix else ''} in output:\n{text[-2000:]}")
