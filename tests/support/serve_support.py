"""Start ``ead-vllm serve`` on loopback for a test module (not a test module)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(log: Path, extra: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """``ead-vllm serve`` of the toy model, as a new user starts it, plus ``extra`` flags.

    No KV-cache size, memory share or dtype: the launcher sizes them. Yields the base
    URL and the server's pid once ``/health`` answers (fails the test if it exits or
    takes over 300 s; its output is in ``log``); terminates it after.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    cmd = [str(Path(sys.executable).parent / "ead-vllm"), "serve", "--port", str(port),
           "--max-model-len", "128", "--max-num-seqs", "64", "--enforce-eager", *extra]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not come up:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    try:
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
