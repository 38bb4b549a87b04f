"""The client's errors, and :func:`check` of a result."""

from __future__ import annotations

from typing import Any, Dict

from .status import SessionStatus

Result = Dict[str, Any]


class AgencyError(Exception):
    """Something went wrong talking to agency, or agency refused what was asked."""


class Timeout(AgencyError):
    """No result came within the time given; the session goes on."""


class NotFound(AgencyError):
    """No session of that id is pending, running or has a result."""


class SessionRunning(AgencyError):
    """The session id is running another document (one run per id at a time)."""


class StaleClaim(AgencyError):
    """A claim token that holds no item (settled or released already, or timed out): nothing
    changed."""


class InvalidSession(AgencyError, ValueError):
    """A session document the engine refuses, found before anything is produced: the message
    is the engine's own (``agency submit``'s), every problem with its field path."""


class SessionRefused(AgencyError):
    """A coordinator refused the submission; it started no run."""


class SessionFailed(AgencyError):
    """Raised by :func:`check` for a result that is not ``completed``; ``result`` holds it."""

    def __init__(self, result: Result):
        errors = result.get("errors") or []
        first = f": {errors[0]}" if errors else ""
        super().__init__(f"session {result.get('session_id')} ended {result.get('status')}{first}")
        self.result = result


def check(result: Result) -> Result:
    """Returns ``result`` when it is ``completed``; raises :class:`SessionFailed` for a
    ``partial``, ``failed`` or ``cancelled`` one."""
    if result.get("status") != SessionStatus.COMPLETED:
        raise SessionFailed(result)
    return result
