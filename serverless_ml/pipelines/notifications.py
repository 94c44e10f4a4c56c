"""The jobs' notifications: a batch's alerts (``sml infer``, ``sml schedule``'s infer) and
alias moves (``sml train``, retraining, a live promotion), sent to the ``--notify``
receivers through :mod:`serverless_ml.notify`.

Reads: the monitoring run of the batch (its alert messages, date and model version) or,
when a job scored nothing new, the latest batch's run. Writes: on that run, one tag per
alert kind (:func:`registry.notified_tag`) naming the receivers (masked) it was delivered
to. A batch's alert is therefore sent once to each receiver: running ``sml infer`` again
(nothing new to score) sends nothing, unless the alert could not be delivered before (the
receiver was down, the job was killed): then the next job delivers it. Runs ``sml simulate``
logged are never notified (a replayed past, not news).

A notification that cannot be delivered never fails the job (one warning line naming the
receiver, masked: :class:`serverless_ml.notify.Notifier`); the runs' tags never hold a
receiver's credentials.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from serverless_ml import registry
from serverless_ml.notify import (
    ALIAS_MOVE,
    ENV_MLFLOW_UI_URL,
    Notification,
    Notifier,
    Receiver,
    alert_kind,
    link_base,
    model_link,
    receiver_labels,
    run_link,
    utc_now_iso,
)
from serverless_ml.redaction import scrub_known
from serverless_ml.tracking import Tracking, first_line

log = logging.getLogger("serverless_ml.notify")


def _not_sent(exc: Exception) -> None:
    """A job's notifications never fail the job: reading or tagging the run failed (the
    tracking store went away after the batch was logged) is one warning line."""
    log.warning("notifications not sent (%s: %s); the job goes on", type(exc).__name__,
                scrub_known(first_line(exc, "")))


def _notifier(receivers: Sequence[Receiver] | Notifier) -> Notifier:
    return receivers if isinstance(receivers, Notifier) else Notifier(tuple(receivers))


def _links_base(tracker: Tracking) -> str | None:
    return link_base(tracker.uri, os.environ.get(ENV_MLFLOW_UI_URL))


def latest_batch_run(dataset: str, tracker: Tracking) -> Any | None:
    """The monitoring run of ``dataset``'s latest batch (``None``: none yet)."""
    experiment = tracker.client.get_experiment_by_name(registry.monitoring_experiment(dataset))
    if experiment is None:
        return None
    runs = tracker.client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _run_time(run: Any) -> str:
    """When the batch's alert was raised: its monitoring run's start (ISO 8601, UTC), so an
    alert delivered late still says when it fired."""
    import datetime as dt

    if not run.info.start_time:
        return utc_now_iso()
    moment = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.timezone.utc)
    return moment.replace(microsecond=0).isoformat()


def notify_batch(
    dataset: str, run_id: str | None, receivers: Sequence[Receiver] | Notifier, tracker: Tracking,
    time: str | None = None,
) -> list[tuple[Notification, list[Receiver]]]:
    """Send each alert of the monitoring run ``run_id`` (``None``: the latest batch's run)
    to the receivers it has not been delivered to, and record the deliveries on the run.
    Returns each notification sent and the receivers it reached. Never raises."""
    try:
        return _notify_batch(dataset, run_id, _notifier(receivers), tracker, time)
    except Exception as exc:  # noqa: BLE001 - one line, and the job goes on
        _not_sent(exc)
        return []


def _notify_batch(dataset: str, run_id: str | None, notifier: Notifier, tracker: Tracking,
                  time: str | None) -> list[tuple[Notification, list[Receiver]]]:
    if not notifier.receivers:
        return []
    run = tracker.client.get_run(run_id) if run_id is not None else latest_batch_run(dataset, tracker)
    if run is None:
        return []
    tags = run.data.tags
    if tags.get(registry.SIMULATED_TAG) == "true" or tags.get(registry.ALERT_TAG) != "true":
        return []
    messages = [m for m in tags.get(registry.ALERTS_TAG, "").split(registry.MESSAGE_SEPARATOR) if m.strip()]
    base = _links_base(tracker)
    name, version = registry.model_name(dataset), tags.get(registry.MODEL_VERSION_TAG)
    labels = receiver_labels(notifier.receivers)
    sent: list[tuple[Notification, list[Receiver]]] = []
    for message in messages:
        kind = alert_kind(message)
        tag = registry.notified_tag(kind)
        done = [r for r in tags.get(tag, "").split(registry.MESSAGE_SEPARATOR) if r]
        pending = [r for r in notifier.receivers if labels[r] not in done]
        if not pending:
            continue
        notification = Notification(
            dataset=dataset, kind=kind, message=message, time=time or _run_time(run),
            run_id=run.info.run_id, run_url=run_link(base, run.info.experiment_id, run.info.run_id),
            model_name=name, model_version=version, model_url=model_link(base, name, version),
            as_of=tags.get(registry.AS_OF_TAG),
        )
        reached = notifier.send(notification, pending)
        if reached:
            done += [labels[r] for r in reached if labels[r] not in done]
            tags[tag] = registry.MESSAGE_SEPARATOR.join(done)
            tracker.client.set_tag(run.info.run_id, tag, tags[tag])
            sent.append((notification, reached))
    return sent


def sent_notes(sent: list[tuple[Notification, list[Receiver]]]) -> list[str]:
    """A line per delivery, for a job's summary (receivers masked)."""
    return [f"{n.kind.replace('_', ' ')} of {n.as_of} sent to {r.shown}" for n, reached in sent for r in reached]


def notify_alias_move(
    dataset: str, version: str | int, alias: str, message: str, receivers: Sequence[Receiver] | Notifier,
    tracker: Tracking, *, run_id: str | None = None, experiment_id: str | None = None, time: str | None = None,
) -> Notification | None:
    """Tell the receivers that ``alias`` of ``dataset``'s model now names ``version``
    (``message`` says why), with links to the run that moved it (a training run, or the
    monitoring run behind a live promotion) and to the version. Returns the notification
    when at least one receiver got it. Never raises."""
    notifier = _notifier(receivers)
    if not notifier.receivers:
        return None
    base = _links_base(tracker)  # no MLflow call: nothing here can fail the job
    name = registry.model_name(dataset)
    notification = Notification(
        dataset=dataset, kind=ALIAS_MOVE, message=message, time=time or utc_now_iso(),
        run_id=run_id, run_url=run_link(base, experiment_id, run_id),
        model_name=name, model_version=str(version), model_url=model_link(base, name, version), alias=alias,
    )
    return notification if notifier.send(notification) else None


LIVE_PROMOTED_PREFIX = "promoted:"
"""How ``--promote live``'s decision line starts when it moved ``@champion``
(:func:`serverless_ml.pipelines.infer.apply_live_decision`)."""


def notify_live_promotion(
    dataset: str, decision: str | None, version: int | None, run_id: str | None,
    receivers: Sequence[Receiver] | Notifier, tracker: Tracking,
) -> Notification | None:
    """``sml infer --promote live`` moved ``@champion`` to ``version`` (``decision``, the
    job's decision line, says so and why): tell the receivers, linking the monitoring run
    whose paired evidence promoted it. Nothing when the decision was not to promote.
    Never raises."""
    if not decision or not decision.startswith(LIVE_PROMOTED_PREFIX) or version is None or run_id is None:
        return None
    try:
        experiment_id = tracker.client.get_run(run_id).info.experiment_id
    except Exception as exc:  # noqa: BLE001 - one line, and the job goes on
        _not_sent(exc)
        return None
    message = f"{registry.model_name(dataset)}: live promotion {decision}"
    return notify_alias_move(dataset, version, registry.CHAMPION, message, receivers, tracker, run_id=run_id,
                             experiment_id=experiment_id)


def notify_training(
    dataset: str, version: str, promoted: bool, outcome: str, reason: str, receivers: Sequence[Receiver] | Notifier,
    tracker: Tracking, *, run_id: str, experiment_id: str,
) -> list[Notification]:
    """The alias moves of a training job that registered ``version``: ``challenger``
    always, ``champion`` when ``promoted``."""
    notifier = _notifier(receivers)
    name = registry.model_name(dataset)
    moves = [(registry.CHALLENGER, f"{name}: {outcome}")]
    if promoted:
        moves.append((registry.CHAMPION, f"{name}: version {version} promoted to {registry.CHAMPION} ({reason})"))
    sent = [notify_alias_move(dataset, version, alias, message, notifier, tracker, run_id=run_id,
                              experiment_id=experiment_id) for alias, message in moves]
    return [n for n in sent if n is not None]
