"""agency_client: the Python client of agency, the distributed task-group engine.

Submit sessions (or one task, or a workflow of tasks), watch them (status, wait, monitor),
cancel them, and check the fleet (health, executors, recent sessions), over the same Kafka
topics and Redis keys the ``agency`` command uses. No Rust extension: confluent-kafka and
redis-py.
"""

from .client import (
    Agency,
    AgencyError,
    NotFound,
    SessionFailed,
    SessionRefused,
    SessionRunning,
    Timeout,
    check,
)

__all__ = [
    "Agency",
    "AgencyError",
    "NotFound",
    "SessionFailed",
    "SessionRefused",
    "SessionRunning",
    "Timeout",
    "check",
]
