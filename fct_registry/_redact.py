"""The one credential scrubber: every URI the tool prints, logs or raises passes through here.

:func:`redact` removes URI user-info (``scheme://user:password@host`` -> ``scheme://host``)
and the values of secret-looking query parameters (``?password=...``, ``token``, ``key``...).
:func:`install` applies it process-wide: to every log record (MLflow's, urllib3's, boto's and
ours, through the log-record factory) and to the text of any exception the CLI reports.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")
_SECRET_QUERY = re.compile(
    r"(?i)((?:password|passwd|pwd|secret|token|key|signature|credential)[^=&\s]*=)[^&\s'\"]*"
)
_installed = False


def redact(text: str) -> str:
    """``text`` with URI user-info and secret query values replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\g<scheme>", text))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (MLflow's can run to pages), scrubbed."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__


def install() -> None:
    """Scrub every log record created from now on in this process (idempotent)."""
    global _installed
    if _installed:
        return
    base = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
