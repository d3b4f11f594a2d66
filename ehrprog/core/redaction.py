"""One guard for secrets: every text that may hold a connection string goes through :func:`redact`.

It replaces by ``***``:

* the password of a URL's user info, for any scheme (``postgresql://u:SECRET@h/db``,
  ``postgresql+psycopg://...``, ``duckdb://...``), the password running to the last ``@`` on its
  line that is followed by a host, so an unescaped ``@``, ``:``, ``/``, ``?``, ``#`` or space inside
  it is covered (a later ``@`` on the same line may widen the mask: more hidden, never less);
* secret parameters written ``key=value``: in a URL query (``?password=SECRET&...``) or a libpq
  connection string (``host=h password=SECRET dbname=d``, quoted values included), for the keys
  ``password``, ``passwd``, ``pwd``, ``pass``, ``sslpassword``, ``sslkey_password``;
* the value of ``PGPASSWORD`` (libpq's password from the environment) wherever it appears, when
  it is at least :data:`MIN_ENV_SECRET` characters long (shorter values would blank ordinary text).

``InputError`` redacts its message and file, the CLI redacts everything it prints, and the
database reader's logger carries a :class:`RedactingFilter`.
"""

from __future__ import annotations

import logging
import os
import re

#: Environment variables whose values are secrets.
ENV_SECRETS = ("PGPASSWORD",)
#: An environment secret shorter than this is not searched for (it would match ordinary text).
MIN_ENV_SECRET = 4
MASK = "***"

_URL_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*:/{1,2}[^\s:/@?#]*):(?P<secret>[^\n]*)@(?=[^\s@]*(?:[/?#\s'\"]|$))"
)
_KEY_VALUE = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_])(?:password|passwd|pwd|pass|sslpassword|sslkey_password)\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,)]*)",
    re.IGNORECASE,
)


def redact(text: object) -> str:
    """``str(text)`` with every password it holds replaced by ``***`` (see the module docstring)."""
    out = str(text)
    out = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", out)
    out = _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}" if m["secret"] else m[0], out)
    for name in ENV_SECRETS:
        secret = os.environ.get(name, "")
        if len(secret) >= MIN_ENV_SECRET:
            out = out.replace(secret, MASK)
    return out


def userinfo(uri: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme://, user, password, host and the rest)`` of a URI written by hand, its user info
    running to the last ``@`` (so a password may hold unencoded ``@ / ? # :`` or spaces), each
    part as written (percent-escapes kept); ``None`` without a scheme or user info."""
    match = re.match(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>.*)", uri, re.DOTALL)
    if match is None or "@" not in match["rest"]:
        return None
    info, _, host = match["rest"].rpartition("@")
    user, colon, password = info.partition(":")
    return match["scheme"], user, password if colon else None, host


def encoded_uri(uri: str) -> str:
    """``uri`` with its user and password percent-encoded (each decoded first, so an encoded one
    stays as it is), as libpq needs them: an unencoded ``/``, ``?`` or space in a password made
    it split the URI there and print the pieces (fragments of the password) in its errors."""
    from urllib.parse import quote, unquote

    parts = userinfo(uri)
    if parts is None:
        return uri
    scheme, user, password, host = parts
    encoded = quote(unquote(user), safe="") + ("" if password is None else ":" + quote(unquote(password), safe=""))
    return f"{scheme}{encoded}@{host}"


def uri_secrets(uri: str) -> list[str]:
    """Every spelling of ``uri``'s password a message may echo (as written, decoded, encoded),
    and its pieces between URI delimiters, longest first; pieces shorter than
    :data:`MIN_ENV_SECRET` are left out (they would blank ordinary text)."""
    from urllib.parse import quote, unquote

    parts = userinfo(uri)
    if parts is None or not parts[2]:
        return []
    password = parts[2]
    spellings = {password, unquote(password), quote(unquote(password), safe="")}
    pieces = {piece for spelling in spellings for piece in re.split(r"[@/?#:\s]+", spelling)}
    return sorted({s for s in spellings | pieces if len(s) >= MIN_ENV_SECRET}, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message (installed on ``ehrprog``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


__all__ = [
    "ENV_SECRETS",
    "MASK",
    "MIN_ENV_SECRET",
    "RedactingFilter",
    "encoded_uri",
    "redact",
    "uri_secrets",
    "userinfo",
]
