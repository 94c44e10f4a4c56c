"""Notifications: a JSON POST to each receiver for every alert and every alias move.

The pure part of ``--notify URL`` and ``SML_NOTIFY_URL`` (the jobs call it through
:mod:`serverless_ml.pipelines.notifications`, which reads and tags MLflow runs):

- :func:`resolve_receivers` turns the option's values (else the variable's,
  whitespace-separated) into :class:`Receiver` objects, refusing anything but an http(s)
  URL in one line;
- :class:`Notification` is what happened (dataset, kind, message, run and model, links,
  time); :func:`json_payload` and :func:`slack_payload` are what a receiver is sent (a
  Slack incoming webhook, ``https://hooks.slack.com/services/...``, gets
  ``{"text": ..., "blocks": [...]}``, any other URL the JSON object);
- :func:`send_notification` POSTs with retries and exponential backoff (the sleep is a
  parameter, so tests do not wait), and :class:`Notifier` sends to every receiver,
  writing one warning line per receiver that cannot be reached and never raising.

A receiver's URL may hold credentials (``user:password@``, ``?token=``, Slack's secret
path): it is shown only through :func:`serverless_ml.redaction.redact_uri`, in its
``repr``, every log line and the tags that record a delivery. Nothing happens on import.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from serverless_ml import defaults
from serverless_ml.errors import SmlError
from serverless_ml.redaction import redact_uri, scrub

log = logging.getLogger("serverless_ml.notify")

ENV_NOTIFY_URL = "SML_NOTIFY_URL"
"""Receivers when no ``--notify`` is given: one or more URLs separated by whitespace (a URL
holds no unencoded whitespace; a comma may be part of one)."""
ENV_MLFLOW_UI_URL = "SML_MLFLOW_UI_URL"
"""The MLflow UI's URL (as ``sml dashboard --mlflow-ui-url``): the base of the links."""

SLACK_HOST = "hooks.slack.com"
ALERT_SUFFIX = "_alert"
ALIAS_MOVE = "alias_move"
"""The kind of a notification that an alias moved (the alerts' kinds end in ``_alert``)."""
SOURCE = "serverless-ml"
RETRY_STATUSES = frozenset({408, 425, 429})
"""HTTP statuses worth another try besides 5xx (timeout, too early, too many requests)."""


_HOST_NAME = re.compile(r"[A-Za-z0-9._~%:-]+")
"""The characters of a host name or an IP address (IPv6 without its brackets)."""


@dataclass(frozen=True)
class Receiver:
    """Where notifications go: an http(s) URL, shown only masked (:attr:`shown`)."""

    url: str

    def __post_init__(self) -> None:
        try:
            parts = urllib.parse.urlsplit(self.url)
            port = parts.port  # a port that is not a number, or out of range, raises here
        except ValueError as exc:
            raise SmlError(f"notification receiver {self.shown!r} is not a valid URL ({exc})") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise SmlError(f"notification receiver {self.shown!r} is not an http(s) URL")
        if any(ch.isspace() for ch in self.url) or not _HOST_NAME.fullmatch(parts.hostname):
            raise SmlError(f"notification receiver {self.shown!r} has an invalid host name (or a space)")
        if port == 0:
            raise SmlError(f"notification receiver {self.shown!r}: port 0 is not a port to send to")

    def __repr__(self) -> str:
        return f"Receiver({self.shown!r})"

    @property
    def shown(self) -> str:
        """The URL with its credentials masked: for logs, tags and messages (a URL too
        malformed to mask is shown as its scheme only)."""
        try:
            return redact_uri(self.url)
        except ValueError:
            return f"{self.url.split(':', 1)[0][:10]}://***"

    @property
    def slack(self) -> bool:
        """A Slack incoming webhook (its payload is Slack's ``{"text": ...}``)."""
        return (urllib.parse.urlsplit(self.url).hostname or "").lower() == SLACK_HOST


def resolve_receivers(options: Sequence[str], environ: Mapping[str, str]) -> tuple[Receiver, ...]:
    """The receivers of a job: the ``--notify`` values given, else :data:`ENV_NOTIFY_URL`'s
    URLs (whitespace-separated); blank values are unset, a repeated URL counts once.

    Raises:
        SmlError: a value is not an http(s) URL (named masked, with where it came from).
    """
    given = [value.strip() for value in options if value and value.strip()]
    source = "--notify"
    if not given:
        given = environ.get(ENV_NOTIFY_URL, "").split()
        source = ENV_NOTIFY_URL
    receivers: list[Receiver] = []
    for url in dict.fromkeys(given):
        try:
            receivers.append(Receiver(url))
        except SmlError as exc:
            raise SmlError(f"{source}: {exc}") from None
    return tuple(receivers)


def receiver_labels(receivers: Sequence[Receiver]) -> dict[Receiver, str]:
    """How each receiver is named where a delivery is recorded: its masked URL, followed by
    `` #2``, `` #3``... for the second and later receivers whose masked URLs are the same
    (two Slack webhooks both show as ``https://hooks.slack.com/services/***``). No digest of
    the URL is kept: a weak password could be found from it. (Reordering such receivers
    between jobs can make one of them get a batch's alert again, or miss it.)"""
    labels: dict[Receiver, str] = {}
    count: dict[str, int] = {}
    for receiver in receivers:
        shown = receiver.shown
        count[shown] = count.get(shown, 0) + 1
        labels[receiver] = shown if count[shown] == 1 else f"{shown} #{count[shown]}"
    return labels


def alert_kind(message: str) -> str:
    """The kind of an alert from its message (``"drift alert: 2 feature(s)..."`` ->
    ``drift_alert``; ``"accuracy alert (estimated: ...)..."`` -> ``accuracy_alert``)."""
    head = message.split(":", 1)[0].split("(", 1)[0].strip().lower()
    word = head.removesuffix(" alert").strip() if head.endswith(" alert") else ""
    return f"{'_'.join(word.split())}{ALERT_SUFFIX}" if word else ALERT_SUFFIX.lstrip("_")


def link_base(tracking_uri: str | None, ui_url: str | None = None) -> str | None:
    """The MLflow UI's URL that links start from: ``ui_url`` when given, else the tracking
    URI when it is an http(s) server; ``None`` for a database (a SQLite file has no UI
    address). Its user information, query and fragment are dropped: a link is shown to
    whoever reads the message."""
    for candidate in (ui_url, tracking_uri):
        if candidate and candidate.strip().lower().startswith(("http://", "https://")):
            parts = urllib.parse.urlsplit(candidate.strip())
            netloc = parts.netloc.rsplit("@", 1)[-1]
            return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return None


def run_link(base: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """``<base>/#/experiments/<id>/runs/<run_id>`` (the site's run links), or ``None``."""
    if base is None or not experiment_id or not run_id:
        return None
    return f"{base}/#/experiments/{urllib.parse.quote(str(experiment_id))}/runs/{urllib.parse.quote(run_id)}"


def model_link(base: str | None, name: str | None, version: str | int | None) -> str | None:
    """``<base>/#/models/<name>/versions/<v>``, or ``None``."""
    if base is None or not name or version in (None, ""):
        return None
    return f"{base}/#/models/{urllib.parse.quote(name)}/versions/{urllib.parse.quote(str(version))}"


@dataclass(frozen=True)
class Notification:
    """One event: an alert of a batch or an alias move.

    Attributes:
        dataset: The dataset's name.
        kind: ``<name>_alert`` (``accuracy_alert``, ``drift_alert``) or :data:`ALIAS_MOVE`.
        message: The sentence the job printed or logged.
        time: When it was decided (ISO 8601, UTC).
        run_id: The monitoring run of the batch, or the run that moved the alias.
        run_url: Its page in the MLflow UI, when the tracking store has one.
        model_name: The registered model.
        model_version: The version that scored the batch, or that the alias now names.
        model_url: The version's page in the MLflow UI, when there is one.
        as_of: The batch's date (alerts).
        alias: The alias that moved (alias moves).
    """

    dataset: str
    kind: str
    message: str
    time: str
    run_id: str | None = None
    run_url: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_url: str | None = None
    as_of: str | None = None
    alias: str | None = None

    @property
    def title(self) -> str:
        """``titanic: drift alert (batch 2024-03-01)``, ``titanic: champion is version 3``."""
        if self.kind == ALIAS_MOVE:
            return f"{self.dataset}: {self.alias} is version {self.model_version}"
        batch = f" (batch {self.as_of})" if self.as_of else ""
        return f"{self.dataset}: {self.kind.replace('_', ' ')}{batch}"


def json_payload(notification: Notification) -> dict[str, Any]:
    """The JSON object a receiver gets (``null`` where unknown)::

        {"source": "serverless-ml", "dataset": ..., "kind": ..., "message": ..., "time": ...,
         "batch_date": ... (alerts), "alias": ... (alias moves),
         "run": {"id": ..., "url": ...}, "model": {"name": ..., "version": ..., "url": ...}}
    """
    n = notification
    return {
        "source": SOURCE, "dataset": n.dataset, "kind": n.kind, "message": n.message, "time": n.time,
        "batch_date": n.as_of, "alias": n.alias,
        "run": {"id": n.run_id, "url": n.run_url},
        "model": {"name": n.model_name, "version": n.model_version, "url": n.model_url},
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_ref(label: str, url: str | None) -> str:
    return f"<{url}|{_slack_escape(label)}>" if url else f"`{_slack_escape(label)}`"


def slack_payload(notification: Notification) -> dict[str, Any]:
    """What a Slack incoming webhook gets: ``text`` (the notification, also what a client
    without blocks shows) and one mrkdwn section block with the run and model linked when
    there are links."""
    n = notification
    refs = []
    if n.run_id:
        refs.append(f"run {_slack_ref(n.run_id, n.run_url)}")
    if n.model_name:
        label = f"{n.model_name} version {n.model_version}" if n.model_version else n.model_name
        refs.append(f"model {_slack_ref(label, n.model_url)}")
    text = f"*{_slack_escape(n.title)}*\n{_slack_escape(n.message)}"
    if refs:
        text += "\n" + " · ".join(refs)
    text += f"\n{n.time}"
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def request_body(receiver: Receiver, notification: Notification) -> bytes:
    """The POST body for ``receiver``: Slack's shape for a Slack webhook, else the JSON object."""
    payload = slack_payload(notification) if receiver.slack else json_payload(notification)
    return json.dumps(payload).encode()


@dataclass(frozen=True)
class Delivery:
    """How a POST went: delivered or not, after how many tries, and why not (masked)."""

    receiver: Receiver
    delivered: bool
    attempts: int
    error: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: a redirected POST would become a GET
    without its body (and could carry the credentials elsewhere)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _request(receiver: Receiver, body: bytes) -> urllib.request.Request:
    parts = urllib.parse.urlsplit(receiver.url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": SOURCE})
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def send_notification(
    receiver: Receiver,
    notification: Notification,
    *,
    attempts: int = defaults.NOTIFY_ATTEMPTS,
    backoff_s: float = defaults.NOTIFY_BACKOFF_S,
    timeout_s: float = defaults.NOTIFY_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST ``notification`` to ``receiver``; retry a connection failure, a timeout, a 5xx
    or a 408/425/429 answer up to ``attempts`` tries in all, waiting ``backoff_s``, then
    twice that, ... between them. Any 2xx is delivered; another answer (3xx, 4xx) is final.
    Never raises: the result says what happened, its error masked."""
    body = request_body(receiver, notification)
    opener = urllib.request.build_opener(_NoRedirect)
    error = ""
    for attempt in range(1, attempts + 1):
        retry = True
        try:
            with opener.open(_request(receiver, body), timeout=timeout_s) as answer:
                answer.read(1024)
                return Delivery(receiver, True, attempt)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            retry = exc.code >= 500 or exc.code in RETRY_STATUSES
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            error = str(getattr(exc, "reason", exc)) or type(exc).__name__
        error = scrub(error, receiver.url)
        if not retry:
            return Delivery(receiver, False, attempt, error)
        if attempt < attempts:
            sleep(backoff_s * 2 ** (attempt - 1))
    return Delivery(receiver, False, attempts, error)


@dataclass
class Notifier:
    """Sends a job's notifications to its receivers; a receiver that could not be reached
    gets one warning line and nothing more from this job (each try would wait again).

    Attributes:
        receivers: Where to send.
        sleep: The wait between tries (tests pass one that records).
        failed: The receivers given up on, with why.
    """

    receivers: tuple[Receiver, ...]
    sleep: Callable[[float], None] = time.sleep
    attempts: int = defaults.NOTIFY_ATTEMPTS
    backoff_s: float = defaults.NOTIFY_BACKOFF_S
    timeout_s: float = defaults.NOTIFY_TIMEOUT_S
    failed: dict[Receiver, Delivery] = field(default_factory=dict)

    def send(self, notification: Notification, receivers: Iterable[Receiver] | None = None) -> list[Receiver]:
        """Send ``notification`` to ``receivers`` (default: all); returns those it reached."""
        reached = []
        for receiver in self.receivers if receivers is None else receivers:
            if receiver in self.failed:
                continue
            delivery = send_notification(receiver, notification, attempts=self.attempts, backoff_s=self.backoff_s,
                                         timeout_s=self.timeout_s, sleep=self.sleep)
            if delivery.delivered:
                reached.append(receiver)
                continue
            self.failed[receiver] = delivery
            log.warning("notification not delivered to %s (%s after %d attempt(s)); the job goes on, and sends this "
                        "receiver nothing more", receiver.shown, delivery.error, delivery.attempts)
        return reached


def utc_now_iso() -> str:
    """Now, UTC, ISO 8601 to the second (a notification's time)."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
