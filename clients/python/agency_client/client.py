"""The agency client: talks to a deployment through the same Kafka topics and Redis keys the
`agency` command does (docs/control.md, docs/distributed.md), with confluent-kafka and redis-py.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import redis as redis_py
from confluent_kafka import Producer

from .agents import Agents
from . import _native
from .errors import AgencyError, InvalidSession, NotFound, SessionRefused, SessionRunning, Timeout
from .fleet import Fleet, iso8601 as _iso8601
from .status import UNDER_WAY, SessionStatus

ACTION_TOPIC = "agency_action"
RESULTS_CHANNEL = "agency:results"
SESSIONS = "agency:sessions"
#: How long working state and results are kept, in seconds.
KEPT_S = 7 * 24 * 3600
#: The largest `agency_action` message, in bytes.
MAX_MESSAGE_BYTES = 1_000_000
#: How long `submit(..., replace=True)` waits for the cancelled run's result.
REPLACE_PATIENCE_S = 60.0
#: The executors of `agency worker`, which `agency submit` checks a session against.
BUILTIN_EXECUTORS = ("command", "echo", "emit_event", "fail", "http_get", "noop", "sleep")

Result = Dict[str, Any]


def _key(session: str, rest: str) -> str:
    return f"agency:{{{session}}}:{rest}"


def _result_key(session: str) -> str:
    return f"agency:result:{{{session}}}"


def _id_problem(session_id: str) -> Optional[str]:
    if not session_id:
        return "a session id must not be empty"
    if "{" in session_id or "}" in session_id:
        return f"session id {session_id!r} must not contain `{{` or `}}` (they delimit Redis hash tags)"
    if len(session_id.encode()) > 1000:
        return "a session id is at most 1000 bytes"
    return None


def _origin(run: str) -> Tuple[str, int, int]:
    topic, partition, offset = run.rsplit("/", 2)
    return topic, int(partition), int(offset)


def _supersedes(theirs: str, ours: str) -> bool:
    """Whether run ``theirs`` is a later submission on the same partition than ``ours``."""
    try:
        (t1, p1, o1), (t2, p2, o2) = _origin(theirs), _origin(ours)
    except ValueError:
        return False
    return (t1, p1) == (t2, p2) and o1 > o2


def _connect_redis(url: str, cluster: Optional[str], options: Dict[str, Any]) -> Any:
    """A Redis client: of the server at ``url``, or of the cluster ``cluster`` names; ``options``
    are redis-py's own (``username``, ``password``, ``ssl_ca_certs``, ...)."""
    if not cluster:
        return redis_py.Redis.from_url(url, **options)
    nodes = []
    for node in cluster.split(","):
        host, _, port = node.strip().removeprefix("redis://").rpartition(":")
        if not host or not port.isdigit():
            raise AgencyError(f"redis_cluster: `{node}` is not HOST:PORT")
        nodes.append(redis_py.cluster.ClusterNode(host, int(port)))
    return redis_py.RedisCluster(startup_nodes=nodes, **options)


class Agency(Agents, Fleet):
    """A client of one agency deployment: sessions (submit, watch, control), the fleet, and
    agents' work and the task manager (:class:`agency_client.agents.Agents`).

    >>> agency = Agency()                                  # doctest: +SKIP
    >>> sid = agency.submit({"groups": [...]})             # doctest: +SKIP
    >>> result = agency.wait(sid, timeout=60)              # doctest: +SKIP
    """

    def __init__(
        self,
        kafka: str = "127.0.0.1:9092",
        redis: str = "redis://127.0.0.1:6379",
        namespace: str = "",
        redis_cluster: Optional[str] = None,
        executors: Optional[Sequence[str]] = BUILTIN_EXECUTORS,
        kafka_config: Optional[Dict[str, Any]] = None,
        redis_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        """``redis_cluster`` (``"HOST:PORT,..."``, some of its nodes) puts the client on a Redis
        Cluster instead of ``redis``, as ``--redis-cluster`` does for the ``agency`` commands.
        ``executors`` are the names a submitted session's tasks may use (``agency worker``'s
        own by default, as ``agency submit`` checks; ``None`` for any: workers with executors
        of their own).

        A secured deployment (docs/security.md): ``kafka_config`` holds librdkafka properties
        set on every Kafka client over the client's own, as ``--kafka-property`` does
        (``{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": ..., "sasl.password": ..., "ssl.ca.location": ...}``);
        ``redis_options`` are redis-py's connection options (``username``, ``password``,
        ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``; ``ssl=True`` for a cluster, a
        ``rediss://`` URL for one server)."""
        self.kafka = kafka
        self.namespace = namespace
        self._kafka_config = dict(kafka_config or {})
        self._checked_executors = None if executors is None else list(executors)
        self._redis = _connect_redis(redis, redis_cluster, dict(redis_options or {}))
        self._producer = Producer(
            self._kafka_settings({"enable.idempotence": True, "acks": "all"})
        )
        # The run each session id submitted (or attached to) through this client answers to.
        self._runs: Dict[str, str] = {}

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self, session: Dict[str, Any], session_id: Optional[str] = None, replace: bool = False
    ) -> str:
        """Submits a session document; returns its id (``session_id``, the document's own, or
        a fresh one). A document the engine refuses raises :class:`InvalidSession` with every
        problem, before anything is produced.

        One run per session id at a time: while a run of the id is under way, the same document
        attaches to it (nothing is produced; :meth:`wait` waits for that run), another raises
        :class:`SessionRunning`, or with ``replace=True`` cancels that run, waits for its
        result, then submits this one.
        """
        document = dict(session)
        sid = session_id or document.get("session_id") or str(uuid.uuid4())
        problem = _id_problem(sid)
        if problem:
            raise AgencyError(problem)
        document["session_id"] = sid
        text = json.dumps(document)
        try:
            # The engine's own check, as `agency submit` makes it: nothing is produced.
            _native.validate(text, self._checked_executors)
        except ValueError as refused:
            raise InvalidSession(str(refused)) from None
        payload = json.dumps({"key": sid, "action": "initialize", "data": document}).encode()
        if len(payload) > MAX_MESSAGE_BYTES:
            raise AgencyError(
                f"session {sid} is {len(payload)} bytes as an agency_action message, over the "
                f"limit of {MAX_MESSAGE_BYTES} bytes; pass large inputs by reference instead"
            )
        under_way = self._under_way(sid)
        if under_way is not None:
            run, running = under_way
            if not replace and running == document:
                self._runs[sid] = run
                return sid
            if not replace:
                raise SessionRunning(
                    f"session {sid} is running (run {run}) with another document; cancel it "
                    f"first, or submit with replace=True to cancel it and run this one"
                )
            if self.cancel(sid).get("status") == "sent":
                self.wait(sid, timeout=REPLACE_PATIENCE_S, run=run)
        self._save_pending(sid)
        self._redis.delete(_result_key(sid))
        self._runs[sid] = self._produce(sid, payload)
        return sid

    def submit_task(
        self, executor: str, input: Any = None, session_id: Optional[str] = None, **task_fields: Any
    ) -> str:
        """Submits a session of one task (seed 004's ``submit_task``): ``executor`` with
        ``input``; other task fields (``retry``, ``timeout_ms``, ``expansion_config`` in the
        input, ...) as keywords. Its result is in the context under the task's id (``task``
        unless given)."""
        task = {"id": "task", "executor": executor, "input": input, **task_fields}
        return self.submit({"groups": [{"id": "task", "tasks": [task]}]}, session_id)

    def submit_workflow(
        self,
        tasks: List[Dict[str, Any]],
        sequential: bool = False,
        session_id: Optional[str] = None,
    ) -> str:
        """Submits tasks (each ``{"executor", "input", ...}``, ids ``step1``, ``step2``, ...
        unless given) as one session: run in parallel, or with ``sequential=True`` each after the
        one before (so it can read the results before it from the context)."""
        steps = []
        for n, task in enumerate(tasks, 1):
            step = {"id": f"step{n}", **task}
            if sequential and steps:
                step["depends_on"] = [steps[-1]["id"]]
            steps.append(step)
        return self.submit({"groups": [{"id": "workflow", "tasks": steps}]}, session_id)

    # -- watching ---------------------------------------------------------------------------

    def status(self, session_id: str) -> Result:
        """The session's result once it has one, else its live state (``pending`` or
        ``running``, with counts, times, rate and ETA); :class:`NotFound` otherwise."""
        result = self._result(session_id)
        if result is not None:
            return result
        state = self._redis.get(_key(session_id, "state"))
        if state is not None:
            return json.loads(state)
        raise NotFound(f"no session {session_id} is pending, running or has a result")

    def results(
        self, session_id: str, task: str, start: int = 0, limit: Optional[int] = None, page: int = 10_000
    ) -> Iterator[Any]:
        """The results of ``task`` (``TASK`` or ``GROUP.TASK``) that the session keeps in the
        store by reference (a ``separate`` task over its ``inline_results``), in instance order
        from position ``start``, at most ``limit``: an iterator reading ``page`` of them from
        Redis at a time (``None`` where an instance has no result). Raises :class:`NotFound`
        when the session keeps none of that task, :class:`ValueError` for a range outside
        them."""
        group, _, name = task.rpartition(".")
        result = self._result(session_id)
        if result is not None:
            context = result.get("context") or {}
        else:
            stored = self._redis.hgetall(_key(session_id, "context"))
            if not stored:
                raise NotFound(f"no session {session_id} has a result or is running")
            context = {k.decode() if isinstance(k, bytes) else k: json.loads(v) for k, v in stored.items()}
        # In the context, or (a task cut short past its inline count) in a task's summary.
        summaries = [
            summary.get("results_kept")
            for group in ((result or {}).get("groups") or {}).values()
            for summary in (group.get("tasks") or {}).values()
        ]
        found = [
            value["$results"]
            for value in list(context.values()) + summaries
            if isinstance(value, dict) and list(value) == ["$results"]
            and value["$results"].get("task") == name and (not group or value["$results"].get("group") == group)
        ]
        if len(found) != 1:
            why = "several groups have it: name one as GROUP.TASK" if found else "its results, if any, are in the context"
            raise NotFound(f"session {session_id} keeps no results of task {task!r} in the store by reference ({why})")
        reference = found[0]
        count = int(reference["count"])
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        if start < 0 or (start >= count and not (start == 0 and count == 0)):
            raise ValueError(f"start {start} is outside task {name!r}'s {count} results (positions 0 to {max(count - 1, 0)})")
        g, t = self._position(session_id, result, reference["group"], reference["task"])
        end = count if limit is None else min(count, start + limit)
        outcomes = _key(session_id, f"outcomes:{g}:{t}")
        return self._pages(session_id, outcomes, start, end, page)

    def _position(self, session_id: str, result: Optional[Result], group: str, task: str) -> Tuple[int, int]:
        """Where the task sits in the session: from its result, else from the document it runs."""
        if result is not None:
            groups = [(gid, list((summary.get("tasks") or {}).keys())) for gid, summary in result["groups"].items()]
        else:
            document = self._redis.hget(_key(session_id, "document"), "document")
            spec = json.loads(document) if document is not None else {"groups": []}
            groups = [(g["id"], [t["id"] for t in g["tasks"]]) for g in spec["groups"]]
        for g, (gid, tasks) in enumerate(groups):
            if gid == group and task in tasks:
                return g, tasks.index(task)
        raise AgencyError(f"session {session_id} refers to the results of task {task!r} of group {group!r}, which it does not list")

    def _pages(self, session_id: str, outcomes: str, start: int, end: int, page: int) -> Iterator[Any]:
        for first in range(start, end, max(page, 1)):
            fields = list(range(first, min(end, first + page)))
            for position, stored in zip(fields, self._redis.hmget(outcomes, fields)):
                yield self._decode_result(session_id, outcomes, position, stored)

    def _decode_result(self, session_id: str, outcomes: str, position: int, stored: Optional[bytes]) -> Any:
        """One stored outcome (``attempt|status|json``) as its result: the value of a success,
        read from its blob when stored as one; ``None`` otherwise."""
        if stored is None:
            return None
        parts = stored.split(b"|", 2)
        if len(parts) != 3:
            raise AgencyError(f"{outcomes} {position}: not attempt|status|json")
        status = json.loads(parts[2])
        kind, value = status.get("status"), status.get("value")
        if kind in ("succeeded", "cached"):
            return value
        if kind == "stored":
            blob = self._redis.get(_key(session_id, f"blob:{value}"))
            if blob is None:
                raise AgencyError(f"result {value} of session {session_id} is missing from the store")
            return json.loads(blob)
        return None

    def wait(
        self, session_id: str, timeout: Optional[float] = None, run: Optional[str] = None
    ) -> Result:
        """Waits for the session's result and returns it, whatever its status (see
        :func:`check`). The result is the one of the run this client submitted or attached
        to (or ``run``), or, for an id this client did not submit, any. Raises :class:`Timeout`
        after ``timeout`` seconds, :class:`SessionRefused` when a coordinator refused the
        submission, and :class:`AgencyError` when a later submission replaced the run."""
        run = run or self._runs.get(session_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(RESULTS_CHANNEL)
        try:
            while True:
                run, result = self._settled(session_id, run)
                if result is not None:
                    return result
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Timeout(f"no result for session {session_id} within {timeout} s")
                # An announcement wakes the wait at once; the store is read every second too.
                pubsub.get_message(timeout=1.0 if left is None else min(1.0, left))
        finally:
            pubsub.close()

    def monitor(
        self,
        session_id: str,
        callback: Optional[Callable[[Result], None]] = None,
        interval: float = 0.5,
    ) -> Any:
        """Follows the session: its live state each time it changes, then its result. With
        ``callback``, calls it with each and returns the result; without, returns an iterator
        over them (the last item is the result)."""
        updates = self._updates(session_id, interval)
        if callback is None:
            return updates
        last: Result = {}
        for update in updates:
            callback(update)
            last = update
        return last

    def _updates(self, session_id: str, interval: float) -> Iterator[Result]:
        # Each state a run writes is announced on the session's progress channel: it wakes the
        # loop at once; the stored state (read at least every `interval`) catches up.
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(f"agency:progress:{{{session_id}}}")
        try:
            seen = None
            while True:
                current = self.status(session_id)
                # A paused run is under way still: it goes on to its result once resumed.
                if current.get("status") not in UNDER_WAY:
                    yield current
                    return
                mark = (current.get("status"), current.get("updated_at"), json.dumps(current.get("instances")))
                if mark != seen:
                    seen = mark
                    yield current
                pubsub.get_message(timeout=interval)
        finally:
            pubsub.close()

    def sessions(self, status: Optional[str] = None, limit: int = 100) -> List[Dict[str, Any]]:
        """The sessions listed most recently, newest first: ``session_id``, ``status`` (the
        result's, else the live state's, ``unknown`` once both are gone), ``run``,
        ``listed_at``; ``status`` keeps those with that status."""
        rows = []
        for member, score in self._redis.zrevrangebyscore(SESSIONS, "+inf", "-inf", start=0, num=limit, withscores=True):
            sid = member.decode()
            try:
                shown = self.status(sid)
            except NotFound:
                shown = {"status": SessionStatus.UNKNOWN.value}
            except ValueError:
                shown = {"status": SessionStatus.UNREADABLE.value}
            if status is not None and shown.get("status") != status:
                continue
            rows.append(
                {
                    "session_id": sid,
                    "status": shown.get("status"),
                    "run": shown.get("run"),
                    "listed_at": _iso8601(int(score)),
                }
            )
        return rows

    # -- controlling ------------------------------------------------------------------------

    def cancel(self, session_id: str) -> Dict[str, Any]:
        """Cancels the session, in whatever state it is. A run under way: ``{"status": "sent",
        "run"}``; its result will say ``cancelled``, with what completed. A pending session
        (submitted, no coordinator has taken it): ``{"status": "withdrawn"}``; it never runs,
        and its result says ``cancelled``. A finished session is left as it is (``{"status":
        "finished", "result"}``); an unknown one raises :class:`NotFound`."""
        try:
            return self._control(session_id, "cancel")
        except NotFound:
            if not self._pending(session_id):
                raise
        # Withdrawn before the cancel is produced: the coordinator taking the submission sees
        # the mark, and the cancel, after every submission before it, ends it.
        mark = uuid.uuid4().hex
        self._redis.set(_key(session_id, "withdrawn"), mark, ex=KEPT_S)
        payload = json.dumps({"key": session_id, "action": "cancel", "data": {"withdrawn": mark}}).encode()
        self._produce(session_id, payload)
        return {"status": "withdrawn"}

    def _pending(self, session_id: str) -> bool:
        """Whether the session is listed ``pending``: submitted, not taken by a coordinator."""
        state = self._redis.get(_key(session_id, "state"))
        try:
            return state is not None and json.loads(state).get("status") == SessionStatus.PENDING
        except ValueError:
            return False

    def pause(self, session_id: str) -> Dict[str, Any]:
        """Pauses the session's run under way (as ``agency pause``): nothing new is dispatched
        or started, running instances finish and are recorded, its status becomes ``paused``
        within about a second; its deadlines keep counting. Answers as :meth:`cancel`."""
        return self._control(session_id, "pause")

    def resume(self, session_id: str) -> Dict[str, Any]:
        """Resumes a paused run: what is left of it is dispatched again. Answers as
        :meth:`cancel`."""
        return self._control(session_id, "resume")

    def rerun(self, session_id: str) -> str:
        """Runs a session that ended ``partial``, ``failed`` or ``cancelled`` again (as ``agency
        rerun``): every success it recorded is reused, only what failed or never finished is
        executed; its result says how many were ``reused``. Returns the id, for :meth:`wait`.
        Raises :class:`SessionRunning` while a run is under way, :class:`NotFound` without a
        result, and :class:`AgencyError` when it completed or its outcomes are no longer kept."""
        under_way = self._under_way(session_id)
        if under_way is not None:
            raise SessionRunning(f"session {session_id} is running (run {under_way[0]}); nothing to rerun yet")
        result = self._result(session_id)
        if result is None:
            raise NotFound(f"session {session_id} has no result to rerun")
        if result.get("status") == SessionStatus.COMPLETED:
            raise AgencyError(f"session {session_id} completed: nothing failed, nothing to rerun")
        _, document = self._redis.hmget(_key(session_id, "document"), "run", "document")
        if document is None:
            raise AgencyError(
                f"session {session_id} ({result.get('status')}) kept no recorded outcomes to reuse "
                f"(they expire a week after its last run); submit it again to run it whole"
            )
        payload = json.dumps({"key": session_id, "action": "rerun", "data": json.loads(document)}).encode()
        self._save_pending(session_id)
        self._runs[session_id] = self._produce(session_id, payload)
        return session_id

    def _control(self, session_id: str, action: str) -> Dict[str, Any]:
        """Produces ``action`` for the session's run under way, if one is."""
        run = self._redis.get(_key(session_id, "run"))
        result = self._result(session_id)
        finished = result is not None and result.get("run") in (None, run.decode() if run else None)
        if run is not None and not finished:
            payload = json.dumps({"key": session_id, "action": action}).encode()
            self._produce(session_id, payload)
            return {"status": "sent", "run": run.decode()}
        if result is not None:
            return {"status": "finished", "result": result}
        raise NotFound(f"no session {session_id} is pending, running or has a result; nothing to {action}")

    def close(self) -> None:
        """Sends what is queued and lets the connections go."""
        self._producer.flush(10)
        self._redis.close()

    def __enter__(self) -> "Agency":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- the wire ---------------------------------------------------------------------------

    def _result(self, session_id: str) -> Optional[Result]:
        stored = self._redis.get(_result_key(session_id))
        return None if stored is None else json.loads(stored)

    def _under_way(self, session_id: str) -> Optional[Tuple[str, Any]]:
        """The run of the id under way and the document it runs, if one is."""
        current = self._redis.get(_key(session_id, "run"))
        run, document = self._redis.hmget(_key(session_id, "document"), "run", "document")
        if current is None or run is None or document is None or run != current:
            return None
        result = self._result(session_id)
        if result is not None and result.get("run") == run.decode():
            return None
        return run.decode(), json.loads(document)

    def _save_pending(self, session_id: str) -> None:
        """The submission's `pending` state, never over a run's own (as `agency submit`)."""
        state = json.dumps(
            {
                "session_id": session_id,
                "status": SessionStatus.PENDING.value,
                "instances": {k: 0 for k in ("total", "succeeded", "failed", "running", "attempts", "retries")},
                "groups": {},
                "submitted_at": _iso8601(self._now_ms()),
            }
        )
        key = _key(session_id, "state")
        if self._redis.set(key, state, nx=True, ex=KEPT_S):
            pipe = self._redis.pipeline()
            pipe.sadd(_key(session_id, "keys"), key)
            pipe.expire(_key(session_id, "keys"), KEPT_S)
            pipe.execute()
        now = self._now_ms()
        pipe = self._redis.pipeline()
        pipe.zadd(SESSIONS, {session_id: now})
        pipe.zremrangebyscore(SESSIONS, "-inf", now - KEPT_S * 1000)
        pipe.execute()

    def _produce(self, session_id: str, payload: bytes) -> str:
        """Produces to `agency_action`, keyed by the session id; returns where it landed."""
        landed: Dict[str, Any] = {}

        def delivered(error: Any, message: Any) -> None:
            landed["error"] = error
            landed["message"] = message

        topic = f"{self.namespace}{ACTION_TOPIC}"
        self._producer.produce(topic, key=session_id, value=payload, on_delivery=delivered)
        deadline = time.monotonic() + 30
        while "message" not in landed and time.monotonic() < deadline:
            self._producer.flush(0.1)
            if "message" not in landed and self._kafka_refusal is not None:
                # Never to be delivered: dropped, so it does not go out should the broker
                # let this client in later.
                self._producer.purge()
                self._producer.flush(0)
                raise AgencyError(f"kafka at {self.kafka} refused this client: {self._kafka_refusal}")
        if "message" not in landed:
            raise AgencyError(f"kafka at {self.kafka} did not acknowledge the action within 30 s")
        if landed["error"] is not None:
            raise AgencyError(f"kafka refused the action: {landed['error']}")
        self._kafka_refusal = None
        message = landed["message"]
        return f"{topic}/{message.partition()}/{message.offset()}"

    def _settled(self, session_id: str, run: Optional[str]) -> Tuple[Optional[str], Optional[Result]]:
        """The run waited for (an attached action's is the run it joined) and its result, if
        stored."""
        if run is not None:
            note = self._redis.hget(f"agency:actions:{{{session_id}}}", run)
            if note is not None:
                kind, _, rest = note.decode().partition(":")
                if kind == "attached":
                    run = rest
                elif kind == "refused":
                    raise SessionRefused(rest)
        result = self._result(session_id)
        if result is None:
            return run, None
        theirs = result.get("run")
        if run is None or theirs is None or theirs == run:
            return run, result
        if _supersedes(theirs, run):
            raise AgencyError(
                f"session {session_id} was submitted again (run {theirs}) before run {run} "
                f"finished; that run's result will not come"
            )
        return run, None
