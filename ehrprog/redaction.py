"""One guard for secrets: every text that may hold a connection string goes through :func:`redact`.

It replaces by ``***``:

* the password of a URL's user info, for any scheme (``postgresql://u:SECRET@h/db``,
  ``postgresql+psycopg://...``, ``duckdb://...``), the password running to the last ``@`` before
  the host (as ``urllib`` reads it), so an unescaped ``@`` or ``:`` inside it is covered;
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
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*:/{1,2}[^\s:/@?#]*):(?P<secret>[^\s]*)@(?=[^\s@]*(?:[/?#\s]|$))"
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


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message (installed on ``ehrprog``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


__all__ = ["ENV_SECRETS", "MASK", "MIN_ENV_SECRET", "RedactingFilter", "redact"]
