"""A clear page, not a traceback, when there is no data yet or the tracking server is
down; and the site never writes (it creates no database and no store)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from monitoring_app import create_app
from serverless_ml.settings import resolve_settings

pytestmark = pytest.mark.browser


def test_before_any_data_every_page_says_which_command_to_run(
    page: Any, serve: Any, settle: Any, screenshot: Any, tmp_path: Path, mlflow_template_db: Path
) -> None:
    tab, problems = page
    shutil.copyfile(mlflow_template_db, tmp_path / "mlflow.db")
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    url = serve(create_app(settings, refresh_s=3600))
    expected = {
        "/": "no monitoring runs for titanic yet: run `sml infer --dataset titanic`",
        "/confusion": "no monitoring runs for titanic yet",
        "/predictions": "no predictions for titanic yet",
        "/drift": "no monitoring runs for titanic yet",
        "/models": "no registered model 'titanic' yet: run `sml train --dataset titanic` first",
        "/data": "no data yet for titanic: run `sml features --dataset titanic` first",
        "/predict": "no champion for titanic yet",
    }
    for path, message in expected.items():
        tab.goto(f"{url}{path}?dataset=titanic")
        settle(tab)
        tab.get_by_text(message).first.wait_for()
        if path == "/":
            screenshot(tab, "no-data", docs=True)
    tab.goto(f"{url}/predict?dataset=titanic")
    settle(tab)
    tab.get_by_role("button", name="Predict").click()
    tab.get_by_text("has no champion yet: run `sml train --dataset titanic` first").wait_for()
    assert "Traceback" not in tab.locator("body").inner_text()
    assert not (tmp_path / "store").exists()
    assert problems.all() == []


def test_a_tracking_server_that_is_down_is_a_message(page: Any, serve: Any, settle: Any, screenshot: Any, tmp_path: Path) -> None:
    tab, problems = page
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # released: nothing listens there
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"http://sml:hunter2@127.0.0.1:{port}")
    url = serve(create_app(settings, refresh_s=3600))
    for path in ("/", "/models", "/confusion"):
        tab.goto(f"{url}{path}?dataset=iris")
        settle(tab)
        tab.get_by_text(f"MLflow tracking server http://sml:***@127.0.0.1:{port} cannot be reached").first.wait_for()
        if path == "/":
            screenshot(tab, "tracking-down", docs=True)
        body = tab.locator("body").inner_text()
        assert "hunter2" not in body and "Traceback" not in body
    assert problems.all() == []
