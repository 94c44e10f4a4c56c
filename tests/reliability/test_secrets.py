"""Secrets: a Hopsworks API key and two passwords never show anywhere.

Three markers: ``HOPSWORKS_API_KEY`` (in every command's environment), the PostgreSQL
password (in the tracking server's ``SML_TRACKING_DB_URI`` and in ``SML_OPTUNA_STORAGE``)
and the password of the tracking URI every client uses
(``http://sml:<marker>@127.0.0.1:<port>``, basic-auth credentials that the server, which
has no login, ignores; also in the site's ``--mlflow-ui-url``).

Every command runs against one ``sml tracking-server`` on PostgreSQL: ``features``,
``train``, ``daily``, ``infer``, ``simulate``, under ``make soak`` also ``main`` (Iris, in
parallel: two minutes more), the ``dashboard`` whose every page a headless Chromium loads
(every response body kept: page HTML, Dash's layout, dependencies and callback JSON), and
the failures: ``--feature-store hopsworks`` commands with no Hopsworks to reach, and with
the tracking server stopped, ``infer`` and two pages of the site. Then the markers are
searched for in: every command's stdout and stderr, the server's and the site's logs,
every process's command line while the servers run, every file under the test's folder
(feature store, server artifacts, Optuna's and MLflow's files, the Hopsworks commands'
home), every experiment, run (params, tags, metric names), logged model, registered
model and version through the MLflow API, every artifact downloaded through the server,
every row of every table of the tracking and Optuna databases, and the served pages.

The search can fail: a fourth marker is planted on purpose (a file, an output, a process's
command line, a run's param, tag and artifact, rows of the database, the store's path the
site's footer shows) and must be found in each of those places.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from serverless_ml.testing import stop_process_group
from dash_text import OVERVIEW_CALLBACK

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

REPO_ROOT = Path(__file__).resolve().parents[2]
URI_USER = "sml"
START_TIMEOUT_S = 240
COMMAND_TIMEOUT_S = 600
DAY = dt.date(2024, 2, 1)
PAGES = ("/", "/confusion", "/slices", "/predictions", "/drift", "/models", "/data", "/predict")
NO_NETWORK = {
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1",
}


# --- the search -----------------------------------------------------------------------


def marker_forms(marker: str) -> list[bytes]:
    """What a marker looks like where it could leak: as it is, and inside a basic-auth
    header (``base64("sml:<marker>")``, and the marker's own base64 at each alignment)."""
    forms = [marker.encode()]
    forms.append(base64.b64encode(f"{URI_USER}:{marker}".encode()))
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + marker.encode())
        forms.append(encoded[4:-4])  # the part that does not depend on the neighbours
    return forms


@dataclass
class Search:
    """Places searched and where each marker was found."""

    markers: dict[str, str]  # name -> marker
    places: int = 0
    hits: dict[str, set[str]] = field(default_factory=dict)  # marker name -> places

    def __post_init__(self) -> None:
        self._forms = {name: marker_forms(m) for name, m in self.markers.items()}
        self.hits = {name: set() for name in self.markers}

    def look(self, place: str, content: str | bytes | None) -> None:
        if content is None:
            return
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else bytes(content)
        self.places += 1
        for name, forms in self._forms.items():
            if any(form in data for form in forms):
                self.hits[name].add(place)

    def tree(self, root: Path, label: str) -> None:
        """Every file under ``root``, byte for byte, and every file and folder name."""
        for path in sorted(root.rglob("*")):
            relative = f"{label}/{path.relative_to(root)}"
            self.look(f"name of {relative}", str(path.relative_to(root)))
            if path.is_file() and not path.is_symlink():
                self.look(relative, path.read_bytes())

    def found(self, name: str) -> set[str]:
        return self.hits[name]


def test_the_search_finds_a_marker_where_it_was_planted(tmp_path: Path) -> None:
    """The positive control of the search itself: plain, in a binary file, inside a
    basic-auth header, and nowhere else."""
    marker = f"planted-marker-{secrets.token_hex(8)}"
    other = f"other-marker-{secrets.token_hex(8)}"
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "plain.txt").write_text(f"before {marker} after")
    (tmp_path / "a" / "blob.bin").write_bytes(os.urandom(100) + marker.encode() + os.urandom(100))
    header = base64.b64encode(f"{URI_USER}:{marker}".encode()).decode()
    (tmp_path / "a" / "request.log").write_text(f"Authorization: Basic {header}\n")
    (tmp_path / "a" / "clean.txt").write_text("nothing here " + marker[:-1])
    for pad in range(3):
        (tmp_path / f"embedded{pad}.b64").write_bytes(base64.b64encode(b"x" * pad + f"key={marker};".encode()))
    search = Search({"planted": marker, "other": other})
    search.tree(tmp_path, "t")
    search.look("output", f"error: {marker}")
    assert search.found("planted") == {"t/a/b/plain.txt", "t/a/blob.bin", "t/a/request.log", "output",
                                        "t/embedded0.b64", "t/embedded1.b64", "t/embedded2.b64"}
    assert search.found("other") == set()
    assert search.places == 2 * 7 + 2 + 1  # files and folders by name, files by content, the output


# --- processes ---------------------------------------------------------------------------


@dataclass
class Output:
    name: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float = 0.0

    def describe(self) -> str:
        return f"sml {self.name} exited {self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-4000:]}"


def _wait_for(url: str, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - localhost
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not answer within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-3000:]}", pytrace=False)


@dataclass
class Lab:
    """The test's folder, environment and outputs."""

    folder: Path
    env: dict[str, str]
    outputs: list[Output] = field(default_factory=list)
    started_at: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.phases[name] = now - since
        return now

    def start(self, name: str, args: list[str], env: Mapping[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen:
        """``sml ARGS`` in the background (its own process group); output to ``log`` or pipes."""
        target = log.open("w") if log is not None else subprocess.PIPE
        self.started_at[name] = time.monotonic()
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "serverless_ml.cli", *args], cwd=self.folder, env={**self.env, **(env or {})},
                stdout=target, stderr=subprocess.STDOUT if log is not None else subprocess.PIPE, text=True,
                start_new_session=True,
            )
        finally:
            if log is not None:
                target.close()

    def finish(self, name: str, process: subprocess.Popen) -> Output:
        try:
            out, err = process.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_process_group(process)
            out, err = process.communicate()
        result = Output(name, process.returncode, out or "", err or "", time.monotonic() - self.started_at.get(name, 0.0))
        self.outputs.append(result)
        return result

    def run(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Output:
        return self.finish(name, self.start(name, args, env))


def command_lines() -> Iterator[tuple[int, bytes]]:
    """Every process's command line on this machine (``/proc/<pid>/cmdline``)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "cmdline").read_bytes()
            except OSError:
                continue


def database_rows(uri: str) -> Iterator[tuple[str, bytes]]:
    """Every row of every table of a database, as text, table by table."""
    engine = sa.create_engine(uri)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for name, table in meta.tables.items():
                rows = conn.execute(sa.select(table)).fetchall()
                yield name, "\n".join(repr(tuple(row)) for row in rows).encode("utf-8", "backslashreplace")
    finally:
        engine.dispose()


def capture_pages(browser: Any, base: str, pages: Iterable[str], label: str,
                  log_problem: Callable[[str], None]) -> dict[str, bytes]:
    """Pages of the site (``/path?dataset=x``) in headless Chromium (the session's
    ``browser``, a fresh context): each response body from the site (HTML, Dash's layout,
    dependencies, callback JSON, scripts) and the rendered DOM, keyed by a name. On the
    Predict page the form is sent once."""
    bodies: dict[str, bytes] = {}
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        for page in pages:
            tab = context.new_page()
            tab.set_default_timeout(60_000)
            responses: list = []
            tab.on("response", lambda r, responses=responses: responses.append(r) if r.url.startswith(base) else None)
            tab.on("pageerror", lambda e, page=page: log_problem(f"{page}: {e}"))
            tab.goto(f"{base}{page}")
            _settle(tab)
            if page.startswith("/predict?"):
                tab.click("#predict-submit")
                tab.wait_for_selector("#predict-answer", timeout=60_000)
                _settle(tab)
            bodies[f"{label} page {page} (DOM)"] = tab.content().encode()
            for number, response in enumerate(responses):
                try:
                    body = response.body()
                except Exception:  # noqa: BLE001 - redirects and aborted requests have none
                    continue
                request = response.request
                bodies[f"{label} page {page} response {number} {request.method} {response.url}"] = (
                    body + b"\n" + (request.post_data_buffer or b"")
                )
            tab.close()
    finally:
        context.close()
    return bodies


def _settle(tab: object) -> None:
    tab.wait_for_load_state("networkidle")  # type: ignore[attr-defined]
    tab.wait_for_function("() => !document.querySelector('[data-dash-is-loading=\"true\"]')")  # type: ignore[attr-defined]
    tab.wait_for_load_state("networkidle")  # type: ignore[attr-defined]


# --- the test ------------------------------------------------------------------------------


def test_no_secret_shows_anywhere(postgres_cluster, free_port, data_dir: Path, tmp_path: Path,  # noqa: ANN001, PLR0915
                                  monkeypatch: pytest.MonkeyPatch, soak: bool, reliability, browser) -> None:  # noqa: ANN001
    hw_key = f"hw-key-marker-{secrets.token_hex(8)}"
    uri_password = f"uri-pw-marker-{secrets.token_hex(8)}"
    planted = f"planted-marker-{secrets.token_hex(8)}"
    markers = {"hopsworks key": hw_key, "database password": postgres_cluster.password,
               "tracking URI password": uri_password, "planted": planted}
    secret_names = [name for name in markers if name != "planted"]

    folder = tmp_path / "lab"
    (folder / "tmp").mkdir(parents=True)
    # The store's path holds the planted marker: the site's footer shows it (a place the
    # page search must find).
    store_dir = folder / f"store-{planted}"
    backend_uri = postgres_cluster.create_database("mlflow_secrets")
    optuna_uri = postgres_cluster.create_database("optuna_secrets")
    server_port, site_port = free_port(), free_port()
    tracking_uri = f"http://{URI_USER}:{uri_password}@127.0.0.1:{server_port}"
    lab = Lab(folder, {
        **os.environ, **NO_NETWORK,
        "PYTHONPATH": str(REPO_ROOT),
        "SML_DATA_DIR": str(data_dir), "SML_CACHE_DIR": str(folder / "cache"), "SML_STORE_DIR": str(store_dir),
        "MLFLOW_TRACKING_URI": tracking_uri, "SML_OPTUNA_STORAGE": optuna_uri,
        "HOPSWORKS_API_KEY": hw_key, "HOPSWORKS_PROJECT": "secrets_test",
        # Temporary files land in the folder, which is searched.
        "TMPDIR": str(folder / "tmp"),
    })
    # This test's own MLflow client (not the commands) may print run URLs and progress bars.
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    hopsworks_home = folder / "hopsworks-home"
    hopsworks_home.mkdir()
    hopsworks_env = {"HOME": str(hopsworks_home), "SML_FEATURE_STORE": "hopsworks"}
    server_env = {"SML_TRACKING_DB_URI": backend_uri, "MLFLOW_TRACKING_URI": ""}

    server_log, site_log = folder / "tracking-server.log", folder / "dashboard.log"
    server = lab.start("tracking-server", ["tracking-server", "--port", str(server_port),
                                           "--artifacts-destination", str(folder / "artifacts")], server_env, server_log)
    site = None
    commands = ["tracking-server"]
    pages: dict[str, bytes] = {}
    problems: list[str] = []
    try:
        # While the server starts: the backfill (no tracking), and the Hopsworks backend
        # with a key and no Hopsworks to reach (the SDK's default host through a proxy that
        # refuses, or this machine's port 443).
        hopsworks = [
            ("features --feature-store hopsworks", ["features", "--dataset", "titanic", "--feature-store", "hopsworks"], {}),
            ("--verbose daily (SML_FEATURE_STORE=hopsworks, HOPSWORKS_HOST=127.0.0.1)",
             ["--verbose", "daily", "--dataset", "titanic", "--date", DAY.isoformat()], {"HOPSWORKS_HOST": "127.0.0.1"}),
        ]
        started = [(name, lab.start(name, args, {**hopsworks_env, **extra})) for name, args, extra in hopsworks]
        backfill = lab.start("features", ["features", "--dataset", "titanic"])
        for name, process in started:
            result = lab.finish(name, process)
            commands.append(name)
            assert result.returncode not in (0, None), result.describe()
            errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and "Hopsworks" in errors[0], result.describe()
            if "--verbose" not in name:
                assert result.stderr.strip() == errors[0], result.describe()
            assert hw_key not in result.stdout + result.stderr, result.describe()
        result = lab.finish("features", backfill)
        commands.append("features")
        assert result.returncode == 0, result.describe()
        _wait_for(f"http://127.0.0.1:{server_port}/health", server, server_log, "sml tracking-server")
        clock = lab.phase("server start", lab.started_at["tracking-server"])

        # The loop: Titanic step by step; under soak, Iris through `sml main` at the same
        # time (four `mlflow run` steps: two minutes more on two cores).
        main = lab.start("main", ["main", "--dataset", "iris", "--trials", "1", "--days", "1"]) if soak else None
        steps = [
            ("train", ["train", "--dataset", "titanic", "--trials", "1", "--folds", "2", "--quiet"]),
            ("daily", ["daily", "--dataset", "titanic", "--date", DAY.isoformat(), "--rows", "40"]),
            ("infer", ["infer", "--dataset", "titanic", "--as-of", DAY.isoformat()]),
            ("simulate", ["simulate", "--dataset", "titanic", "--days", "2",
                          "--end-date", (DAY + dt.timedelta(days=2)).isoformat(), "--rows", "20", "--figures"]),
        ]
        for name, args in steps:
            result = lab.run(name, args)
            commands.append(name)
            assert result.returncode == 0, result.describe()
        clock = lab.phase("titanic commands", clock)

        # The site (while `main` may still run), its run links pointing at the server with
        # the credentials in the URL (in the environment: an option shows in process lists).
        site = lab.start("dashboard", ["dashboard", "--port", str(site_port), "--refresh", "3600"],
                         {"SML_MLFLOW_UI_URL": tracking_uri}, site_log)
        _wait_for(f"http://127.0.0.1:{site_port}/_dash-layout", site, site_log, "sml dashboard")
        commands.append("dashboard")
        pages.update(capture_pages(browser, f"http://127.0.0.1:{site_port}", [f"{p}?dataset=titanic" for p in PAGES],
                                   "site", problems.append))
        # A process with the planted marker on its command line: the scan must see it.
        planted_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", planted])
        try:
            time.sleep(0.5)
            cmdlines = list(command_lines())
        finally:
            planted_process.kill()
            planted_process.wait()
        if main is not None:
            result = lab.finish("main", main)
            commands.append("main")
            assert result.returncode == 0, result.describe()
        clock = lab.phase("site pages" + (", main" if main is not None else ""), clock)

        # Positive controls: the planted marker in MLflow (a param, a tag, an artifact,
        # hence rows of the database and a file on the server's disk), an output and a file.
        client = MlflowClient(tracking_uri=tracking_uri)
        planted_run = client.create_run(client.create_experiment("planted")).info.run_id
        client.log_param(planted_run, "planted", planted)
        client.set_tag(planted_run, "planted", planted)
        (tmp_path / "planted").mkdir()
        (tmp_path / "planted" / "planted.txt").write_text(planted)
        client.log_artifact(planted_run, str(tmp_path / "planted" / "planted.txt"))
        client.set_terminated(planted_run)
        (folder / "planted.log").write_text(f"a log line with {planted}\n")
        lab.outputs.append(Output("planted", 0, planted, ""))

        search = Search(markers)
        mlflow_places = search_mlflow(search, client, tmp_path / "downloads")
        clock = lab.phase("MLflow search", clock)

        # The tracking server gone: a command and the site report it, in their own words.
        stop_process_group(server)
        down = lab.start("infer (tracking server down)", ["infer", "--dataset", "titanic"])
        pages.update(capture_pages(browser, f"http://127.0.0.1:{site_port}", ["/?dataset=titanic", "/models?dataset=titanic"],
                                   "site, tracking server down", problems.append))
        result = lab.finish("infer (tracking server down)", down)
        commands.append("infer (tracking server down)")
        assert result.returncode not in (0, None) and result.stderr.startswith("error: "), result.describe()
        clock = lab.phase("tracking server down", clock)
    finally:
        if site is not None:
            stop_process_group(site)
        stop_process_group(server)
    assert not problems, problems

    for output in lab.outputs:
        search.look(f"stdout of sml {output.name}", output.stdout)
        search.look(f"stderr of sml {output.name}", output.stderr)
    for pid, line in cmdlines:
        search.look(f"command line of process {pid}", line)
    for name, body in pages.items():
        search.look(name, body)
    for name, rows in database_rows(backend_uri):
        search.look(f"tracking database table {name}", rows)
    for name, rows in database_rows(optuna_uri):
        search.look(f"Optuna database table {name}", rows)
    # The whole folder: store, the server's artifacts and log, the site's log, temporary
    # files, the Hopsworks commands' home...
    search.tree(folder, "lab")
    lab.phase("database and files", clock)

    leaks = {name: sorted(search.found(name)) for name in secret_names if search.found(name)}
    assert not leaks, f"secrets found: {leaks}"
    found = search.found("planted")
    expected = {
        "stdout of sml planted", "lab/planted.log", f"name of lab/store-{planted}",
        f"run {planted_run} params", f"run {planted_run} tags", f"artifact {planted_run}/planted.txt",
        "tracking database table params", "tracking database table tags",
    }
    assert expected <= found, f"the planted marker was not found in {sorted(expected - found)}"
    assert any(place.startswith("site page /") and "(DOM)" in place for place in found), "the store path not found in the pages"
    assert any(place.startswith("lab/artifacts/") for place in found), "the planted artifact not found on the server's disk"
    assert f"command line of process {planted_process.pid}" in found, "the planted command line not found"
    for endpoint in ("/_dash-layout", "/_dash-dependencies", "/_dash-update-component"):
        assert any(endpoint in name for name in pages), f"no {endpoint} response captured"
    assert mlflow_places["runs"] >= 6 and mlflow_places["artifacts"] >= 20 and len(pages) > 50, (mlflow_places, len(pages))

    reliability.add("secrets", commands=len(commands), places_searched=search.places)
    print("\n".join(f"sml {o.name}: {o.seconds:.0f} s" for o in lab.outputs))
    print("\n".join(f"{name}: {seconds:.0f} s" for name, seconds in lab.phases.items()))
    print(f"{len(commands)} commands, {search.places} places searched, MLflow: {mlflow_places}, {len(pages)} page bodies")


def search_mlflow(search: Search, client: MlflowClient, downloads: Path) -> dict[str, int]:
    """Experiments, runs (params, tags, metric names), logged models, the registry, and
    every artifact, downloaded through the server."""
    counts = {"experiments": 0, "runs": 0, "artifacts": 0, "models": 0}
    experiments = client.search_experiments(view_type=mlflow.entities.ViewType.ALL)
    for experiment in experiments:
        counts["experiments"] += 1
        search.look(f"experiment {experiment.name}", repr((experiment.name, experiment.artifact_location, experiment.tags)))
        for run in client.search_runs([experiment.experiment_id], run_view_type=mlflow.entities.ViewType.ALL, max_results=5000):
            counts["runs"] += 1
            run_id = run.info.run_id
            search.look(f"run {run_id} info", repr(run.info))
            search.look(f"run {run_id} params", repr(sorted(run.data.params.items())))
            search.look(f"run {run_id} tags", repr(sorted(run.data.tags.items())))
            search.look(f"run {run_id} metric names", repr(sorted(run.data.metrics)))
            search.look(f"run {run_id} inputs", repr(run.inputs))
            target = downloads / run_id
            target.mkdir(parents=True)
            if client.list_artifacts(run_id):
                client.download_artifacts(run_id, "", str(target))
            for path in sorted(target.rglob("*")):
                if path.is_file():
                    counts["artifacts"] += 1
                    search.look(f"artifact {run_id}/{path.relative_to(target)}", path.read_bytes())
        for model in client.search_logged_models([experiment.experiment_id]):
            counts["models"] += 1
            search.look(f"logged model {model.model_id}", repr((model.name, model.params, model.tags, model.artifact_location)))
    for registered in client.search_registered_models():
        search.look(f"registered model {registered.name}", repr((registered.name, registered.tags, registered.aliases,
                                                                 registered.description)))
        for version in client.search_model_versions(f"name='{registered.name}'"):
            search.look(f"model version {registered.name}/{version.version}",
                        repr((version.source, version.tags, version.description, version.run_link, version.aliases)))
    return counts


# --- URI-shaped secrets (issue 16) ----------------------------------------------------------



def uri_shapes(markers: Iterator[str], port: int) -> dict[str, str]:
    """Every way a URI holds a password (each with its own markers), as a PostgreSQL URI
    to ``port``, where nothing listens."""
    a, b, c, d, e, f, g = (next(markers) for _ in range(7))
    encoded = urllib.parse.quote(f"{c}@:/{d}", safe="")
    return {
        "user information": f"postgresql://sml:{a}@127.0.0.1:{port}/mlflow",
        # libpq takes b (before the first '@') as the password and "e@127.0.0.1" as the
        # host, and quotes that host in its message.
        "password with an unencoded @": f"postgresql://sml:{b}@{e}@127.0.0.1:{port}/mlflow",
        "URL-encoded password with @ : /": f"postgresql://sml:{encoded}@127.0.0.1:{port}/mlflow",
        "password in the query": f"postgresql://127.0.0.1:{port}/mlflow?user=sml&password={f}",
        "sslpassword in the query": f"postgresql://sml@127.0.0.1:{port}/mlflow?sslpassword={g}&sslmode=disable",
    }


def test_no_password_of_any_uri_shape_is_printed(tmp_path: Path, data_dir: Path, free_port, mlflow_template_db: Path,  # noqa: ANN001
                                                 reliability) -> None:  # noqa: ANN001
    """The class of issue 16's leaks: a password in the query, or with an unencoded '@'
    (whose tail the driver quotes), or URL-encoded, given as the tracking URI (``infer``
    and the site, its log and its pages), as ``--storage``, as ``--backend-store-uri`` and
    in a download URL, is never printed, in whole or in part. A planted marker (a source
    path in an error, the store path in the site's footer) must be found."""
    from worlds import copy_database

    counter = iter(range(10_000))
    prefix = secrets.token_hex(4)
    issued: list[str] = []

    def markers() -> Iterator[str]:
        while True:
            issued.append(f"Mk{prefix}-{next(counter):03d}-pw")
            yield issued[-1]

    closed = free_port()
    source = markers()
    shapes = uri_shapes(source, closed)
    planted = f"planted-marker-{secrets.token_hex(8)}"
    folder = tmp_path / "lab"
    (folder / "tmp").mkdir(parents=True)
    copy_database(mlflow_template_db, folder / "mlflow.db")
    env = {**os.environ, **NO_NETWORK, "PYTHONPATH": str(REPO_ROOT), "SML_DATA_DIR": str(data_dir),
           "SML_CACHE_DIR": str(folder / "cache"), "SML_STORE_DIR": str(folder / f"store-{planted}"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "TMPDIR": str(folder / "tmp")}
    lab = Lab(folder, env)

    runs: list[tuple[str, list[str], dict[str, str]]] = []
    for shape, uri in shapes.items():
        runs.append((f"infer, tracking URI: {shape}", ["infer"], {"MLFLOW_TRACKING_URI": uri}))
        runs.append((f"train --storage: {shape}", ["train", "--trials", "1", "--storage", uri], {}))
        runs.append((f"tracking-server --backend-store-uri: {shape}",
                     ["tracking-server", "--backend-store-uri", uri, "--port", str(closed)], {"MLFLOW_TRACKING_URI": ""}))
    h1, h2, h3 = next(source), next(source), next(source)
    runs.append(("features --source: URL with a password", [
        "features", "--source", f"http://sml:{h1}@{h2}@127.0.0.1:{closed}/titanic.csv?access_token={h3}"], {}))
    runs.append(("features --source: the planted control", ["features", "--source", str(folder / f"{planted}.csv")], {}))

    outputs: list[Output] = []
    for start in range(0, len(runs), 3):  # three at a time: two cores
        batch = [(name, lab.start(name, args, extra)) for name, args, extra in runs[start:start + 3]]
        outputs += [lab.finish(name, process) for name, process in batch]
    for output in outputs:
        assert output.returncode not in (0, None), output.describe()
        assert output.stderr.startswith("error: ") and len(output.stderr.splitlines()) == 1, output.describe()

    # The site, on the worst shape (an unencoded '@' and a query password), with run
    # links to an MLflow UI whose URL holds a token: its log and a page.
    s1, s2, s3, s4 = (next(source) for _ in range(4))
    site_uri = f"postgresql://sml:{s1}@{s2}@127.0.0.1:{closed}/mlflow?sslpassword={s3}"
    site_port = free_port()
    site_log = folder / "dashboard.log"
    site = lab.start("dashboard", ["dashboard", "--port", str(site_port)],
                     {"MLFLOW_TRACKING_URI": site_uri, "SML_MLFLOW_UI_URL": f"http://127.0.0.1:{closed}/?token={s4}"}, site_log)
    pages: dict[str, bytes] = {}
    try:
        _wait_for(f"http://127.0.0.1:{site_port}/_dash-layout", site, site_log, "sml dashboard")
        with urllib.request.urlopen(f"http://127.0.0.1:{site_port}/_dash-layout", timeout=30) as response:  # noqa: S310
            pages["layout"] = response.read()
        request = urllib.request.Request(f"http://127.0.0.1:{site_port}/_dash-update-component",
                                         data=json.dumps(OVERVIEW_CALLBACK).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            pages["overview"] = response.read()
    finally:
        stop_process_group(site)
    assert b"is unreachable" in pages["overview"], pages["overview"][:500]

    search = Search({marker: marker for marker in issued} | {"planted": planted})
    for output in outputs:
        search.look(f"stdout of sml {output.name}", output.stdout)
        search.look(f"stderr of sml {output.name}", output.stderr)
    search.look("the site's log", site_log.read_bytes())
    for name, body in pages.items():
        search.look(f"site {name}", body)
    leaks = {marker: sorted(search.found(marker)) for marker in issued if search.found(marker)}
    assert not leaks, f"password pieces found: {leaks}"
    assert "stderr of sml features --source: the planted control" in search.found("planted")
    assert "site layout" in search.found("planted")
    reliability.add("secrets", uri_shapes=len(shapes) + 2, commands=len(outputs) + 1, places_searched=search.places)
