"""Secrets in URIs (issue 16, leaks): a password in the user information or in the query
is masked wherever a URI is shown, and no piece of it survives in a driver's message."""

from __future__ import annotations

import logging
import urllib.parse

import pytest

from serverless_ml import redaction
from serverless_ml.redaction import redact_uri, scrub, uri_secrets
from serverless_ml.tracking import first_line

pytestmark = pytest.mark.unit

HEAD, TAIL = "Head-Marker-31", "Tail-Marker-41"
SECRET = "Pw-Marker-5926"


@pytest.mark.parametrize(
    "uri",
    [
        f"postgresql://sml:{SECRET}@db.internal:5432/mlflow",
        f"postgresql://sml:{HEAD}@{TAIL}@127.0.0.1/mlflow",  # an unencoded '@'
        f"postgresql://sml:{urllib.parse.quote(HEAD + '@:/' + TAIL, safe='')}@h/db",  # encoded as the README says
        f"postgresql://127.0.0.1/db?user=sml&password={SECRET}",
        f"postgresql://127.0.0.1/db?user=sml&PassWord={SECRET}&sslmode=require",
        f"postgresql://127.0.0.1/db?sslpassword={SECRET}",
        f"postgresql://127.0.0.1/db?user=sml;pwd={SECRET}",
        f"postgresql://127.0.0.1/db?user=sml&pass%77ord={SECRET}",  # the name URL-encoded
        f"mysql://root@localhost/mlflow?passwd={urllib.parse.quote(HEAD + '&' + TAIL)}",
        f"https://host/data.csv?X-Amz-Signature={SECRET}&X-Amz-Credential={HEAD}",
        f"https://host/data.csv?access_token={SECRET}",
        f"https://host/data.csv#token={SECRET}",
        f"http://host/data.csv?API_KEY={SECRET}",
        f"https://{SECRET}@raw.example.org/data.csv",  # a token as the user information
        f"mssql+pyodbc:///?odbc_connect={urllib.parse.quote(f'DRIVER=x;UID=sa;PWD={SECRET};')}",
        f"postgresql//sml:{SECRET}@127.0.0.1:5432/x",  # malformed: a colon forgotten
        f"sml:{SECRET}@127.0.0.1/x",
        f"http://[bad:sml:{SECRET}@host/x",  # urllib cannot parse it
    ],
)
def test_redact_uri_masks_every_secret(uri: str) -> None:
    shown = redact_uri(uri)
    for marker in (SECRET, HEAD, TAIL):
        assert marker not in shown and marker not in urllib.parse.unquote(shown), shown
    assert redaction.MASK in shown
    quoted = scrub(f"could not connect to {uri} ({urllib.parse.unquote(uri)})", uri)
    assert all(marker not in quoted for marker in (SECRET, HEAD, TAIL)), quoted


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///tmp/mlflow.db", "http://127.0.0.1:5000", "postgresql://sml@h:5432/db?sslmode=require&application_name=x",
     "s3://bucket/a/b", "mlflow-artifacts:/1", "http://host/users/a@b.com", "https://host/f.csv?page=1&sep=%3B"],
)
def test_uris_without_secrets_are_shown_as_they_are(uri: str) -> None:
    assert redact_uri(uri) == uri
    assert uri_secrets(uri) == []


def test_the_drivers_message_loses_the_password_tail_after_an_unencoded_at() -> None:
    """libpq reads ``sml:HEAD@TAIL@host`` as password HEAD and host ``TAIL@host``."""
    uri = f"postgresql://sml:{HEAD}@{TAIL}@127.0.0.1:5432/mlflow"
    message = f'could not translate host name "{TAIL}@127.0.0.1" to address: Name or service not known'
    assert scrub(message, uri) == 'could not translate host name "***@127.0.0.1" to address: Name or service not known'
    short = "postgresql://sml:Pw-Marker@x@127.0.0.1/db"
    assert scrub('could not translate host name "x@127.0.0.1" (x-ray, box)', short) == (
        'could not translate host name "***@127.0.0.1" (x-ray, box)'  # a short piece only where it stands alone
    )


def test_every_decoded_piece_is_removed() -> None:
    uri = f"postgresql://sml:{urllib.parse.quote(HEAD + '@:/' + TAIL, safe='')}@h/db?password={urllib.parse.quote(SECRET + '/x')}"
    for text in (HEAD, TAIL, f"{HEAD}@:/{TAIL}", SECRET, f"{SECRET}/x", urllib.parse.quote(SECRET + "/x")):
        assert scrub(f"driver said {text}.", uri) == "driver said ***."


def test_first_line_scrubs_the_drivers_message() -> None:
    class DriverError(Exception):
        pass

    uri = f"postgresql://u:{HEAD}@{TAIL}@127.0.0.1/db?sslpassword={SECRET}"
    line = first_line(DriverError(f'host "{TAIL}@127.0.0.1" with {SECRET}\nDETAIL: {HEAD}'), uri)
    assert line == 'host "***@127.0.0.1" with ***'


def test_log_records_of_the_process_lose_the_secrets_it_was_given(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(redaction, "_KNOWN", [])
    monkeypatch.setattr(redaction, "_SCRUBBER_INSTALLED", False)
    try:
        redaction.remember(f"postgresql://u:{HEAD}@{TAIL}@127.0.0.1/db?token={SECRET}", None, "")
        redaction.install_log_scrubber()
        log = logging.getLogger("some.library")
        with caplog.at_level(logging.WARNING):
            log.warning("engine could not be created: %s", f'host "{TAIL}@127.0.0.1", token {SECRET}')
            try:
                raise RuntimeError(f"password {HEAD}")
            except RuntimeError:
                log.exception("failed")
        text = caplog.text
        assert "engine could not be created" in text and "RuntimeError" in text
        for marker in (HEAD, TAIL, SECRET):
            assert marker not in text
        assert redaction.scrub_known(f"error: {HEAD}") == "error: ***"
    finally:
        logging.setLogRecordFactory(factory)


def test_redact_urls_masks_the_password_of_every_url_in_a_text() -> None:
    from serverless_ml.redaction import redact_urls

    text = ("storage 'postgresql://u:pw-one@db:5432/optuna' unreachable; see https://h.example/x?token=pw-two "
            "and sqlite:///tmp/mlflow.db")
    redacted = redact_urls(text)
    assert "pw-one" not in redacted and "pw-two" not in redacted
    assert "postgresql://u:***@db:5432/optuna" in redacted and "sqlite:///tmp/mlflow.db" in redacted
    assert redact_urls("no url here") == "no url here"
