"""The statuses a session and a task-manager task go through, as constants: each is the
string the JSON says, so ``result["status"] == SessionStatus.COMPLETED`` holds where the
string would."""

from __future__ import annotations

import enum


class _Status(str, enum.Enum):
    """A status that prints as the string it is."""

    def __str__(self) -> str:
        return self.value


class SessionStatus(_Status):
    """Where a session is: its live state's status (``pending``, ``running``, ``paused``), its
    result's (``completed``, ``partial``, ``failed``, ``cancelled``), or, in a listing, why
    neither is known (``unknown``, ``unreadable``)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    UNREADABLE = "unreadable"


#: A live state's statuses: the session has yet to end (a paused one goes on once resumed).
UNDER_WAY = (SessionStatus.PENDING, SessionStatus.RUNNING, SessionStatus.PAUSED)


class TaskStatus(_Status):
    """Where a task of the task manager is, in the order a task goes through them (seed 003's
    ``TaskStatus``)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
