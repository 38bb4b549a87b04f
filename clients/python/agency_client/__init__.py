"""agency_client: the Python client of agency, the distributed task-group engine.

Submit sessions (or one task, or a workflow of tasks), watch them (status, wait, monitor),
cancel them, and check the fleet (health, executors, recent sessions); claim and settle agents'
work, and create and read tasks of the task manager; over the same Kafka topics, Redis keys and
Lua scripts the ``agency`` command uses, on confluent-kafka and redis-py; a session is
checked before it is produced by the engine's own validation, compiled in (``_native``, Rust
through PyO3).
"""

from .client import Agency
from .errors import (
    AgencyError,
    InvalidSession,
    NotFound,
    SessionFailed,
    SessionRefused,
    SessionRunning,
    StaleClaim,
    Timeout,
    check,
)
from .status import SessionStatus, TaskStatus

__all__ = [
    "Agency",
    "AgencyError",
    "InvalidSession",
    "NotFound",
    "SessionFailed",
    "SessionRefused",
    "SessionRunning",
    "SessionStatus",
    "StaleClaim",
    "TaskStatus",
    "Timeout",
    "check",
]
