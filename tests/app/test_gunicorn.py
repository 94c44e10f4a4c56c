"""The README's production command: the site behind gunicorn, exactly as documented (only
the port differs), serves the Overview to a browser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from monitoring_app import ids
from readme_blocks import gunicorn_block
from serverless_ml.testing import stop_process_group

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- tests/app/test_gunicorn.py runs this block -->"
STARTUP_TIMEOUT_S = 180


def readme_command() -> tuple[dict[str, str], list[str]]:
    """The README block after the marker: the variables it exports and the gunicorn command."""
    return gunicorn_block(MARKER)


def test_the_readme_documents_a_safe_command() -> None:
    exported, command = readme_command()
    assert set(exported) >= {"MLFLOW_TRACKING_URI", "SML_STORE_DIR"}
    assert command[-1] == "monitoring_app:create_server()"
    assert command[command.index("--bind") + 1].startswith("127.0.0.1:")


def test_the_site_runs_behind_gunicorn_as_the_readme_says(
    page: Any, site_world: Any, settle: Any, screenshot: Any, tmp_path: Path
) -> None:
    tab, problems = page
    _exported, command = readme_command()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bind = command.index("--bind") + 1
    command[bind] = f"127.0.0.1:{port}"
    command[0] = str(Path(sys.executable).parent / "gunicorn")
    env = {**os.environ, "MLFLOW_TRACKING_URI": site_world.tracking_uri, "SML_STORE_DIR": str(site_world.folder / "store"),
           "SML_DATASETS": str(site_world.shapes_spec)}
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                assert process.poll() is None, f"gunicorn exited: {log_path.read_text()[-2000:]}"
                try:
                    with urllib.request.urlopen(f"{url}/?dataset=titanic", timeout=5) as response:
                        assert response.status == 200
                        break
                except (urllib.error.URLError, OSError):
                    assert time.monotonic() < deadline, f"gunicorn did not answer: {log_path.read_text()[-2000:]}"
                    time.sleep(0.5)
            with urllib.request.urlopen(f"{url}/_dash-layout", timeout=30) as response:
                layout = response.read().decode()
            assert "shapes" in layout  # the spec file from SML_DATASETS is in the picker
            assert "debug" not in response.headers.get("Server", "").lower()
            tab.goto(f"{url}/?dataset=titanic")
            settle(tab)
            tab.get_by_text("Latest prediction").wait_for()
            assert "version 2" in tab.locator(f"#{ids.HEADLINE_CHAMPION}").inner_text()
            screenshot(tab, "gunicorn-titanic-overview")
            assert problems.all() == []
        finally:
            stop_process_group(process, kill_timeout_s=15)
    assert "Traceback" not in log_path.read_text()
