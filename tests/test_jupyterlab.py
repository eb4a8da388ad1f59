"""A student opens the release in JupyterLab, installed with the project (`make lab`)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO

TOKEN = "autograder-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_jupyterlab_serves_the_release_with_nbgrader_extension(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={REPO}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = _get(f"{base}/api/status?token={TOKEN}")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not start within 60 s"
            time.sleep(0.5)
        status, page = _get(f"{base}/lab/tree/release/backprop/backprop.ipynb?token={TOKEN}")
        assert status == 200 and b"JupyterLab" in page
        assert b"@jupyter/nbgrader" in page  # nbgrader's lab extension is loaded
        status, body = _get(f"{base}/api/contents/release/backprop/backprop.ipynb?token={TOKEN}")
        assert status == 200
        notebook = json.loads(body)["content"]
        assert any("def train_step" in "".join(cell["source"]) for cell in notebook["cells"])
    finally:
        server.terminate()
        server.wait(timeout=20)
