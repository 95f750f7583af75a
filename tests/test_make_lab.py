"""`make lab` really serves the lab: start it, fetch /lab with the token, stop it (as root too).

The server listens on 127.0.0.1 only, on a free port, with a token made here; its runtime and config
files go to a temp directory. `-o STAMP` keeps make from reinstalling carlab (no network needed), and
PY/VENV point the Makefile at the interpreter running the tests.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_S = 180  # JupyterLab's first start on a busy 2-core machine
STOP_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"token {token}"} if token else {}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_serves_the_lab_with_its_token_and_stops_cleanly(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    venv = Path(sys.prefix)
    lab_args = (
        f"--no-browser --port {port} --ServerApp.port_retries=0 --ServerApp.ip=127.0.0.1 "
        f"--IdentityProvider.token={token}"
    )
    command = [
        "make",
        "--no-print-directory",  # under `make test` a nested make would print Entering/Leaving lines
        "-o",
        str(venv / ".carlab-installed"),
        "lab",
        f"VENV={venv}",
        f"PY={sys.executable}",
        f"LAB_ARGS={lab_args}",
    ]
    env = {
        **os.environ,
        "MAKEFLAGS": "",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    log_path = tmp_path / "lab.log"
    with open(log_path, "wb") as log:
        lab = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_S
        status = None
        while time.monotonic() < deadline and lab.poll() is None:
            try:
                status, _ = _get(port, "/api/status", token)
                if status == 200:
                    break
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        log = log_path.read_text(errors="replace")
        assert status == 200, f"make lab did not serve within {START_S} s (exit {lab.poll()}):\n{log}"
        assert "Running as root is not recommended" not in log
        if os.geteuid() == 0:
            assert "--allow-root" in log.splitlines()[0]  # make echoes the command it runs

        status, page = _get(port, f"/lab?token={token}")
        assert status == 200 and b"JupyterLab" in page
        assert _get(port, "/api/status")[0] == 403  # the token stays on
        assert _get(port, "/api/status", "not-the-token")[0] == 403

        assert _get(port, "/api/shutdown", token, method="POST")[0] == 200
        assert lab.wait(timeout=STOP_S) == 0, log_path.read_text(errors="replace")
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait(timeout=30)
    with pytest.raises(OSError):
        _get(port, "/api/status", token)  # nothing listens any more
