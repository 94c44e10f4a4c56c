"""The notifications' pure core against a real HTTP receiver on 127.0.0.1: payload fields,
retries with backoff (the sleep recorded, not waited), what is final, a receiver that is
down, Slack's shape, links, receivers from options and environment, masking."""

from __future__ import annotations

import logging

import pytest

from receivers import hook_receiver
from serverless_ml import defaults
from serverless_ml.errors import SmlError
from serverless_ml.inference.monitoring import AlertRule, evaluate_alerts
from serverless_ml.notify import (
    ENV_NOTIFY_URL,
    Notification,
    Notifier,
    Receiver,
    alert_kind,
    json_payload,
    link_base,
    model_link,
    receiver_labels,
    resolve_receivers,
    run_link,
    send_notification,
)
from serverless_ml.pipelines.infer import InferOptions
from serverless_ml.redaction import redact_uri, scrub

pytestmark = pytest.mark.unit

PASSWORD = "pw-UNIT-93b1"
TOKEN = "tok-UNIT-5d20"
SLACK_SECRET = "xOxOsEcReT42"
ALERT = Notification(dataset="titanic", kind="drift_alert", message="drift alert: 1 feature(s) drifted (age): ...",
                     time="2024-03-02T00:15:00+00:00", run_id="r1", model_name="titanic", model_version="3",
                     as_of="2024-03-01")


def test_a_notification_arrives_with_every_field() -> None:
    sleeps: list[float] = []
    with hook_receiver() as up:
        delivery = send_notification(Receiver(up.url), ALERT, sleep=sleeps.append)
    assert (delivery.delivered, delivery.attempts, sleeps) == (True, 1, [])
    [request] = up.requests
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "source": "serverless-ml", "dataset": "titanic", "kind": "drift_alert", "message": ALERT.message,
        "time": ALERT.time, "batch_date": "2024-03-01", "alias": None, "run": {"id": "r1", "url": None},
        "model": {"name": "titanic", "version": "3", "url": None},
    }


def test_a_5xx_is_tried_again_with_exponential_backoff() -> None:
    sleeps: list[float] = []
    with hook_receiver(statuses=[500, 500]) as up:
        delivery = send_notification(Receiver(up.url), ALERT, sleep=sleeps.append)
    assert (delivery.delivered, delivery.attempts) == (True, 3)
    assert sleeps == [defaults.NOTIFY_BACKOFF_S, 2 * defaults.NOTIFY_BACKOFF_S]
    assert len(up.requests) == 3 and len({r.body for r in up.requests}) == 1


def test_tries_are_bounded_and_a_4xx_is_final() -> None:
    sleeps: list[float] = []
    with hook_receiver(then=503) as up:
        delivery = send_notification(Receiver(up.url), ALERT, sleep=sleeps.append)
    assert (delivery.delivered, delivery.attempts, delivery.error) == (False, defaults.NOTIFY_ATTEMPTS, "HTTP 503")
    assert len(up.requests) == defaults.NOTIFY_ATTEMPTS and len(sleeps) == defaults.NOTIFY_ATTEMPTS - 1
    with hook_receiver(statuses=[404]) as up:
        delivery = send_notification(Receiver(up.url), ALERT, sleep=sleeps.append)
    assert (delivery.delivered, delivery.attempts, delivery.error) == (False, 1, "HTTP 404")
    assert len(up.requests) == 1
    with hook_receiver(statuses=[429]) as up:
        assert send_notification(Receiver(up.url), ALERT, sleep=sleeps.append).attempts == 2


def test_a_receiver_that_does_not_answer_in_time_is_tried_again() -> None:
    sleeps: list[float] = []
    with hook_receiver(slow=1, delay_s=1.0) as up:
        delivery = send_notification(Receiver(up.url), ALERT, timeout_s=0.2, sleep=sleeps.append)
    assert (delivery.delivered, delivery.attempts, sleeps) == (True, 2, [defaults.NOTIFY_BACKOFF_S])
    assert len(up.requests) == 2


def test_a_receiver_that_is_down_is_one_masked_line_and_is_not_tried_again(free_port, caplog) -> None:  # noqa: ANN001
    url = f"http://ops:{PASSWORD}@127.0.0.1:{free_port()}/hook?token={TOKEN}"
    sleeps: list[float] = []
    notifier = Notifier((Receiver(url),), sleep=sleeps.append)
    with caplog.at_level(logging.WARNING, logger="serverless_ml.notify"):
        assert notifier.send(ALERT) == []
        assert notifier.send(ALERT) == []
    assert len(sleeps) == defaults.NOTIFY_ATTEMPTS - 1, "the second notification does not try the dead receiver"
    [line] = caplog.messages
    assert line.startswith("notification not delivered to http://ops:***@127.0.0.1:")
    assert "token=***" in line and "Connection refused" in line
    assert PASSWORD not in line and TOKEN not in line


def test_credentials_reach_the_receiver_and_nothing_else() -> None:
    with hook_receiver() as up:
        receiver = Receiver(up.url_with(f"ops:{PASSWORD}", query=f"token={TOKEN}"))
        assert send_notification(receiver, ALERT).delivered
    [request] = up.requests
    assert request.path == f"/hook?token={TOKEN}"
    assert request.headers["Authorization"] == "Basic " + __import__("base64").b64encode(f"ops:{PASSWORD}".encode()).decode()
    shown = [repr(receiver), receiver.shown, repr(InferOptions(notify=(receiver,))), str(json_payload(ALERT))]
    assert not any(PASSWORD in text or TOKEN in text for text in shown)


def test_a_slack_webhook_gets_slacks_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Delivered for real, through a proxy that is the local receiver (no network)."""
    url = f"http://hooks.slack.com/services/T0001/B0002/{SLACK_SECRET}"
    with hook_receiver() as up:
        for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{up.port}")
        linked = Notification(**{**ALERT.__dict__, "run_url": "http://mlflow:5000/#/experiments/1/runs/r1"})
        assert send_notification(Receiver(url), linked).delivered
    [request] = up.requests
    assert request.path == url
    payload = request.json()
    assert set(payload) == {"text", "blocks"}
    assert payload["text"].startswith("*titanic: drift alert (batch 2024-03-01)*\ndrift alert: 1 feature(s) drifted (age)")
    assert "run <http://mlflow:5000/#/experiments/1/runs/r1|r1>" in payload["text"]
    assert "model `titanic version 3`" in payload["text"]
    assert payload["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": payload["text"]}}]
    assert Receiver(url).shown == "http://hooks.slack.com/services/***"
    assert SLACK_SECRET not in scrub(f"POST {url} failed", url)
    assert redact_uri(f"https://hooks.slack.com/services/T1/B2/{SLACK_SECRET}") == "https://hooks.slack.com/services/***"


def test_receivers_come_from_the_option_else_the_variable() -> None:
    env = {ENV_NOTIFY_URL: "  http://a.example/h \n https://b.example/h?x=1,2  http://a.example/h "}
    assert [r.url for r in resolve_receivers((), env)] == ["http://a.example/h", "https://b.example/h?x=1,2"]
    assert [r.url for r in resolve_receivers(("http://c.example/h",), env)] == ["http://c.example/h"]
    assert resolve_receivers(("", " "), {ENV_NOTIFY_URL: " "}) == ()
    with pytest.raises(SmlError, match=r"^--notify: notification receiver 'ftp://u:\*\*\*@x/' is not an http\(s\) URL$"):
        resolve_receivers((f"ftp://u:{PASSWORD}@x/",), {})
    with pytest.raises(SmlError, match=f"^{ENV_NOTIFY_URL}: .*'hooks.example' is not"):
        resolve_receivers((), {ENV_NOTIFY_URL: "hooks.example"})


@pytest.mark.parametrize(("url", "message"), [
    (f"http://user:{PASSWORD}@[::1", r"is not a valid URL \(Invalid IPv6 URL\)"),
    ("http://h:notaport/x", r"is not a valid URL \(Port could not be cast"),
    ("http://127.0.0.1:99999/x", r"is not a valid URL \(Port out of range"),
    ("http://exa mple.com/x", "has an invalid host name"),
    ("http://exa<mple.com/x", "has an invalid host name"),
    ("http://127.0.0.1:0/x", "port 0 is not a port to send to"),
])
def test_a_malformed_receiver_is_refused_in_one_line_without_its_password(url: str, message: str) -> None:
    """Found by a new user: a malformed URL was a traceback (IPv6) or passed the check and
    failed only at send time."""
    with pytest.raises(SmlError, match=f"^--notify: notification receiver .*{message}") as caught:
        resolve_receivers((url,), {})
    assert PASSWORD not in str(caught.value)


def test_alert_kinds_of_the_real_alert_messages() -> None:
    rule = AlertRule()
    alerts = evaluate_alerts(rule, 0.9, 40, 100, 40, 100, 0.5, ["age"], "2024-03-01")
    estimated = evaluate_alerts(rule, 0.9, 0, 0, 0, 0, None, [], estimated=(0.4, 0.3, 0.5, 100))
    kinds = [alert_kind(m) for m in [*alerts.messages, *estimated.messages]]
    assert kinds == ["accuracy_alert", "drift_alert", "accuracy_alert"]
    assert alert_kind("something odd happened") == "alert"


def test_links_only_for_an_http_mlflow_and_without_its_credentials() -> None:
    assert link_base("sqlite:////data/mlflow.db") is None
    assert link_base("postgresql://u:p@db/mlflow") is None
    base = link_base(f"https://ml:{PASSWORD}@mlflow.example:5000/?token={TOKEN}")
    assert base == "https://mlflow.example:5000"
    assert link_base("sqlite:///x.db", "http://ui.example/mlflow/") == "http://ui.example/mlflow"
    assert run_link(base, "7", "abc") == "https://mlflow.example:5000/#/experiments/7/runs/abc"
    assert model_link(base, "titanic", 3) == "https://mlflow.example:5000/#/models/titanic/versions/3"
    assert run_link(None, "7", "abc") is None and model_link(None, "titanic", 3) is None


@pytest.mark.parametrize("command", ["infer", "train", "schedule"])
def test_each_command_takes_notify_and_refuses_a_bad_one_before_anything(
    command: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    from serverless_ml.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_NOTIFY_URL, "http://fine.example/hook")
    with pytest.raises(SystemExit) as exited:
        main([command, "--notify", f"ftp://ops:{PASSWORD}@example.com/"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: --notify: notification receiver 'ftp://ops:***@example.com/' is not an http(s) URL\n"
    assert list(tmp_path.iterdir()) == []


def test_receivers_that_look_alike_masked_are_told_apart_without_their_secrets() -> None:
    first, second = (Receiver(f"https://hooks.slack.com/services/T1/B{i}/{SLACK_SECRET}{i}") for i in (1, 2))
    plain = Receiver("http://ops.example/hook")
    labels = receiver_labels([first, plain, second])
    assert labels == {first: "https://hooks.slack.com/services/***", plain: "http://ops.example/hook",
                      second: "https://hooks.slack.com/services/*** #2"}
