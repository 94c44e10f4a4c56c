"""The ``sml`` command: one sub-command per job.

Each command parses its options, resolves settings, calls the library and prints what it
did. Expected failures (:class:`SmlError`, bad options) print one ``error:`` line and
exit non-zero; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import click

from serverless_ml import defaults
from serverless_ml.dates import check_date
from serverless_ml.errors import SmlError
from serverless_ml.progress import is_terminal
from serverless_ml.redaction import install_log_scrubber, remember, scrub_known
from serverless_ml.settings import Settings, resolve_settings

log = logging.getLogger("serverless_ml")

SECRET_URI_VARIABLES = (
    "MLFLOW_TRACKING_URI", "SML_TRACKING_DB_URI", "SML_OPTUNA_STORAGE", "SML_MLFLOW_UI_URL", "MLFLOW_BACKEND_STORE_URI",
)
"""Environment variables whose URIs may hold a password."""


def parse_date(value: str | None, option: str = "--date") -> dt.date | None:
    """``YYYY-MM-DD`` to a date in the supported range (:mod:`serverless_ml.dates`);
    empty means unset."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    # Only YYYY-MM-DD: Python also reads 2024-W05 and 20240201 as dates, which the
    # message would not say (found by a user trial: --date 2024-W05 wrote 2024-01-29).
    if not _DAY_FORMAT.fullmatch(text):
        raise SmlError(f"{option} {value!r} is not a date (expected YYYY-MM-DD)")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise SmlError(f"{option} {value!r} is not a date (expected YYYY-MM-DD)") from None
    return check_date(day, option)


_DAY_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")


def _blank_to_none(value: str | None) -> str | None:
    return value if value and value.strip() else None


def store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that touches the feature store takes."""

    @click.option("--store-dir", default="", help="Local feature store directory [env SML_STORE_DIR; default ./sml_data/feature_store].")
    @click.option(
        "--feature-store",
        default=defaults.FEATURE_STORE,
        type=click.Choice(defaults.FEATURE_STORES, case_sensitive=False),
        envvar="SML_FEATURE_STORE",
        show_default=True,
        help="Feature store backend [env SML_FEATURE_STORE].",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, store_dir: str, feature_store: str, **kwargs: Any) -> Any:
        settings = resolve_settings(store_dir=_blank_to_none(store_dir), feature_store=feature_store)
        return command(*args, settings=settings, **kwargs)

    return wrapper


NOTIFY_HELP = ("POST a JSON notification to this http(s) URL for every alert and alias move (repeatable; a Slack "
               "incoming webhook gets Slack's format) [env SML_NOTIFY_URL: URLs separated by spaces].")


def notify_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--notify URL`` (repeatable), else ``SML_NOTIFY_URL``: the command gets ``notify``,
    the receivers (:func:`serverless_ml.notify.resolve_receivers`), whose credentials are
    remembered for masking before anything is checked or printed."""

    @click.option("--notify", "notify_urls", multiple=True, metavar="URL", help=NOTIFY_HELP)
    @functools.wraps(command)
    def wrapper(*args: Any, notify_urls: tuple[str, ...], **kwargs: Any) -> Any:
        from serverless_ml.notify import ENV_NOTIFY_URL, resolve_receivers

        remember(*notify_urls, *os.environ.get(ENV_NOTIFY_URL, "").split())
        return command(*args, notify=resolve_receivers(notify_urls, os.environ), **kwargs)

    return wrapper


DATASET_HELP = "Built-in dataset name or path of a .yaml/.toml spec."


def dataset_option(
    text: str = DATASET_HELP, *, multiple: bool = False, default: Any = defaults.DATASET,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--dataset`` option of every command that takes a dataset (a built-in's name or
    a spec file's path), with help ``text``: one dataset, ``dataset`` (default
    :data:`defaults.DATASET`), or with ``multiple`` a repeatable one, ``datasets``."""
    if multiple:
        return click.option("--dataset", "datasets", multiple=True, default=default, show_default=bool(default), help=text)
    return click.option("--dataset", default=default, show_default=True, help=text)


VERBOSE_HELP = "Show tracebacks, debug logs and MLflow's own messages [env SML_VERBOSE]."
QUIET_HELP = "No progress bars or progress lines (results and errors are still printed) [env SML_QUIET]."


def output_settings(ctx: click.Context | None = None) -> dict[str, bool]:
    """``{"verbose": ..., "quiet": ...}``: the output options given before or after the
    sub-command (or in ``SML_VERBOSE``/``SML_QUIET``)."""
    root = (ctx or click.get_current_context()).find_root()
    root.ensure_object(dict)
    return root.obj.setdefault("output", {"verbose": False, "quiet": False})


def _output_option_given(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        settings = output_settings(ctx)
        settings[str(param.name)] = True
        configure_output(**settings)
    return value


def output_options(*, with_env: bool) -> list[click.Option]:
    """``--verbose/-v`` and ``--quiet/-q``: the group's (which read the environment too),
    and a copy on every sub-command, so either place works (``sml -v infer``, ``sml infer -v``)."""
    return [
        click.Option(["--verbose", "-v"], is_flag=True, expose_value=False, is_eager=True, callback=_output_option_given,
                     envvar="SML_VERBOSE" if with_env else None, help=VERBOSE_HELP),
        click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, is_eager=True, callback=_output_option_given,
                     envvar="SML_QUIET" if with_env else None, help=QUIET_HELP),
    ]


class SmlGroup(click.Group):
    """The ``sml`` group: every sub-command also takes the output options."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.extend(output_options(with_env=False))
        super().add_command(cmd, name)


MLFLOW_NOTES = ("Successfully registered model ", "Registered model ", "Created version ")
"""Lines MLflow prints (not logs) when a model version is registered: each job's summary
says what it registered, so they show only under ``--verbose``."""


_MLFLOW_LEVEL_SET_HERE = False


def configure_output(verbose: bool, quiet: bool) -> None:
    """Logging for ``--verbose``: debug logs and MLflow's INFO messages; otherwise warnings
    only. MLflow sets its loggers up when it is imported (later, and only by the commands
    that need it), from ``MLFLOW_LOGGING_LEVEL``, which also reaches the processes a
    command starts. (``quiet`` is read where progress is shown: :func:`progress_for`.)"""
    global _MLFLOW_LEVEL_SET_HERE
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        if _MLFLOW_LEVEL_SET_HERE:  # before a sub-command's --verbose was seen
            os.environ.pop("MLFLOW_LOGGING_LEVEL", None)
            _MLFLOW_LEVEL_SET_HERE = False
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.NOTSET)
        if "mlflow" in sys.modules:
            logging.getLogger("mlflow").setLevel(logging.INFO)
    else:
        # MLflow's INFO lines ("=== Created directory ... for downloading remote URIs",
        # "=== Running command ...") are noise to a user; a user's own setting wins.
        if "mlflow" in sys.modules:  # imported already (sml run in-process by a test)
            logging.getLogger("mlflow").setLevel(os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING"))
        elif "MLFLOW_LOGGING_LEVEL" not in os.environ:
            os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
            _MLFLOW_LEVEL_SET_HERE = True
        # MLflow logs each database error with its traceback before raising it; the
        # raised error becomes the one `error:` line (serverless_ml/system_faults.py).
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def hide_mlflow_notes() -> None:
    """Drop MLflow's registration notes (:data:`MLFLOW_NOTES`) from its message stream
    unless ``--verbose`` (call where MLflow is imported anyway: it is not, at start-up)."""
    if output_settings()["verbose"]:
        return
    from mlflow.utils import logging_utils

    # Any: its `write` method is replaced and a marker attribute added below (a patch of
    # MLflow's object, which its type does not allow).
    stream: Any = logging_utils.MLFLOW_LOGGING_STREAM
    if getattr(stream, "sml_filtered", False):
        return
    write = stream.write
    dropped = {"newline": False}

    def filtered(text: str) -> None:
        if text.startswith(MLFLOW_NOTES):
            dropped["newline"] = True  # print() writes the line's "\n" in a second call
            return
        if dropped["newline"] and text == "\n":
            dropped["newline"] = False
            return
        dropped["newline"] = False
        write(text)

    stream.write = filtered
    stream.sml_filtered = True


def progress_for(title: str, total: int) -> Any:
    """A :class:`serverless_ml.progress.Progress` on stderr for this command: a bar on a
    terminal, a line per step otherwise, nothing under ``--quiet``."""
    from serverless_ml.progress import Progress

    return Progress(title, total, quiet=output_settings()["quiet"])


@click.group(cls=SmlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(None, "--version", message="sml (serverless-ml) %(version)s", package_name="serverless-ml",
                      help="Print the version and exit.")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """serverless-ml: feature store, tuned model, daily batch predictions, monitoring.

    --verbose and --quiet go before or after the command (`sml -q simulate`, `sml simulate -q`).
    """
    settings = output_settings(ctx)
    configure_output(**settings)
    # No password of the URIs the environment gives is printed or logged by this process
    # (the commands remember the URIs their options give where they use them).
    remember(*(os.environ.get(name) for name in SECRET_URI_VARIABLES))
    install_log_scrubber()


for _option in output_options(with_env=True):
    cli.params.append(_option)


@cli.command(short_help="Validate a dataset's source and backfill its feature group.")
@dataset_option()
@click.option("--source", default="", help="CSV path or URL [default: $SML_DATA_DIR/<dataset>.csv, then the built-in copy or public URL].")
@store_options
def features(dataset: str, source: str, settings: Settings) -> None:
    """Backfill: validate the dataset's source and upsert it into its feature group.

    Writes the feature group <dataset> (rows with origin 'backfill'). Re-running on the
    same input changes nothing.
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.sources import load_source
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.features import backfill

    spec = get_dataset(dataset)
    raw = load_source(spec, _blank_to_none(source), settings.data_dir, settings.cache_dir)
    report = backfill(spec, open_feature_store(settings), raw)
    click.echo(f"source: {raw.location}")
    click.echo(report.summary())


@cli.group("spec", cls=SmlGroup, short_help="Dataset spec files: draft one from a CSV.")
def spec_group() -> None:
    """Dataset spec files (see README.md, 'Spec reference')."""


@spec_group.command("draft", short_help="Write a commented dataset spec for a CSV, guessed from its values.")
@click.argument("csv_path", metavar="CSV")
@click.option("--label", required=True, help="The CSV column holding the class.")
@click.option("--name", default=None, help="Dataset name [default: the CSV's file name in snake case].")
@click.option("--key", default=None, help="The CSV column holding a unique key [default: detected; else rows are numbered].")
@click.option("--output", default=None, help="Write the spec to this new .yaml file; source.path is relative to it when the CSV "
              "is in its folder [default: stdout, with the CSV's absolute path].")
def spec_draft(csv_path: str, label: str, name: str | None, key: str | None, output: str | None) -> None:
    """Draft a dataset spec (YAML) for CSV, ready for `sml features --dataset FILE`.

    Reads CSV; writes the spec to stdout (or --output FILE, never over an existing file).
    Types, missing values, ranges (with a margin), categories, the key and the label's
    classes are guessed from the values, each guess explained in a comment; columns left
    out are listed as warnings, which are repeated on stderr.
    """
    from pathlib import Path

    from serverless_ml.datasets.draft import draft_spec

    target = Path(output) if output else None
    if target is not None:
        if target.suffix.lower() not in (".yaml", ".yml"):
            raise SmlError(f"--output {output}: expected a .yaml or .yml file name")
        if target.exists() or target.is_symlink():
            raise SmlError(f"--output {output} exists; remove it or choose another file (a draft never overwrites)")
        if not target.parent.is_dir():
            raise SmlError(f"--output {output}: folder {target.parent} does not exist")
    draft = draft_spec(csv_path, label, name=name, key=key, spec_dir=target.parent if target is not None else None)
    if target is None:
        click.echo(draft.text, nl=False)
    else:
        try:
            fh = target.open("x", encoding="utf-8")  # "x": fails rather than replace a file made meanwhile
        except OSError as exc:
            raise SmlError(f"--output {output} cannot be created ({exc.strerror})") from None
        try:
            with fh:
                fh.write(draft.text)
        except OSError as exc:
            target.unlink(missing_ok=True)  # the file this command created: nothing half-written stays
            raise SmlError(f"--output {output} cannot be written ({exc.strerror})") from None
        count = len(draft.warnings)
        seen = f" ({count} warning{'' if count == 1 else 's'}; see stderr and the file's comments)" if count else ""
        click.echo(f"wrote {target}{seen}")
    for warning in draft.warnings:
        click.echo(f"warning: {warning}", err=True)


@cli.command(short_help="Add one day of synthetic labelled rows to the feature group.")
@dataset_option()
@click.option("--date", "date_", default="", help="Event date YYYY-MM-DD [default: today, UTC].")
@click.option("--rows", default=defaults.DAILY_ROWS, show_default=True, type=int, help="Rows to generate (1..10000).")
@click.option("--seed", default=defaults.DAILY_SEED, show_default=True, type=int, help="Random seed (0..9999).")
@click.option("--drift", default="", help="Shift features, e.g. 'age+15,fare*2,embarked=Q'.")
@click.option("--replace", is_flag=True,
              help="Rewrite the day's rows when they exist with other values; removes the predictions and "
                   "monitoring runs that scored them.")
@store_options
def daily(dataset: str, date_: str, rows: int, seed: int, drift: str, replace: bool, settings: Settings) -> None:
    """Add synthetic labelled rows for one day to the dataset's feature group.

    Reads the group's backfill rows; writes rows with origin 'synthetic' and event time
    DATE. The same date and seed twice adds nothing the second time; other --rows or
    --drift for a date and seed that have rows are refused unless --replace is given.
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.synthetic import parse_drift
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.features import add_daily_rows

    day = parse_date(date_) or dt.datetime.now(dt.timezone.utc).date()
    spec = get_dataset(dataset)
    shifts = parse_drift(drift, spec)
    report = add_daily_rows(spec, open_feature_store(settings), day, rows, seed, shifts, replace=replace, settings=settings)
    click.echo(f"{day.isoformat()}: {report.summary()}")


@cli.command(short_help="Add real new rows (labels optional) from a CSV or Parquet file to the feature group.")
@dataset_option()
@click.option("--source", default="", help="The new rows: a CSV or Parquet (.parquet) path or http(s) URL (required).")
@click.option("--date", "date_", default="",
              help="Event date YYYY-MM-DD of every row [default: the spec's event_time_column, else now, UTC].")
@store_options
def ingest(dataset: str, source: str, date_: str, settings: Settings) -> None:
    """Validate live rows as a backfill is validated and add them with origin 'live'.

    Reads SOURCE (downloaded afresh when a URL) and the feature group <dataset>, which
    `sml features` must have filled. Writes the rows whose key is new; the label may be
    absent or empty (stored as null until `sml labels` attaches it). A key stored with the
    same features is left as it is, so re-running the same file changes nothing; a key
    stored with other features is refused, and nothing is written.
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.ingest import check_event_time_options, ingest_file

    if not source.strip():
        raise SmlError("--source is required: the CSV or Parquet (.parquet) file of the new rows, a path or http(s) URL")
    day = parse_date(date_)
    spec = get_dataset(dataset)
    check_event_time_options(spec, day)  # before the file is read or downloaded
    location, report = ingest_file(spec, open_feature_store(settings), source, day, cache_dir=settings.cache_dir)
    click.echo(f"source: {location}")
    click.echo(report.summary())


@cli.command(short_help="Attach labels that arrived later; the predictions and monitoring runs follow.")
@dataset_option()
@click.option("--source", default="", help="CSV or Parquet path, or http(s) URL: the key column, the label column, optionally labelled_at (required).")
@click.option("--overwrite", is_flag=True, help="Replace labels that are already known with the file's (refused otherwise).")
@store_options
@notify_option
def labels(dataset: str, source: str, overwrite: bool, settings: Settings, notify: tuple[Any, ...] = ()) -> None:
    """Attach labels to rows of the feature group, and make everything that depends on
    them follow.

    Reads SOURCE (the dataset's raw key column, or the key's name when rows are numbered;
    the label column; optionally labelled_at, validated, not stored). Writes the feature
    group <dataset> (the rows' labels), the actual labels of <dataset>_predictions, and
    the realized figures (labelled share, batch accuracy, rolling and since-promotion
    accuracy, per-class metrics, confusion matrices) of every monitoring run they touch,
    on the run itself, and the accuracy alert of each run the labels show failing (printed
    as ALERT lines, sent to --notify). Unknown keys, labels outside the classes, duplicate
    keys and changes to known labels (without --overwrite) are refused, and nothing is
    written. Re-running the same file changes nothing.
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.sources import load_rows
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.labels import LabelOptions, attach_labels

    if not source.strip():
        raise SmlError("--source is required: the CSV or Parquet file of keys and labels, a path or http(s) URL")
    spec = get_dataset(dataset)
    # Read afresh like `sml ingest` (a URL may serve new labels each day), CSV or Parquet.
    raw = load_rows(source, spec.name, settings.cache_dir)
    report = attach_labels(spec, open_feature_store(settings), settings, raw, LabelOptions(overwrite=overwrite, notify=notify),
                            dt.datetime.now(dt.timezone.utc))
    click.echo(f"source: {raw.location}")
    click.echo(report.summary())


@cli.command(short_help="Tune a random forest with Optuna, log it to MLflow, register and promote it.")
@dataset_option()
@click.option("--trials", default=defaults.TRAIN_TRIALS, show_default=True, type=int, help="New Optuna trials to run.")
@click.option("--timeout", default=0.0, type=float, help=f"Stop starting trials after this many seconds (0: a budget of {defaults.TRAIN_TIME_BUDGET_S:.0f} s).")
@click.option("--seed", default=defaults.TRAIN_SEED, show_default=True, type=int, help="Seed of the split, the folds, the sampler and the forest.")
@click.option("--holdout", default=defaults.TRAIN_HOLDOUT, show_default=True, type=float, help=f"Share of rows held out from tuning (0: {defaults.TRAIN_AUTO_HOLDOUT:.0%}, at least one row of each class).")
@click.option("--folds", default=defaults.TRAIN_FOLDS, show_default=True, type=int, help=f"Cross-validation folds per trial (0: {defaults.TRAIN_AUTO_FOLDS}, fewer when a class has fewer training rows).")
@click.option("--workers", default=defaults.TRAIN_WORKERS, show_default=True, type=int, help="Tuning processes sharing the study.")
@click.option("--storage", default="", envvar="SML_OPTUNA_STORAGE",
              help="Optuna storage URL [env SML_OPTUNA_STORAGE, better for a password than the command line; "
                   "default: sqlite optuna.db in SML_STATE_DIR if set, else next to the tracking database].")
@click.option("--study-name", default="", help="Optuna study to create or resume [default: from dataset, data version and seed].")
@click.option("--include-synthetic/--no-include-synthetic", default=False, show_default=True,
              help="Also train on synthetic rows (the daily and simulated ones); real rows are the backfill and the "
                   "live rows whose labels have arrived.")
@click.option("--promote", default=defaults.TRAIN_PROMOTE, show_default=True, type=click.Choice(defaults.TRAIN_PROMOTE_MODES), help="Promotion rule.")
@click.option("--workers-only", is_flag=True, help="Only add trials to the shared study (--storage, --study-name); "
              "register nothing. Refit afterwards with --trials 0.")
@click.option("--worker-id", type=int, default=None, help="With --workers-only: a number per worker for reproducible, "
              "distinct sampler seeds [default: a random seed].")
@notify_option
@store_options
def train(
    dataset: str, trials: int, timeout: float, seed: int, holdout: float, folds: int, workers: int,
    storage: str, study_name: str, include_synthetic: bool, promote: str,
    workers_only: bool, worker_id: int | None, settings: Settings, notify: tuple[Any, ...] = (),
) -> None:
    """Tune a random forest with Optuna, log every trial to MLflow, register and promote.

    Reads the feature view <dataset>_training; logs a parent run with one nested run per
    trial in experiment <dataset>-training; registers model <dataset> with alias
    'challenger', and 'champion' when its accuracy is above the champion's on the
    holdout rows the champion did not train on (a tie keeps the champion). When the
    champion (or challenger) was trained on the same rows, seed and search, nothing is
    trained or registered and it is kept (--promote always registers anew).

    Across machines: run `--workers-only` on each (same --storage and --study-name), then
    once `--trials 0` to refit the study's best trial and register it.
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.train import TrainOptions, tune_as_worker
    from serverless_ml.pipelines.train import train as run_training
    from serverless_ml.tracking import configure_tracking

    options = TrainOptions(
        trials=trials, seed=seed, timeout=timeout or None, holdout=holdout, folds=folds,
        # `mlflow run` passes an empty --storage, which hides the variable from click.
        storage=_blank_to_none(storage) or _blank_to_none(os.environ.get("SML_OPTUNA_STORAGE")),
        study_name=_blank_to_none(study_name),
        include_synthetic=include_synthetic, promote=promote, workers=workers,
        # Optuna's own bar on a terminal only: in a log file it is a line per redraw.
        quiet=output_settings()["quiet"] or not is_terminal(sys.stderr),
        workers_only=workers_only, worker_id=worker_id, notify=notify,
    )
    spec = get_dataset(dataset)
    hide_mlflow_notes()
    job = tune_as_worker if workers_only else run_training
    store = open_feature_store(settings)
    tracker = configure_tracking(settings)
    if is_terminal(sys.stderr):  # Optuna's bar
        report = job(spec, store, settings, options, tracker)
    else:  # a line per trial in a log (nothing under --quiet)
        with progress_for(f"{spec.name} train", trials) as progress:
            report = job(spec, store, settings, dataclasses.replace(options, progress=progress), tracker)
    click.echo(report.summary())


@cli.command(short_help="Score the rows the champion has not seen; log the batch as a monitoring run.")
@dataset_option()
@click.option("--as-of", default="", help="Score rows up to the end of this date, YYYY-MM-DD [default: now].")
@click.option("--rolling-days", default=defaults.INFER_ROLLING_DAYS, show_default=True, type=int, help="Days in the rolling accuracy window.")
@click.option("--accuracy-drop", default=defaults.INFER_ACCURACY_DROP, show_default=True, type=float, help="Alert when accuracy is this far below the champion's holdout accuracy.")
@click.option("--drift-p-value", default=defaults.INFER_DRIFT_P_VALUE, show_default=True, type=float, help="A feature has drifted when its p-value, adjusted over all features (Benjamini-Hochberg), is below this...")
@click.option("--drift-min-effect", default=defaults.INFER_DRIFT_MIN_EFFECT, show_default=True, type=float, help="...and its effect size (Wasserstein distance in standard deviations; total variation for categories) is at least this.")
@click.option("--drift-share", default=defaults.INFER_DRIFT_SHARE, show_default=True, type=float, help="Alert when more than this share of features drifted (0: any drifted feature).")
@click.option("--fail-on-alert/--no-fail-on-alert", default=False, show_default=True,
              help="Exit 3 when an alert fires (for schedulers), after the batch is logged.")
@click.option("--figures/--no-figures", default=defaults.LOG_FIGURES, show_default=True,
              help="Also log confusion matrices as PNG figures (the tables are logged either way).")
@click.option("--promote", default=defaults.INFER_PROMOTE, show_default=True, type=click.Choice(defaults.INFER_PROMOTE_MODES),
              help=f"live: promote @challenger when, on the live rows both scored, it is right more often (one-sided McNemar "
                   f"exact test, at least {defaults.LIVE_PROMOTE_MIN_DISCORDANT} discordant rows; look k at "
                   f"{defaults.LIVE_PROMOTE_ALPHA} / (k (k + 1)), so at most {defaults.LIVE_PROMOTE_ALPHA} false promotions "
                   "over a challenger's looks).")
@notify_option
@store_options
def infer(
    dataset: str, as_of: str, rolling_days: int, accuracy_drop: float, drift_p_value: float,
    drift_min_effect: float, drift_share: float, fail_on_alert: bool, figures: bool, promote: str, settings: Settings,
    notify: tuple[Any, ...] = (),
) -> None:
    """Score the rows the champion has not seen and log the batch as a monitoring run.

    Reads models:/<dataset>@champion and the feature group <dataset>; writes
    <dataset>_predictions; logs one run in experiment <dataset>-monitoring (nothing when
    there is nothing new). Exit 3 with --fail-on-alert when an alert fires. When
    @challenger is another version, it scores the batch too (stored with its version,
    never served) and the run logs the paired comparison; --promote live acts on it.
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.inference.monitoring import AlertRule
    from serverless_ml.pipelines.infer import AlertRaised, InferOptions
    from serverless_ml.pipelines.infer import infer as run_inference
    from serverless_ml import registry
    from serverless_ml.tracking import configure_tracking

    options = InferOptions(
        as_of=parse_date(as_of, "--as-of"), rolling_days=rolling_days,
        rule=AlertRule(accuracy_drop=accuracy_drop, drift_p_value=drift_p_value, drift_share=drift_share,
                       drift_min_effect=drift_min_effect),
        # The exit code is this command's: its summary is printed first, and the alerts once.
        fail_on_alert=False, figures=figures, notify=notify, promote=promote,
    )
    spec = get_dataset(dataset)
    registry.refuse_without_database(settings.tracking_uri, spec.name, spec.dataset_arg)
    store = open_feature_store(settings)
    now = dt.datetime.now(dt.timezone.utc)
    report = run_inference(spec, store, settings, options, now, configure_tracking(settings))
    click.echo(report.summary())
    if fail_on_alert and report.alerts:
        raise AlertRaised(f"{spec.name} {report.as_of}: {len(report.alerts)} alert(s), listed above "
                          f"(--fail-on-alert; monitoring run {report.run_id})")


@cli.command("tracking-server", short_help="Run `mlflow server` on a database, with proxied artifacts.", context_settings={"ignore_unknown_options": True})
@click.option("--backend-store-uri", envvar="SML_TRACKING_DB_URI", default="", show_envvar=True,
              help="Database of runs and the registry, e.g. postgresql://user:password@host:5432/mlflow "
                   "(prefer the environment variable: options are visible in `ps`).")
@click.option("--artifacts-destination", default="",
              help="Where the server keeps artifacts: a folder or s3://bucket/path [default: ./sml_data/mlartifacts].")
@click.option("--host", default=defaults.TRACKING_SERVER_HOST, show_default=True, help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", default=defaults.TRACKING_SERVER_PORT, show_default=True, type=int, envvar="SML_TRACKING_SERVER_PORT",
              show_envvar=True, help="Port to listen on.")
@click.option("--workers", default=defaults.TRACKING_SERVER_WORKERS, show_default=True, type=int, help="Server worker processes.")
@click.argument("mlflow_args", nargs=-1, type=click.UNPROCESSED)
def tracking_server(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int,
                    mlflow_args: tuple[str, ...]) -> None:
    """Start `mlflow server` with a database backend store and proxied artifacts.

    Checks that the database answers, prints where everything lives (the password
    masked) and replaces itself by `mlflow server`; arguments after `--` go to it
    unchanged (e.g. `-- --allowed-hosts mlflow.example.com`). Clients then set
    MLFLOW_TRACKING_URI=http://HOST:PORT.
    """
    from serverless_ml import tracking_server as server

    options = server.ServerOptions(host=host, port=port, workers=workers)
    server.check_backend_store(backend_store_uri.strip())
    command = server.server_command(
        backend_store_uri.strip(), server.resolve_artifacts_destination(_blank_to_none(artifacts_destination)),
        host=options.host, port=options.port, workers=options.workers, extra_args=list(mlflow_args),
    )
    click.echo(command.summary)
    server.exec_server(command)


@cli.command(short_help="Replay past days: synthetic rows, scored batches, monitoring runs, retrains.")
@dataset_option()
@click.option("--days", default=defaults.SIMULATE_DAYS, show_default=True, type=int, help="Past days to replay.")
@click.option("--end-date", default="", help="Last simulated day, YYYY-MM-DD [default: yesterday, UTC].")
@click.option("--rows", default=defaults.SIMULATE_ROWS, show_default=True, type=int, help="Synthetic rows per day.")
@click.option("--seed", default=defaults.DAILY_SEED, show_default=True, type=int, help="Seed of the daily rows (0..9999).")
@click.option("--drift", default="", help="Drift episode's shifts, e.g. 'age+15,fare*2'.")
@click.option("--drift-from", default=0, type=int, help="First day (1..DAYS) of the drift episode.")
@click.option("--drift-days", default=0, type=int, help="Length of the drift episode in days [default: to the end].")
@click.option("--retrain-every", default=0, type=int, help="Retrain every K days (0: never).")
@click.option("--retrain-trials", default=defaults.SIMULATE_RETRAIN_TRIALS, show_default=True, type=int, help="Optuna trials per retrain.")
@click.option("--figures/--no-figures", default=defaults.LOG_FIGURES, show_default=True,
              help="Also log confusion matrices as PNG figures (the tables are logged either way).")
@click.option("--replace", is_flag=True, help="Rewrite days that exist with other rows, and score them again.")
@click.option("--keep-existing", is_flag=True, help="Keep days that exist with other rows as they are; simulate only the others.")
@click.option("--label-delay", default=defaults.SIMULATE_LABEL_DELAY, show_default=True, type=int,
              help="Days after its day a row's label arrives (its day's batch is scored without it).")
@click.option("--label-share", default=defaults.SIMULATE_LABEL_SHARE, show_default=True, type=float,
              help="Share of the rows whose label ever arrives (0..1).")
@store_options
def simulate(
    dataset: str, days: int, end_date: str, rows: int, seed: int, drift: str, drift_from: int,
    drift_days: int, retrain_every: int, retrain_trials: int, figures: bool, replace: bool, keep_existing: bool,
    label_delay: int, label_share: float, settings: Settings,
) -> None:
    """Replay N past days of the daily loop (rows, inference, optional retraining).

    Writes synthetic rows dated each day to <dataset>, predictions to
    <dataset>_predictions, and one monitoring run per day (dated that day) in
    <dataset>-monitoring. Needs a champion (`sml train`). Days that exist with other rows
    are refused unless --replace is given (their rows rewritten, then scored again) or
    --keep-existing (they stay as they are; `sml main` uses it).
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.synthetic import parse_drift
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.infer import InferOptions
    from serverless_ml.pipelines.simulate import SimulateOptions
    from serverless_ml import registry
    from serverless_ml.pipelines.simulate import simulate as run_simulation
    from serverless_ml.tracking import configure_tracking

    last = parse_date(end_date, "--end-date") or dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    spec = get_dataset(dataset)
    options = SimulateOptions(
        days=days, end_date=last, rows=rows, seed=seed, drift=parse_drift(drift, spec),
        drift_from=drift_from or None, drift_days=drift_days or None, retrain_every=retrain_every or None,
        retrain_trials=retrain_trials, replace=replace, keep_existing=keep_existing, infer=InferOptions(figures=figures),
        label_delay=label_delay, label_share=label_share,
    )
    registry.refuse_without_database(settings.tracking_uri, spec.name, spec.dataset_arg)  # no champion there
    store = open_feature_store(settings)
    tracker = configure_tracking(settings)
    if retrain_every:
        hide_mlflow_notes()
    with progress_for(f"{spec.name} simulate", days) as progress:
        report = run_simulation(spec, store, settings, options, progress=progress, tracker=tracker)
    click.echo(report.summary(spec, options))


@cli.command(short_help="Serve the monitoring site (debug off).")
@click.option("--host", default="", help="Address to bind [default: 127.0.0.1, this machine only].")
@click.option("--port", default=0, type=int, help="Port [default: 8050].")
@dataset_option("A dataset spec file to show besides the built-ins (repeatable).", multiple=True, default=())
@click.option("--mlflow-ui-url", default="", envvar="SML_MLFLOW_UI_URL", help="MLflow UI base URL for run links [env SML_MLFLOW_UI_URL].")
@click.option("--refresh", default=defaults.SITE_REFRESH_S, show_default=True, type=float,
              help=f"Seconds between page refreshes ({defaults.SITE_REFRESH_RANGE_S[0]:g}..{defaults.SITE_REFRESH_RANGE_S[1]:g}).")
@store_options
def dashboard(host: str, port: int, datasets: tuple[str, ...], mlflow_ui_url: str, refresh: float, settings: Settings) -> None:
    """Serve the monitoring site (debug off). For production, see the README (gunicorn).

    Reads the monitoring, training and registry data at MLFLOW_TRACKING_URI and the
    feature store; writes nothing.
    """
    from monitoring_app.options import SiteOptions
    from serverless_ml.datasets import get_dataset

    # Every check before the site's (slow) imports: a bad option fails at once.
    options = SiteOptions(host=host or defaults.SITE_HOST, port=port or defaults.SITE_PORT, refresh_s=refresh)
    # A store not created yet is fine (the site says there is no data); a file never is.
    refuse_store_file(settings)
    for name in datasets:
        get_dataset(name)
    check_can_listen(options.host, options.port)
    from monitoring_app.app import create_app

    app = create_app(settings, datasets=list(datasets), mlflow_ui_url=_blank_to_none(mlflow_ui_url),
                     refresh_s=options.refresh_s, warm_up=True)
    from monitoring_app.serving import quiet_development_server

    # One line with the URL; werkzeug's request lines and start-up message only under --verbose.
    quiet_development_server(app, level=min(logging.getLogger().level, logging.WARNING), colour=sys.stderr.isatty())
    click.echo(f"monitoring site on http://{options.host}:{options.port}/ (Ctrl-C stops it)")
    click.echo("(Flask's development server, for this machine: in production serve it with gunicorn, see the README)")
    from serverless_ml.sqlite_exit import exit_on_sigterm

    exit_on_sigterm()  # SIGTERM stops it as Ctrl-C does: mlflow.db is checkpointed on the way out
    app.run(host=options.host, port=options.port, debug=False)


@cli.command(short_help="Serve @champion over REST and record every served row.")
@dataset_option()
@click.option("--host", default=defaults.SERVE_HOST, show_default=True, help="Address to bind (127.0.0.1: this machine only).")
@click.option("--port", default=defaults.SERVE_PORT, show_default=True, type=int, help="Port.")
@click.option("--flush-rows", default=defaults.SERVE_FLUSH_ROWS, show_default=True, type=int,
              help="Write the served rows to the store when this many are buffered...")
@click.option("--flush-seconds", default=defaults.SERVE_FLUSH_S, show_default=True, type=float,
              help="...or this many seconds after the last write.")
@store_options
def serve(dataset: str, host: str, port: int, flush_rows: int, flush_seconds: float, settings: Settings) -> None:
    """Serve models:/<dataset>@champion: POST /predict {"rows": [...]} and MLflow's
    /invocations answer class names, probabilities and the model version; an invalid
    row is refused naming the row, the field and the allowed values. A promotion is
    served without a restart.

    Reads the champion at MLFLOW_TRACKING_URI. Writes every served row to the feature
    group <dataset> (origin=live, event time = request time, label null) and its
    prediction to <dataset>_predictions, in batches; SIGTERM or Ctrl-C writes what is
    buffered (a SIGKILL loses at most the rows not written yet). For several worker
    processes, see the README (gunicorn).
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.serving.server import build_app, serve_forever

    if not 1 <= port <= 65535:
        raise SmlError(f"--port must be between 1 and 65535, got {port}")
    if flush_rows < 1:
        raise SmlError(f"--flush-rows must be >= 1, got {flush_rows}")
    if not 0.01 <= flush_seconds <= 86400:  # also refuses nan
        raise SmlError(f"--flush-seconds must be 0.01..86400, got {flush_seconds}")
    spec = get_dataset(dataset)
    check_can_listen(host, port, what="the model")
    app = build_app(spec, open_feature_store(settings), settings, flush_rows=flush_rows, flush_s=flush_seconds)
    from serverless_ml.sqlite_exit import exit_on_sigterm

    exit_on_sigterm()  # SIGTERM stops it as Ctrl-C does: the buffered rows are written on the way out
    version = app.served.version

    def ready() -> None:
        click.echo(f"serving {spec.name} champion version {version} on http://{host}:{port}/predict "
                   f"(and /invocations); recording served rows; Ctrl-C stops it")

    try:
        serve_forever(app, host, port, ready)
    except KeyboardInterrupt:
        pass


def refuse_store_file(settings: Settings) -> None:
    """For commands that do not open the local store themselves: its path must not be a file."""
    if settings.feature_store == "local" and settings.store_dir.exists() and not settings.store_dir.is_dir():
        raise SmlError(f"feature store path {settings.store_dir} is a file, expected a directory")


def check_can_listen(host: str, port: int, what: str = "the site") -> None:
    """Fail in one line, before the site is built, when ``host:port`` cannot be served
    (an unknown host, an address of another machine, a port in use): Flask would print
    several lines and exit 1."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SmlError(f"--host {host!r} is not an address to listen on ({getattr(exc, 'strerror', None) or exc})") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(address)
        except OSError as exc:
            hint = "another program listens there; choose another --port" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise SmlError(f"cannot serve {what} on {host}:{port}: {hint}") from None


@cli.command("main", short_help="The whole loop for one dataset, as MLflow project runs under one `main` run.")
@dataset_option()
@click.option("--trials", default=defaults.TRAIN_TRIALS, show_default=True, type=int, help="Optuna trials of the train step.")
@click.option("--days", default=defaults.SIMULATE_DAYS, show_default=True, type=int, help="Days the simulate step replays.")
@click.option("--drift", default="", help="Drift episode's shifts, e.g. 'age+15,fare*2'.")
@click.option("--drift-from", default=0, type=int, help="First day of the drift episode (0: none).")
@click.option("--drift-days", default=0, type=int, help="Length of the drift episode in days.")
@click.option("--label-delay", default=defaults.SIMULATE_LABEL_DELAY, show_default=True, type=int,
              help="Days after its day a simulated row's label arrives.")
@click.option("--label-share", default=defaults.SIMULATE_LABEL_SHARE, show_default=True, type=float,
              help="Share of the simulated rows whose label ever arrives (0..1).")
@click.option("--store-dir", default="", help="Local feature store directory [env SML_STORE_DIR].")
def main_command(dataset: str, trials: int, days: int, drift: str, drift_from: int, drift_days: int,
                 label_delay: int, label_share: float, store_dir: str) -> None:
    """The whole loop for one dataset: features, train, simulate (up to yesterday), daily
    (today's rows) and batch_inference (today's batch), each an `mlflow run` of this
    project's entry point nested under one `main` run.

    Logs the main run and the steps' runs (<dataset>-<step>-<date>) in experiment
    <dataset>-pipeline; prints a line as each step starts (each step prints its own
    progress and result), then a summary: the champion, the batches and alerts of the
    days covered, and the commands that show them.
    """
    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.synthetic import parse_drift
    from serverless_ml.pipelines.main import MainOptions, run_main, summarize, where_to_look
    from serverless_ml.pipelines.simulate import SimulateOptions
    from serverless_ml.settings import resolve_settings
    from serverless_ml.tracking import configure_tracking, sqlite_database_path

    # Every step's input is checked now, before any run is started or any step has written.
    options = MainOptions(dataset, trials, days, drift, drift_from, drift_days, label_delay=label_delay,
                          label_share=label_share)
    spec = get_dataset(dataset)
    today = dt.datetime.now(dt.timezone.utc).date()
    SimulateOptions(
        days=days, end_date=today - dt.timedelta(days=1), drift=parse_drift(drift, spec),
        drift_from=drift_from or None, drift_days=drift_days or None, label_delay=label_delay, label_share=label_share,
    )
    settings = resolve_settings(store_dir=_blank_to_none(store_dir))
    # The steps run in the project's folder: a relative SQLite database would be another
    # file there (MLflow hands its tracking URI to the steps as it is).
    database = sqlite_database_path(settings.tracking_uri)
    if database is not None:
        query = settings.tracking_uri.split("?", 1)[1] if "?" in settings.tracking_uri else ""
        # resolved again, not replaced: the Optuna folder is derived from the tracking URI
        settings = resolve_settings(store_dir=_blank_to_none(store_dir),
                                    tracking_uri=f"sqlite:///{database}" + (f"?{query}" if query else ""))
    refuse_store_file(settings)
    if settings.feature_store == "local":
        # What the first step would do, done before any run is started: a folder that cannot
        # be made fails here in one line (found by a user trial: `--store-dir /proc/nope` left
        # FAILED main and features runs and printed two lines).
        try:
            settings.store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SmlError(f"feature store folder {settings.store_dir} cannot be created ({exc.strerror or exc})") from None
    tracker = configure_tracking(settings)
    uri = tracker.uri
    # The steps run in the project's folder: every path they are given is absolute (a
    # relative spec file, store or SQLite database would be looked up there).
    spec_file = str(spec.spec_path) if spec.spec_path is not None else None
    options = dataclasses.replace(options, dataset=spec_file or spec.name, store_dir=str(settings.store_dir), name=spec.name)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    if os.environ.get("SML_DATA_DIR") and settings.data_dir is not None:
        os.environ["SML_DATA_DIR"] = str(settings.data_dir)
    if os.environ.get("SML_STORE_DIR"):
        os.environ["SML_STORE_DIR"] = str(settings.store_dir)
    if os.environ.get("SML_STATE_DIR"):
        os.environ["SML_STATE_DIR"] = str(settings.state_dir)
    quiet = output_settings()["quiet"]
    # The steps are `sml` processes too: they inherit --verbose and --quiet.
    for name, given in (("SML_VERBOSE", output_settings()["verbose"]), ("SML_QUIET", quiet)):
        if given:
            os.environ[name] = "1"

    def show_step(done: int, total: int, entry_point: str) -> None:
        # A line per step, terminal or not: the steps draw their own bars in between.
        if not quiet and done < total:
            click.echo(f"==> {spec.name} {done + 1}/{total}: {entry_point}", err=True)

    look = where_to_look(uri, _blank_to_none(store_dir), spec_file)
    report = run_main(options, today, progress=show_step)
    summary = summarize(options, report, today, look, tracker.client)
    click.echo("\n".join(summary.lines()))


@cli.command(short_help="Run daily, infer and retraining on cron schedules (UTC), unattended.")
@dataset_option("Dataset to run (repeatable).", multiple=True, default=[defaults.DATASET])
@click.option("--daily-cron", default=defaults.SCHEDULE_DAILY_CRON, show_default=True, help="When `daily` runs (cron, UTC).")
@click.option("--infer-cron", default=defaults.SCHEDULE_INFER_CRON, show_default=True, help="When `infer` runs (cron, UTC).")
@click.option("--retrain-cron", default=defaults.SCHEDULE_RETRAIN_CRON, show_default=True, help="When retraining runs (cron, UTC).")
@click.option("--rows", default=defaults.DAILY_ROWS, show_default=True, type=int, help="Synthetic rows per day.")
@click.option("--seed", default=defaults.DAILY_SEED, show_default=True, type=int, help="Seed of daily rows and retraining.")
@click.option("--retrain-trials", default=defaults.SIMULATE_RETRAIN_TRIALS, show_default=True, type=int, help="Optuna trials per retrain.")
@click.option("--catch-up", is_flag=True, help="First run the slots missed while the scheduler was down, in order.")
@click.option("--run-now", multiple=True, type=click.Choice(defaults.SCHEDULE_JOBS), help="Also run this job once at start.")
@click.option("--promote", default=defaults.INFER_PROMOTE, show_default=True, type=click.Choice(defaults.INFER_PROMOTE_MODES),
              help="The infer jobs' --promote (live with --retrain-on-alert).")
@click.option("--retrain-on-alert", is_flag=True,
              help="Retrain after a batch that raised an alert; the new version is challenger, promoted by --promote live.")
@click.option("--retrain-cooldown", default=defaults.SCHEDULE_RETRAIN_COOLDOWN_H, show_default=True, type=float,
              metavar="HOURS", help="No retrain on an alert within this many hours of the last retrain.")
@notify_option
@store_options
def schedule(
    datasets: tuple[str, ...], daily_cron: str, infer_cron: str, retrain_cron: str, rows: int, seed: int,
    retrain_trials: int, catch_up: bool, run_now: tuple[str, ...], promote: str, retrain_on_alert: bool,
    retrain_cooldown: float, settings: Settings, notify: tuple[Any, ...] = (),
) -> None:
    """Run the daily job, batch inference and retraining on their cron schedules (UTC).

    One process, no extra service; a job never runs twice at once, a failing job is
    logged and the schedule goes on; SIGINT/SIGTERM stop it cleanly. With
    --retrain-on-alert, a batch that raises an alert is followed by a retrain (unless one
    ran within --retrain-cooldown); the new version becomes challenger and the infer jobs
    promote it with --promote live.
    """
    import time

    from serverless_ml.datasets import get_dataset
    from serverless_ml.pipelines.schedule import ScheduleOptions, Scheduler, Shutdown, pipeline_jobs, stop_on_signals
    from serverless_ml.tracking import configure_tracking

    options = ScheduleOptions(daily_cron, infer_cron, retrain_cron, rows=rows, seed=seed, retrain_trials=retrain_trials,
                              notify=notify, promote=promote, retrain_on_alert=retrain_on_alert,
                              retrain_cooldown_h=retrain_cooldown)
    for name in datasets:
        get_dataset(name)
    logging.getLogger("serverless_ml").setLevel(logging.INFO)
    tracker = configure_tracking(settings)  # once: every job the scheduler runs uses it
    hide_mlflow_notes()  # retraining registers versions: the job's log line says which

    def clock() -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    jobs = pipeline_jobs(list(datasets), settings, options, clock, tracker)
    scheduler = Scheduler(jobs, settings.state_dir, clock, time.sleep)
    click.echo(f"scheduling {', '.join(datasets)}: daily '{daily_cron}', infer '{infer_cron}', retrain '{retrain_cron}' (UTC); Ctrl-C to stop")
    if retrain_on_alert:
        click.echo(f"retraining on alerts (cooldown {retrain_cooldown:g} h); infer promotes with --promote live")
    try:
        with stop_on_signals():
            scheduler.run(catch_up=catch_up, run_now=run_now)
    except Shutdown as stop:
        click.echo(f"stopped by {stop}", err=True)


SWITCHES = {
    "--include-synthetic": "--no-include-synthetic",
    "--fail-on-alert": "--no-fail-on-alert",
    "--replace": None,
    "--keep-existing": None,
    "--overwrite": None,
}
"""On/off switches that took a value before they became flags (``--fail-on-alert true``),
with their off form (``None``: off is the default, the switch left out)."""
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})


def switch_values_to_flags(args: Sequence[str], *, strict: bool = False) -> list[str]:
    """``--fail-on-alert true`` -> ``--fail-on-alert``, ``--fail-on-alert false`` ->
    ``--no-fail-on-alert`` (also ``--switch=value``), for each of :data:`SWITCHES`.

    The old form keeps working in crontabs and scripts written for it. ``strict`` (the
    MLproject entry points, which always pass a value): the value must be a true/false
    word or empty (unset), else one ``error:`` line naming it; and any other option given
    an empty value is left out, so that its default applies (``-P rows=`` as no ``--rows``).
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":  # what follows is another program's (`sml tracking-server -- ...`)
            return out + list(args[i:])
        name, equals, value = token.partition("=")
        following = args[i + 1] if i + 1 < len(args) else None
        # Commands take no arguments: a word after a switch can only be meant as its value.
        if name in SWITCHES and not equals and following is not None and (strict or not following.startswith("-")):
            value, equals, i = following, "=", i + 1
        if strict and name.startswith("--") and name not in SWITCHES and not equals and following is not None \
                and not following.strip():
            i += 2  # an empty MLproject value means "not set": the option's own default applies
            continue
        if name in SWITCHES and equals:
            word = value.strip().lower()
            if word in TRUE_WORDS:
                out.append(name)
            elif word in FALSE_WORDS:
                off = SWITCHES[name]
                out += [off] if off else []
            elif strict and not word:
                pass  # an empty MLproject value: the switch's default
            elif strict:
                parameter = name.removeprefix("--").replace("-", "_")
                raise SmlError(f"{name} (MLproject parameter {parameter}) takes true or false, got {value!r}")
            else:
                off = f" or {SWITCHES[name]}" if SWITCHES[name] else ""
                raise SmlError(f"{name} is a switch: write {name}{off}, without a value (got {value!r})")
        else:
            out.append(token)
        i += 1
    return out


def _verbose_requested(args: Sequence[str]) -> bool:
    return "--verbose" in args or "-v" in args or os.environ.get("SML_VERBOSE", "").strip().lower() in TRUE_WORDS


def quiet_missing_glyphs() -> None:
    """matplotlib warns, once per character, when a class name has a character its font
    lacks (CJK, emoji): eight lines on stderr for one ``sml train``. The figure shows a box
    for it; the names are in the JSON tables beside it."""
    import warnings

    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)


def main(argv: Sequence[str] | None = None, *, strict_switches: bool = False) -> None:
    """Run ``sml``; turn expected failures into one line and a non-zero exit.

    ``strict_switches``: the MLproject entry points' form of the on/off switches
    (:func:`switch_values_to_flags`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbose_requested(args)
    from serverless_ml.system_faults import ignore_file_size_signal

    ignore_file_size_signal()
    quiet_missing_glyphs()
    try:
        args = switch_values_to_flags(args, strict=strict_switches)
        cli.main(args=args, prog_name="sml", standalone_mode=False)
    except SmlError as exc:
        verbose = verbose or _verbose_requested(())
        if verbose:
            click.echo(scrub_known(traceback.format_exc()).rstrip("\n"), err=True)
        _error_line(scrub_known(f"error: {exc}"), strict_switches)
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # pragma: no cover - click >= 8.2
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "sml"
        _error_line(f"error: {exc.format_message()} (see '{command} --help')", strict_switches)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _error_line(f"error: {exc.format_message()}", strict_switches)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - a bug (its traceback), or a fault of the machine (one line)
        from serverless_ml.system_faults import describe

        fault = describe(exc)
        if fault is None or verbose or _verbose_requested(()):
            click.echo(scrub_known(traceback.format_exc()).rstrip("\n"), err=True)
        if fault is None:
            sys.exit(1)
        _error_line(scrub_known(f"error: {fault}"), strict_switches)
        sys.exit(fault.exit_code)


def _error_line(line: str, project_run: bool) -> None:
    """Print the ``error:`` line; as an MLproject entry point (``project_run``), also tag
    the project run MLflow made for the command with it (MLflow marks it FAILED, nothing more)."""
    click.echo(line, err=True)
    if project_run and os.environ.get("MLFLOW_RUN_ID"):
        from serverless_ml.feature_store.hopsworks import ENV_API_KEY
        from serverless_ml.redaction import redact_urls
        from serverless_ml.tracking import record_project_run_error

        stored = redact_urls(scrub_known(line.removeprefix("error: ")))
        api_key = os.environ.get(ENV_API_KEY)
        record_project_run_error(stored.replace(api_key, "***") if api_key and len(api_key) >= 4 else stored)


def exit_process(code: int | str | None) -> None:
    """End the process with ``code`` (``SystemExit``'s forms: ``None`` is 0, a string is
    printed and exits 1) after what a normal exit runs on the Python side (threading's
    exit callbacks and the non-daemon threads joined, ``atexit`` handlers, stdio flushed), through ``os._exit``.

    Skipping the C runtime's exit is the point: pyarrow's native thread pools (the Parquet
    and dataset readers behind every Delta table read) are torn down by static destructors
    there, and a worker still alive at that moment aborts the finished process with
    ``terminate called without an active exception`` and SIGABRT, at random
    (apache/arrow#34314). Seen in CI on ``sml labels``: the right ``error:`` line, then
    exit -6 instead of 2.
    """
    import atexit
    import threading

    if isinstance(code, str):
        click.echo(code, err=True)
        code = 1
    status = 0 if code is None else int(code)
    # What the interpreter does first at exit: the threading module's exit callbacks (a
    # ThreadPoolExecutor's idle workers are told to stop there), then the non-daemon
    # threads joined. Joining those workers without the callbacks waits forever.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(status)


def console_main(argv: Sequence[str] | None = None, *, strict_switches: bool = False) -> None:
    """The ``sml`` console script (and ``python -m serverless_ml.cli``, the MLproject entry
    points): :func:`main`, then :func:`exit_process`. Tests call :func:`main`, which raises
    ``SystemExit`` like any click program."""
    try:
        main(argv, strict_switches=strict_switches)
    except SystemExit as exc:
        exit_process(exc.code)
    exit_process(0)


if __name__ == "__main__":
    console_main()
