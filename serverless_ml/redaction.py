"""Secrets in URIs, and in messages about them: the one place that decides what is shown.

A URI carries a secret in two places: its user information
(``postgresql://user:PASSWORD@host/db``) and its query or fragment
(``?password=...``, ``&sslpassword=``, ``?token=``, ``X-Amz-Signature=``...); a webhook's
in its path too (Slack's ``https://hooks.slack.com/services/...``: :data:`SECRET_PATHS`).

- :func:`redact_uri` shows a URI with both masked (``***``).
- :func:`scrub` removes every piece of a URI's secrets from other text, such as a
  driver's error. With an unencoded ``@`` in the password, ``postgresql://u:PW@x@host``
  is read by libpq as password ``PW`` and host ``x@host``, and its message ("could not
  translate host name "x@host"") quotes the password's tail: the password, each part of
  it split at ``@``, ``:`` and ``/``, and their URL-decoded forms are all removed.
- :func:`remember` records a URI the process was given (tracking URI, Optuna storage,
  backend store, download URL); :func:`scrub_known` removes all their secrets from a
  text. The CLI passes its error line through it, and :func:`install_log_scrubber` every
  log record of the process (MLflow's retry warnings quote the driver's message).
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from dataclasses import dataclass

MASK = "***"

SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential|signature|^sig$|auth", re.IGNORECASE)
"""A query parameter whose (decoded) name matches holds a secret: password, passwd, pwd,
sslpassword, secret, token, access_token, key, apikey, sslkey, X-Amz-Credential, sig..."""

MIN_FREE_FRAGMENT = 4
"""A piece of a secret this long is removed wherever it occurs in a message; a shorter
one only where it stands alone (not next to a letter, digit, ``_``, ``-`` or ``.``), so
that removing a one-letter piece does not garble every word that holds the letter."""

SECRET_PATHS: tuple[tuple[str, str], ...] = (
    ("hooks.slack.com", "/services/"),
    ("hooks.slack.com", "/workflows/"),
    ("hooks.slack.com", "/triggers/"),
    ("discord.com", "/api/webhooks/"),
    ("discordapp.com", "/api/webhooks/"),
)
"""Webhook URLs whose path is the secret (host, path prefix): a Slack incoming webhook
(``https://hooks.slack.com/services/T.../B.../SECRET``) or a Discord one. Everything after
the prefix is masked, as a password would be."""

# "scheme://", "scheme:/", and "scheme//" (colon forgotten): what precedes the authority.
_HEAD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:?/+")
_SEPARATORS = re.compile(r"([&;])")
_PIECES = re.compile(r"[@:/]")


@dataclass(frozen=True)
class _Parts:
    """A URI cut where secrets sit. Parsed by hand, not with ``urllib.parse``: that one
    refuses some malformed URIs (``http://[x``) and misses user information in others
    (``postgresql//user:pw@host``), and both must still be masked."""

    head: str
    userinfo: str | None  # before the last '@' of the authority; None: none
    rest: str  # host, port and path
    query: str | None  # without '?'
    fragment: str | None  # without '#'

    @property
    def user(self) -> str:
        return (self.userinfo or "").partition(":")[0]

    @property
    def password(self) -> str | None:
        """Everything after the first ':' of the user information (``None``: no ':').
        In an http(s) URL a user information without ':' is a token
        (``https://TOKEN@host/...``): all of it is the secret."""
        if self.userinfo is None:
            return None
        if ":" not in self.userinfo:
            return self.userinfo if self.userinfo and self.head.lower().startswith(("http:", "https:")) else None
        return self.userinfo.partition(":")[2]


def _split(uri: str) -> _Parts:
    match = _HEAD.match(uri)
    head = match.group(0) if match else ""
    body, hashmark, fragment = uri[len(head):].partition("#")
    body, question, query = body.partition("?")
    before_at, at, rest = body.rpartition("@")
    userinfo: str | None = before_at
    if not at or "/" in before_at.partition(":")[0]:
        # No '@', or an '@' in the path (a user name holds no '/').
        userinfo, rest = None, body
    return _Parts(head, userinfo, rest, query if question else None, fragment if hashmark else None)


def _path_secret(rest: str) -> tuple[str, str | None]:
    """``rest`` (host, port and path) with a :data:`SECRET_PATHS` path masked, and the
    masked part (``None``: no secret path)."""
    host, slash, path = rest.partition("/")
    hostname = host.rpartition("@")[2].partition(":")[0].lower()
    for secret_host, prefix in SECRET_PATHS:
        if (hostname == secret_host or hostname.endswith("." + secret_host)) and (slash + path).startswith(prefix):
            secret = (slash + path)[len(prefix):]
            if secret:
                return host + prefix + MASK, secret
    return rest, None


def _decoded(text: str) -> list[str]:
    return list(dict.fromkeys([text, urllib.parse.unquote(text), urllib.parse.unquote_plus(text)]))


def _secret_values(name: str, value: str) -> list[str]:
    """The secrets ``name=value`` holds: all of ``value`` when the name says so, or when
    its decoded value is itself a list of settings one of which does
    (``odbc_connect=...;PWD=...``: then that inner value too)."""
    if SECRET_NAME.search(urllib.parse.unquote_plus(name)):
        return [value]
    inner = [item.partition("=") for item in re.split(r"[;&]", urllib.parse.unquote_plus(value))]
    nested = [v.strip() for key, eq, v in inner if eq and v.strip() and SECRET_NAME.search(key.strip())]
    return [value, *nested] if nested else []


def _mask_pairs(text: str) -> tuple[str, list[str]]:
    """``text`` (a query or fragment) with secret values masked, and those values."""
    out, secrets = [], []
    for item in _SEPARATORS.split(text):
        name, eq, value = item.partition("=")
        found = _secret_values(name, value) if eq and value else []
        out.append(f"{name}={MASK}" if found else item)
        secrets += found
    return "".join(out), secrets


def redact_uri(uri: str) -> str:
    """``uri`` with its password and secret query values replaced by ``***`` (safe for
    logs, params, tags and pages); a URI without secrets is returned unchanged."""
    parts = _split(uri)
    text = parts.head
    if parts.userinfo is not None:
        if parts.password is None:
            text += f"{parts.userinfo}@"
        else:
            text += f"{parts.user}:{MASK}@" if ":" in parts.userinfo else f"{MASK}@"
    text += _path_secret(parts.rest)[0]
    if parts.query is not None:
        text += "?" + _mask_pairs(parts.query)[0]
    if parts.fragment is not None:
        text += "#" + _mask_pairs(parts.fragment)[0]
    return text


def uri_secrets(uri: str) -> list[str]:
    """Every string that would give away a secret of ``uri``: the password and secret
    query values as written and URL-decoded, and each of their parts split at ``@``,
    ``:`` and ``/`` (longest first)."""
    parts = _split(uri)
    whole = [parts.password] if parts.password else []
    path_secret = _path_secret(parts.rest)[1]
    if path_secret:
        whole.append(path_secret)
    for section in (parts.query, parts.fragment):
        if section:
            whole += _mask_pairs(section)[1]
    found: list[str] = []
    for secret in whole:
        for form in _decoded(secret):
            found.append(form)
            found += [piece for piece in _PIECES.split(form) if piece]
    return sorted(set(found), key=lambda s: (-len(s), s))


def _remove(text: str, secrets: list[str]) -> str:
    for secret in secrets:  # longest first: a piece never splits a longer match
        if len(secret) >= MIN_FREE_FRAGMENT:
            text = text.replace(secret, MASK)
        elif secret in text:
            text = re.sub(rf"(?<![\w.\-]){re.escape(secret)}(?![\w.\-])", MASK, text)
    return text


def scrub(text: str, *uris: str | None) -> str:
    """``text`` (a driver's or library's message about ``uris``) without any piece of
    their secrets."""
    secrets = sorted({s for uri in uris if uri for s in uri_secrets(uri)}, key=lambda s: (-len(s), s))
    return _remove(text, secrets) if secrets else text


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_urls(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_uri` (for text that is
    stored, where a URL the user typed may carry a password no process remembered)."""
    return _URL.sub(lambda match: redact_uri(match.group(0)), text)


# --- what this process was given -------------------------------------------------------

_KNOWN: list[str] = []
_KNOWN_LOCK = threading.Lock()


def remember(*uris: str | None) -> None:
    """Remember the secrets of URIs this process uses, for :func:`scrub_known`."""
    with _KNOWN_LOCK:
        known = set(_KNOWN)
        for uri in uris:
            if uri:
                known.update(uri_secrets(uri))
        _KNOWN[:] = sorted(known, key=lambda s: (-len(s), s))


def scrub_known(text: str) -> str:
    """``text`` without any piece of the secrets :func:`remember` was given."""
    secrets = list(_KNOWN)
    return _remove(text, secrets) if secrets else text


_SCRUBBER_INSTALLED = False


def install_log_scrubber() -> None:
    """Pass every log record of this process (its message and traceback) through
    :func:`scrub_known`, whatever logger or handler it goes to. Installed once, by the
    commands and the site; nothing happens on import."""
    global _SCRUBBER_INSTALLED
    if _SCRUBBER_INSTALLED:
        return
    make_record = logging.getLogRecordFactory()

    def scrubbed_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if not _KNOWN:
            return record
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - logging reports a bad format itself
            return record
        clean = scrub_known(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub_known(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(scrubbed_record)
    _SCRUBBER_INSTALLED = True
