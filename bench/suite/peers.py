"""The peer gateways measured in the same run: TensorZero's gateway (the in-process HTTP
gateway of its PyPI wheel) and LiteLLM's proxy, each in its own virtualenv under the tools
directory, pinned as in bench/peers/README.md, configured from bench/peers/ against the
suite's own mocks."""

from __future__ import annotations

import os
import re
import signal
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .backends import BENCH_DIR
from .procs import BenchError, Proc, free_port, http_status, spawn, wait_until

PEERS_DIR = BENCH_DIR / "peers"
PINS = {"tensorzero": "tensorzero==2026.6.0", "litellm": "litellm[proxy]==1.108.7"}
# The model each peer is asked for, per mock (0 ms, 60 ms).
TZ_MODELS = ("tensorzero::model_name::mock", "tensorzero::model_name::mock60")
LITELLM_MODELS = ("mock-gpt", "mock-gpt-60ms")


@dataclass
class Peer:
    name: str
    proc: Proc
    base_url: str  # the chat completions URL
    auth: str
    models: tuple[str, str]

    def pause(self) -> None:
        """SIGSTOP the peer's process group between its own runs: an idle LiteLLM proxy
        keeps a good share of a core busy, which would be taken from the other targets."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)


def ensure_venv(tools: Path, name: str) -> Path:
    """The venv's python, installing the pinned package on first use."""
    venv = tools / name
    python = venv / "bin" / "python"
    marker = venv / ".bench-installed"
    if marker.exists() and marker.read_text().strip() == PINS[name]:
        return python
    tools.mkdir(parents=True, exist_ok=True)
    print(f"installing {PINS[name]} into {venv} (first run only)", file=sys.stderr, flush=True)
    base = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    for argv in ([base, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", PINS[name]]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise BenchError(f"installing {name} failed ({' '.join(argv)}): {r.stderr.strip()[-2000:]}")
    marker.write_text(PINS[name] + "\n")
    return python


def start_tensorzero(tools: Path, work: Path, logs: Path, mock_port: int, mock60_port: int,
                     lifetime_s: int) -> Peer:
    python = ensure_venv(tools, "tensorzero")
    cwd = work / "tensorzero"
    cwd.mkdir()
    config = (PEERS_DIR / "tensorzero.toml").read_text().replace("127.0.0.1:18080", f"127.0.0.1:{mock_port}")
    config += ("\n[models.mock60]\nrouting = [\"mock60\"]\n\n[models.mock60.providers.mock60]\ntype = \"openai\"\n"
               f"api_base = \"http://127.0.0.1:{mock60_port}/v1/\"\nmodel_name = \"gpt-4o-mini\"\n"
               "api_key_location = \"none\"\n")
    (cwd / "tensorzero.toml").write_text(config)
    env = {"TENSORZERO_DISABLE_PSEUDONYMOUS_USAGE_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    proc = spawn("tensorzero", [str(python), str(PEERS_DIR / "run_tz.py"), str(lifetime_s)], logs, env=env, cwd=cwd)

    def base_url():
        m = re.search(r"BASE_URL (\S+)", proc.log.read_text(errors="replace"))
        return m.group(1).rstrip("/") if m else None

    url = wait_until("TensorZero's gateway to print its address", base_url, 120, proc, interval=0.2)
    # The wheel prints its OpenAI-compatible base (`…/openai/v1`).
    chat = f"{url}/chat/completions" if url.endswith("/openai/v1") else f"{url}/openai/v1/chat/completions"
    return Peer("TensorZero", proc, chat, "", TZ_MODELS)


def start_litellm(tools: Path, work: Path, logs: Path, mock_port: int, mock60_port: int) -> Peer:
    python = ensure_venv(tools, "litellm")
    cwd = work / "litellm"
    cwd.mkdir()
    config = (PEERS_DIR / "litellm-config.yaml").read_text().replace("127.0.0.1:18080", f"127.0.0.1:{mock_port}")
    extra = ("  - model_name: mock-gpt-60ms\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
             f"      api_base: http://127.0.0.1:{mock60_port}/v1\n      api_key: sk-mock-upstream\n")
    config = config.replace("litellm_settings:", extra + "litellm_settings:", 1)
    (cwd / "litellm-config.yaml").write_text(config)
    master = "sk-" + secrets.token_hex(24)
    port = free_port()
    env = {"LITELLM_MASTER_KEY": master, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "PYTHONUNBUFFERED": "1"}
    litellm = python.parent / "litellm"
    proc = spawn("litellm", [str(litellm), "--config", str(cwd / "litellm-config.yaml"), "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", "2",
                             # uvicorn kills a worker not ready within 5 s; importing LiteLLM
                             # takes longer than that on a busy 2-core machine.
                             "--timeout_worker_healthcheck", "300"], logs, env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    wait_until("LiteLLM's proxy to be ready",
               lambda: http_status(f"{url}/health/liveliness", timeout=2) == 200, 180, proc, interval=0.5)
    return Peer("LiteLLM", proc, f"{url}/v1/chat/completions", master, LITELLM_MODELS)


