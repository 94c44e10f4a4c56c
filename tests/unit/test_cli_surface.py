"""The ``sml`` command line as a user meets it: --version, the output options on either
side of the command, whole help texts, on/off switches (and their old ``true``/``false``
form), the same --figures default everywhere, progress output, and imports that stay
lazy (``sml --help`` and a no-op ``sml infer`` do not load scikit-learn, SciPy, Optuna,
Dash or Hopsworks)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest

from serverless_ml import defaults
from serverless_ml.cli import SWITCHES, cli, switch_values_to_flags
from serverless_ml.errors import SmlError
from serverless_ml.progress import Progress

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]


def sml(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("SML_VERBOSE", "SML_QUIET", "MLFLOW_LOGGING_LEVEL")}
    return subprocess.run([sys.executable, "-m", "serverless_ml.cli", *args], cwd=cwd or REPO_ROOT,
                          env={**environment, **(env or {})}, capture_output=True, text=True, timeout=120)


def test_version_prints_the_installed_package_version() -> None:
    proc = sml("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"sml (serverless-ml) {version('serverless-ml')}"


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("flag", ["--verbose", "-v"])
def test_verbose_is_accepted_before_or_after_the_command(flag: str, where: str) -> None:
    """--verbose adds the traceback to the one error line, wherever it is written."""
    args = [flag, "daily", "--dataset", "no_such_dataset"] if where == "before" else ["daily", "--dataset", "no_such_dataset", flag]
    proc = sml(*args)
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown dataset 'no_such_dataset'")


def test_without_verbose_a_mistake_is_one_error_line() -> None:
    proc = sml("daily", "--dataset", "no_such_dataset")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown dataset 'no_such_dataset'")


@pytest.mark.parametrize("args", [["-q", "daily", "--help"], ["daily", "--help", "--quiet"], ["--quiet", "--help"]])
def test_quiet_is_accepted_before_or_after_the_command(args: list[str]) -> None:
    proc = sml(*args)
    assert proc.returncode == 0, proc.stderr
    assert "-q, --quiet" in proc.stdout


def _words(text: str) -> str:
    return " ".join(text.split())


def test_help_shows_every_command_with_its_whole_summary() -> None:
    proc = sml("--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    listing = _words(proc.stdout.split("Commands:", 1)[1])
    assert "..." not in listing
    for name, command in cli.commands.items():
        assert command.short_help, f"sml {name} has no short help"
        assert f"{name} {_words(command.short_help)}" in listing, name


def test_switches_are_on_off_flags() -> None:
    train = _words(sml("train", "--help").stdout)
    infer = _words(sml("infer", "--help").stdout)
    assert "--include-synthetic / --no-include-synthetic" in train
    assert "--fail-on-alert / --no-fail-on-alert" in infer
    assert "BOOLEAN" not in train + infer
    for command in ("daily", "simulate"):
        assert "BOOLEAN" not in sml(command, "--help").stdout, command


def test_figures_default_is_the_same_in_infer_and_simulate() -> None:
    for name in ("infer", "simulate"):
        (figures,) = [p for p in cli.commands[name].params if p.name == "figures"]
        assert figures.default is defaults.LOG_FIGURES, name
    assert "figures" in _words(sml("simulate", "--help").stdout).split("--figures / --no-figures", 1)[1][:200]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["infer", "--fail-on-alert", "true"], ["infer", "--fail-on-alert"]),
        (["infer", "--fail-on-alert", "FALSE"], ["infer", "--no-fail-on-alert"]),
        (["infer", "--fail-on-alert=yes", "--as-of", "2024-01-01"], ["infer", "--fail-on-alert", "--as-of", "2024-01-01"]),
        (["train", "--include-synthetic", "0"], ["train", "--no-include-synthetic"]),
        (["daily", "--replace", "false"], ["daily"]),
        (["simulate", "--keep-existing", "--days", "3"], ["simulate", "--keep-existing", "--days", "3"]),
        (["infer", "--fail-on-alert"], ["infer", "--fail-on-alert"]),
        (["tracking-server", "--", "--replace", "true"], ["tracking-server", "--", "--replace", "true"]),
    ],
)
def test_the_old_true_false_form_of_a_switch_still_works(given: list[str], expected: list[str]) -> None:
    assert switch_values_to_flags(given) == expected


def test_a_switch_with_another_value_is_one_clear_error() -> None:
    with pytest.raises(SmlError, match="--fail-on-alert is a switch: write --fail-on-alert or --no-fail-on-alert"):
        switch_values_to_flags(["infer", "--fail-on-alert", "maybe"])
    proc = sml("infer", "--fail-on-alert", "maybe")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --fail-on-alert is a switch: write --fail-on-alert or --no-fail-on-alert, "
                                   "without a value (got 'maybe')")


def test_entry_points_translate_typed_parameters_and_refuse_other_values() -> None:
    """MLproject passes every switch a value; an empty value leaves the default."""
    assert switch_values_to_flags(["train", "--include-synthetic", "", "--trials", "2"], strict=True) == ["train", "--trials", "2"]
    assert switch_values_to_flags(["infer", "--fail-on-alert", "true"], strict=True) == ["infer", "--fail-on-alert"]
    # Any other option with an empty value: left out, so its default applies, as the README
    # says (found by a user trial: -P rows= was "'' is not a valid integer").
    assert switch_values_to_flags(["daily", "--dataset", "iris", "--rows", "", "--seed", " ", "--date", ""],
                                  strict=True) == ["daily", "--dataset", "iris"]
    # Outside the entry points an empty value is the user's: click judges it.
    assert switch_values_to_flags(["daily", "--rows", ""]) == ["daily", "--rows", ""]
    proc = subprocess.run([sys.executable, "-m", "entrypoints.batch_inference", "--fail-on-alert", "sometimes"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --fail-on-alert (MLproject parameter fail_on_alert) takes true or false, got 'sometimes'"


def test_every_mlproject_switch_is_translated() -> None:
    import yaml

    entry_points = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]
    for name, entry_point in entry_points.items():
        for parameter, spec in entry_point["parameters"].items():
            if spec["default"] in ("true", "false"):
                assert f"--{parameter.replace('_', '-')}" in SWITCHES, (name, parameter)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_writes_a_line_per_step_to_a_log_and_nothing_when_quiet() -> None:
    log = io.StringIO()
    with Progress("iris simulate", 3, stream=log) as progress:
        for day in range(1, 4):
            progress(day, 3, f"2024-01-0{day}: 10 rows scored")
    assert log.getvalue().splitlines() == [f"iris simulate: {d}/3 2024-01-0{d}: 10 rows scored" for d in range(1, 4)]
    quiet = io.StringIO()
    with Progress("iris simulate", 3, stream=quiet, quiet=True) as progress:
        progress(1, 3, "2024-01-01: 10 rows scored")
        progress.note("retraining")
    assert quiet.getvalue() == ""


def test_progress_draws_one_bar_on_a_terminal() -> None:
    terminal = _Terminal()
    with Progress("iris simulate", 3, stream=terminal) as progress:
        for day in range(1, 4):
            progress(day, 3, f"2024-01-0{day}")
    text = terminal.getvalue()
    assert "\r" in text and "3/3" in text and "[" in text
    # Redrawn in place: the steps do not each end a line.
    assert text.count("\n") <= 1
    assert not re.search(r"iris simulate: \d/3", text)


HEAVY = ("sklearn", "scipy", "optuna", "dash", "hopsworks", "skops", "matplotlib", "plotly")


def test_help_and_the_inference_job_modules_import_nothing_heavy() -> None:
    """`sml --help` loads neither MLflow nor pandas; the modules of `sml infer` (which
    loads the model only when there is something to score) load none of the libraries
    the other commands need."""
    script = (
        "import sys, contextlib\n"
        "from serverless_ml.cli import main\n"
        "with contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print('help:', sorted(m for m in ('mlflow', 'pandas', 'numpy', *" + repr(HEAVY) + ") if m in sys.modules))\n"
        "import serverless_ml.pipelines.infer, serverless_ml.pipelines.main, serverless_ml.datasets\n"
        "print('infer:', sorted(m for m in " + repr(HEAVY) + " if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2:] == ["help: []", "infer: []"], proc.stdout


def test_the_group_options_are_documented_once_per_command() -> None:
    for name, command in cli.commands.items():
        names = [opt for p in command.params if isinstance(p, click.Option) for opt in p.opts]
        assert names.count("--verbose") == 1 and names.count("--quiet") == 1, name


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [(["--version"], 0, ""), (["no-such-command"], 2, "error: No such command 'no-such-command'.")],
)
def test_the_console_script_ends_through_os_exit_after_the_python_side_of_an_exit(
    tmp_path: Path, args: list[str], code: int, stderr: str,
) -> None:
    """`sml` leaves through ``os._exit`` (so no C++ static destructor tears down pyarrow's
    thread pools under a live worker: SIGABRT at random after a Delta read, seen in CI), but
    only after what a normal exit does: a non-daemon thread finishes, ``atexit`` handlers
    run, buffered output is flushed, and the exit code is click's."""
    marker = tmp_path / "atexit"
    script = (
        "import atexit, sys, threading, time\n"
        "from pathlib import Path\n"
        "from serverless_ml.cli import console_main\n"
        f"atexit.register(lambda: Path({str(marker)!r}).write_text('ran'))\n"
        "def late():\n"
        "    time.sleep(0.3)\n"
        "    print('thread finished', end='')\n"
        "threading.Thread(target=late).start()\n"
        "sys.stdout.write('buffered ')\n"
        f"console_main({args!r})\n"
        "print('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("buffered ") and proc.stdout.endswith("thread finished"), proc.stdout
    assert "not reached" not in proc.stdout
    assert stderr in proc.stderr
    assert marker.read_text() == "ran"


def test_the_installed_sml_script_and_the_entry_points_use_the_console_main() -> None:
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'sml = "serverless_ml.cli:console_main"' in text
    assert "console_main(args, strict_switches=True)" in (REPO_ROOT / "entrypoints" / "__init__.py").read_text()


def test_the_console_script_exit_stops_an_idle_thread_pool_as_the_interpreter_would(tmp_path: Path) -> None:
    """A ThreadPoolExecutor left without ``shutdown`` (its idle workers are non-daemon
    threads that stop only when threading's exit callbacks tell them) does not hang the
    exit: a plain join of every non-daemon thread did."""
    script = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from serverless_ml.cli import console_main\n"
        "pool = ThreadPoolExecutor(max_workers=1)\n"
        "print(pool.submit(lambda: 'worked').result())\n"
        "console_main(['--version'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("worked\nsml (serverless-ml)"), proc.stdout


def test_a_class_name_the_font_lacks_draws_without_a_warning_line(tmp_path) -> None:  # noqa: ANN001
    """Found by a user trial: 8 lines of "Glyph ... missing" on stderr for one `sml train`."""
    import warnings

    import matplotlib.pyplot as plt

    from serverless_ml.cli import quiet_missing_glyphs
    from serverless_ml.training.evaluation import confusion_figure, confusion_table

    classes = ["日本", "🎉 party"]
    table = confusion_table(["日本", "🎉 party", "日本"], ["日本", "日本", "日本"], classes)

    def drawn() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                quiet_missing_glyphs()
            figure = confusion_figure(table, "unicode")
            figure.savefig(tmp_path / "unicode.png")
            plt.close(figure)
        return [str(w.message) for w in caught if "Glyph" in str(w.message)]

    quiet = False
    assert drawn(), "the font lacks these characters: matplotlib warns"
    quiet = True
    assert drawn() == []
    assert (tmp_path / "unicode.png").stat().st_size > 0
