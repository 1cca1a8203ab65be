"""Where a password may be, and how it is kept out of what a run writes.

A password reaches startline in a URL (``scheme://user:PASSWORD@host/…``, or a query parameter
whose name says it is a secret: ``?password=…``, ``?private_key_file_pwd=…``), or outside any URL
(PG* environment variables, ``~/.pgpass``, Snowflake's ``connections.toml``), which startline never
reads into anything it writes. What it writes (summary.json, report.html, the control plane's
RUN_STATUS, messages) holds URLs through these functions:

- ``masked_url``: the password shown as ``***`` (files people read: summary.json, the report);
- ``without_secrets``: the password left out (the control plane: a worker that reads the URL there
  connects with its own credentials — PG* environment, pgpass, or its ``--target``);
- ``mask``: any text with known secret values masked in every encoding an endpoint may echo.

The threat model is in docs/reliability.md ("Threat model")."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

SECRET_WORDS = ("password", "pwd", "token", "secret", "private_key", "passcode")
"""A connection parameter whose name contains one of these holds a secret."""

MASK = "***"


def is_secret_name(name: str) -> bool:
    """Does a parameter of this name hold a secret?"""
    return any(w in name.lower() for w in SECRET_WORDS)


def _split(url: str) -> tuple[str, str, str, str, str]:
    """``(scheme://, userinfo, rest of the authority and path, query, fragment)`` of ``url``,
    byte for byte (nothing re-quoted), so a URL without a secret comes back unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url, "", ""
    rest, hsep, fragment = rest.partition("#")
    rest, qsep, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    head = scheme + "://"
    return head, userinfo + at, host + slash + path, qsep + query, hsep + fragment


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret values a URL holds (its userinfo password; secret query parameters), as given
    and decoded."""
    _, userinfo, _, query, _ = _split(url)
    found: list[str] = []
    _, colon, password = userinfo.removesuffix("@").partition(":")
    if colon and password:
        found += [password, unquote_plus(password)]
    for pair in query.removeprefix("?").split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_name(unquote_plus(name)):
            found += [value, unquote_plus(value)]
    return tuple(dict.fromkeys(found))


def _replaced(url: str, replacement: str | None) -> str:
    head, userinfo, middle, query, fragment = _split(url)
    if not head:
        return url
    user, colon, password = userinfo.removesuffix("@").partition(":")
    if colon and password:
        userinfo = user + ("" if replacement is None else ":" + replacement) + "@"
    kept = []
    for pair in query.removeprefix("?").split("&") if query else ():
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_name(unquote_plus(name)):
            if replacement is None:
                continue
            pair = name + "=" + replacement
        kept.append(pair)
    return head + userinfo + middle + ("?" + "&".join(kept) if kept else "") + fragment


def masked_url(url: str) -> str:
    """``url`` with every password it holds shown as ``***``."""
    return _replaced(url, MASK)


def without_secrets(url: str) -> str:
    """``url`` with every password it holds left out (userinfo ``user@``, secret query parameters
    dropped)."""
    return _replaced(url, None)


def encodings(secret: str) -> set[str]:
    """The forms a secret may be echoed in: as given, URL-quoted, form-encoded, JSON- or
    repr-escaped."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1], repr(secret)[1:-1]} - {""}


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret masked by value in every form of ``encodings``, then any URL's
    userinfo password and anything still shaped like ``password=...`` masked by pattern."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        for form in sorted(encodings(secret), key=len, reverse=True):
            text = text.replace(form, MASK)
    text = re.sub(r"(://[^/:@\s]*):[^@/\s]*@", r"\1:***@", text)
    words = "|".join(SECRET_WORDS)
    return re.sub(rf"(?i)({words})([^,;&\s=:]*\s*[=:]\s*)[^\s&,;]+", r"\1\2***", text)


URL_SETTINGS = ("control", "target")
"""A scenario's settings that hold a URL."""


def _with_urls(settings: dict[str, Any], how: Callable[[str], str]) -> dict[str, Any]:
    return settings | {k: how(settings[k]) for k in URL_SETTINGS if isinstance(settings.get(k), str)}


def settings_masked(settings: dict[str, Any]) -> dict[str, Any]:
    """A scenario's settings with its URLs' passwords shown as ``***`` (summary.json, the report)."""
    return _with_urls(settings, masked_url)


def settings_without_secrets(settings: dict[str, Any]) -> dict[str, Any]:
    """A scenario's settings with its URLs' passwords left out (the control plane's RUN_STATUS)."""
    return _with_urls(settings, without_secrets)
