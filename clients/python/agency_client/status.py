"""The statuses a session and a task-manager task go through, as constants: each is the
string the JSON says, so ``result["status"] == SessionStatus.COMPLETED`` holds where the
string would."""

from __future__ import annotations

import enum


class SessionStatus(str, enum.Enum):
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

    def __str__(self) -> str:
        return self.value



#: A live state's statuses: the session has yet to end (a paused one goes on once resumed).
UNDER_WAY = (SessionStatus.PENDING, SessionStatus.RUNNING, SessionStatus.PAUSED)
#: A result's statuses.
ENDED = (SessionStatus.COMPLETED, SessionStatus.PARTIAL, SessionStatus.FAILED, SessionStatus.CANCELLED)


class TaskStatus(str, enum.Enum):
    """Where a task of the task manager is, in the order a task goes through them (seed 003's
    ``TaskStatus``)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value
