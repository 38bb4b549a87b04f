"""Agents' side of agency (seed 003): claim work of session tasks with ``"executor": "agent"``
and of the task manager, complete, fail or release it; create tasks of the task manager and
read them. Every change is one call of the same Lua scripts the ``agency`` command runs (the
package's ``lua/`` files are ``crates/events/lua/agents/``), so both keep one set of rules.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence

from .errors import AgencyError, NotFound, StaleClaim
from .fleet import iso8601
from .status import TaskStatus

#: The key every script is called with: it routes the call to the ``{agents}`` slot.
ITEMS = "agency:{agents}:items"
_TASK = "agency:{agents}:task:"
_CHILDREN = "agency:{agents}:children:"
_WORKFLOW = "agency:{agents}:workflow:"
#: How long a task's claim holds unless told otherwise: a day, as the seed's task manager.
DEFAULT_CLAIM_TIMEOUT_MS = 24 * 3600 * 1000
#: Every status of a task of the task manager, in the order a task goes through them.
STATUSES = tuple(status.value for status in TaskStatus)
_LONGEST_NAME = 200
_LONGEST_PAGE = 1000
_TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
#: How often a waiting claim asks again, in seconds.
_POLL_S = 0.1


def _lua(name: str) -> str:
    folder = resources.files("agency_client") / "lua"
    return (folder / "common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(parts: Sequence[Any]) -> Dict[str, Any]:
    """What ``agency agent claim --json`` prints of a claim script's answer."""
    item = json.loads(parts[0])
    claims = int(parts[1])
    token, _deadline, agent = _text(parts[2]).split("|", 2)
    described: Dict[str, Any] = {"token": token, "type": item["type"], "input": item["input"], "agent": agent}
    origin = item["origin"]
    if origin["from"] == "instance":
        described.update(session_id=origin["session"], task=origin["task_id"], instance=origin["instance"], attempt=origin["attempt"])
    else:
        described.update(session_id=None, task=item["id"], instance=None, attempt=claims, workflow=origin["workflow"], parent_id=origin["parent"])
    return described


def _task(task_id: str, fields: Dict[Any, Any]) -> Optional[Dict[str, Any]]:
    """A task of the task manager from its hash, as ``agency tasks get`` prints it."""
    if not fields:
        return None
    f = {_text(k): _text(v) for k, v in fields.items()}

    def number(name: str) -> Optional[int]:
        return int(f[name]) if name in f else None

    return {
        "id": task_id,
        "workflow": f["workflow"],
        "type": f["type"],
        "status": f["status"],
        "parent_id": f.get("parent") or None,
        "data": json.loads(f["data"]) if "data" in f else None,
        "locked_by": f.get("locked_by"),
        "locked_at_ms": number("locked_ms"),
        "created_at_ms": number("created_ms") or 0,
        "updated_at_ms": number("updated_ms") or 0,
        "completed_at_ms": number("completed_ms"),
        "claims": number("claims") or 0,
        "claim_timeout_ms": number("claim_timeout_ms") or 0,
        "result": json.loads(f["result"]) if "result" in f else None,
        "error": f.get("error"),
        # Seed 003's ISO times, beside the milliseconds.
        "created_at": _iso(number("created_ms") or 0),
        "updated_at": _iso(number("updated_ms") or 0),
        "locked_at": _iso(number("locked_ms")),
        "completed_at": _iso(number("completed_ms")),
    }


def _iso(ms: Optional[int]) -> Optional[str]:
    return None if ms is None else iso8601(ms)


def _pairs(flat: Sequence[Any]) -> Dict[str, str]:
    """A Redis reply of ``field, value, ...`` as a dict."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _check_workflow(workflow: str) -> None:

    if not workflow or len(workflow.encode()) > _LONGEST_NAME:
        raise AgencyError(f"a workflow name must be 1 to {_LONGEST_NAME} bytes, not {len(workflow.encode())}")


class Agents:
    """The agent and task-manager methods of :class:`agency_client.Agency` (over its Redis)."""

    _redis: Any

    def _script(self, name: str) -> Any:
        scripts = self.__dict__.setdefault("_scripts", {})
        if name not in scripts:
            scripts[name] = self._redis.register_script(_lua(name))
        return scripts[name]

    # -- agents -----------------------------------------------------------------------------

    def claim(
        self,
        agent: str,
        types: Optional[Sequence[str]] = None,
        wait: float = 0.0,
        workflow: Optional[str] = None,
    ) -> Optional[Dict[str, Any]]:
        """Claims, for ``agent``, the oldest waiting item of the first of ``types`` that has one
        (without ``types``, of any type: seed 003's ``get_next_task(agent_id,
        task_types=None)``), of the tasks of ``workflow`` only when given; asks again for up to
        ``wait`` seconds. Returns what ``agency agent claim --json`` prints (``token``,
        ``session_id``, ``task``, ``instance``, ``type``, ``input``, ``attempt``, and for a task
        of the task manager ``workflow`` and ``parent_id``), or ``None`` when nothing came."""
        if isinstance(types, str):
            types = [types]
        if workflow is not None:
            _check_workflow(workflow)
        until = time.monotonic() + wait
        while True:
            token = uuid.uuid4().hex
            args = [agent, token, workflow or "", *(types or [])]
            found = self._script("claim")(keys=[ITEMS], args=args)
            if found:
                return _describe(found)
            left = until - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(_POLL_S, left))

    def complete(self, token: str, result: Any = None) -> None:
        """Completes the item ``token`` holds with ``result`` (JSON-encodable); raises
        :class:`StaleClaim`, changing nothing, when the token holds none."""
        answer = json.dumps(result)
        self._settle(token, {"completed": result}, "completed", "result", answer)

    def fail(self, token: str, error: str) -> None:
        """Fails the item ``token`` holds with ``error`` (a session task's retry policy decides
        what follows; a task of the task manager is ``failed``); raises :class:`StaleClaim`
        when the token holds none."""
        self._settle(token, {"failed": error}, "failed", "error", error)

    def release(self, token: str) -> None:
        """Puts the item ``token`` holds back for another agent, as if never claimed (a task is
        ``pending`` again); raises :class:`StaleClaim` when the token holds none."""
        if not self._script("release")(keys=[ITEMS], args=[token]):
            raise _stale(token)

    def _settle(self, token: str, report: Dict[str, Any], status: str, field: str, answer: str) -> None:
        settled = self._script("settle")(keys=[ITEMS], args=[token, json.dumps(report), status, field, answer])
        if not settled:
            raise _stale(token)

    # -- the task manager -------------------------------------------------------------------

    def create_task(
        self,
        task_type: str,
        data: Any = None,
        parent_id: Optional[str] = None,
        *,
        workflow: str,
        claim_timeout_ms: int = DEFAULT_CLAIM_TIMEOUT_MS,
    ) -> str:
        """Creates a pending task of ``task_type`` in ``workflow`` (under ``parent_id``, a task
        of the same workflow, if given) for agents to claim; returns its id."""

        _check_workflow(workflow)
        if not _TYPE.match(task_type):
            raise AgencyError(f"task type `{task_type}` must be 1 to {_LONGEST_NAME} letters, digits, `_`, `-`, `.` or `:`")
        if claim_timeout_ms < 1:
            raise AgencyError("a claim timeout must be at least 1 ms")
        task_id = f"{task_type}_{uuid.uuid4().hex[:16]}"
        data = {} if data is None else data
        item = {
            "id": task_id,
            "type": task_type,
            "input": data,
            "claim_timeout_ms": claim_timeout_ms,
            "origin": {"from": "task", "workflow": workflow, "parent": parent_id},
        }
        why = self._script("create")(
            keys=[ITEMS],
            args=[task_id, workflow, task_type, claim_timeout_ms, json.dumps(data), parent_id or "", json.dumps(item)],
        )
        if _text(why):
            raise AgencyError(_text(why))
        return task_id

    def get_task(self, task_id: str) -> Optional[Dict[str, Any]]:
        """The task of that id (as ``agency tasks get`` prints it), or ``None``."""
        return _task(task_id, self._redis.hgetall(_TASK + task_id))

    def children(self, task_id: str) -> List[Dict[str, Any]]:
        """The children of task ``task_id``, in the order they were created."""

        if not self._redis.exists(_TASK + task_id):
            raise NotFound(f"no task `{task_id}`")
        ids = [_text(i) for i in self._redis.lrange(_CHILDREN + task_id, 0, -1)]
        pipe = self._redis.pipeline(transaction=False)
        for child in ids:
            pipe.hgetall(_TASK + child)
        found = (_task(child, fields) for child, fields in zip(ids, pipe.execute()))
        return [task for task in found if task is not None]

    def list_tasks(
        self,
        workflow: str,
        status: Optional[str] = None,
        task_type: Optional[str] = None,
        start: int = 0,
        limit: int = 100,
    ) -> Dict[str, Any]:
        """A page of the workflow's tasks, in creation order from position ``start``: those of
        ``status`` and ``task_type`` when given, at most ``limit`` (1 to 1,000), as ``agency
        tasks list`` prints it: ``{"tasks": [...], "next": N}``, ``next`` the ``start`` of the
        next page (``None`` at the end)."""
        _check_workflow(workflow)
        if status is not None and status not in STATUSES:
            raise AgencyError(f"`{status}` is no task status (expected one of: {', '.join(STATUSES)})")
        if not 1 <= limit <= _LONGEST_PAGE:
            raise AgencyError(f"a page holds 1 to {_LONGEST_PAGE} tasks, not {limit}")
        found = self._script("list")(keys=[ITEMS], args=[workflow, status or "", task_type or "", start, limit])
        next_at, ids = int(found[0]), [_text(i) for i in found[1:]]
        pipe = self._redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(_TASK + task_id)
        tasks = (_task(task_id, fields) for task_id, fields in zip(ids, pipe.execute() if ids else []))
        return {"tasks": [task for task in tasks if task is not None], "next": None if next_at < 0 else next_at}

    def cancel_task(self, task_id: str) -> None:
        """Cancels a pending or claimed task (its claim ends); raises :class:`AgencyError`,
        naming why, when it does not exist or ended already."""

        why = _text(self._script("cancel")(keys=[ITEMS], args=[task_id]))
        if why:
            raise AgencyError(why)

    def summary(self, workflow: str) -> Dict[str, Any]:
        """The workflow's tasks counted: ``total_tasks``, ``status_counts`` (every status),
        ``type_counts`` and ``by_type`` (type -> status -> count)."""
        _check_workflow(workflow)
        counts = self._redis.hgetall(f"{_WORKFLOW}{workflow}:counts")
        summary: Dict[str, Any] = {
            "workflow": workflow,
            "total_tasks": 0,
            "status_counts": {status: 0 for status in STATUSES},
            "type_counts": {},
            "by_type": {},
        }
        for field, count in sorted((_text(k), int(v)) for k, v in counts.items()):
            if count <= 0:
                continue
            status, kind = field.split("|", 1)
            summary["total_tasks"] += count
            summary["status_counts"][status] = summary["status_counts"].get(status, 0) + count
            summary["type_counts"][kind] = summary["type_counts"].get(kind, 0) + count
            summary["by_type"].setdefault(kind, {})[status] = count
        return summary

    def metadata(self, workflow: str, update: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Sets the keys of ``update`` in the workflow's metadata (others are kept); returns the
        metadata as it then is, with ``initialized_at``, ``last_updated`` (ISO times: its first
        task or key, its last change) and ``workflow_type`` (``generic`` unless set) once the
        workflow has a task or a key."""
        _check_workflow(workflow)
        pairs = [part for key, value in (update or {}).items() for part in (key, json.dumps(value))]
        stored, times = self._script("metadata")(keys=[ITEMS], args=[workflow, *pairs])
        metadata = {key: json.loads(value) for key, value in _pairs(stored).items()}
        times = _pairs(times)
        if "initialized_ms" in times and "updated_ms" in times:
            metadata["initialized_at"] = iso8601(int(times["initialized_ms"]))
            metadata["last_updated"] = iso8601(int(times["updated_ms"]))
            metadata.setdefault("workflow_type", "generic")
        return metadata


def _stale(token: str) -> Exception:

    return StaleClaim(
        f"claim token `{token}` does not hold an item: it was settled or released already, or it timed out (and the item was released)"
    )
