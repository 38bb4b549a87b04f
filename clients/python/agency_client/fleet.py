"""The fleet: the heartbeats of a namespace's coordinators and workers, and what they run."""

from __future__ import annotations

import datetime
import json
from typing import Any, Dict, List, Optional

import redis as redis_py
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

MEMBERS = "agency:{members}"
MEMBERS_SEEN = "agency:{members}:seen"
#: A member not heard from for this long is stale (a problem); for GONE_AFTER_S, gone.
STALE_AFTER_S = 10.0
GONE_AFTER_S = 300.0


def iso8601(ms: int) -> str:
    """``ms`` since the epoch as an ISO 8601 UTC time, to the millisecond."""
    at = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# librdkafka's errors that say the broker refuses this client: waiting cannot help.
_REFUSALS = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED)


class Fleet:
    """Health and executors of the deployment (mixed into :class:`agency_client.Agency`)."""

    kafka: str
    namespace: str
    _redis: Any
    _kafka_config: Dict[str, Any]
    # librdkafka's reason when the broker refused this client's credentials or certificate: it
    # only tells its error callback, and goes on reconnecting.
    _kafka_refusal: Optional[str] = None

    def _kafka_settings(self, own: Dict[str, Any]) -> Dict[str, Any]:
        """A Kafka client's configuration: the brokers, ``own`` settings, then the deployment's
        ``kafka_config`` over them, and an error callback that notes a refusal."""
        return {
            "bootstrap.servers": self.kafka,
            **own,
            **self._kafka_config,
            "error_cb": self._kafka_error,
        }

    def _kafka_error(self, error: KafkaError) -> None:
        if error.code() in _REFUSALS:
            self._kafka_refusal = error.str()

    def _now_ms(self) -> int:
        seconds, micros = self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def health(self) -> Dict[str, Any]:
        """Checks Redis, Kafka and the heartbeats of this namespace's coordinators and workers:
        ``healthy`` when both answer, a coordinator and a worker are alive and none is stale
        (silent for 10 s); ``problems`` says what is wrong (the same as ``agency health``)."""
        problems: List[str] = []
        now = None
        try:
            now = self._now_ms()
            redis_check = {"ok": True, "detail": "answers"}
        except redis_py.RedisError as error:
            problems.append(f"redis: {error}")
            redis_check = {"ok": False, "detail": str(error)}
        try:
            brokers = len(AdminClient(self._kafka_settings({})).list_topics(timeout=5).brokers)
            kafka_check = {"ok": brokers > 0, "detail": f"{brokers} broker(s) answer"}
            if not brokers:
                problems.append("kafka: no broker is listed in its metadata")
        except KafkaException as error:
            detail = self._kafka_refusal or str(error)
            problems.append(f"kafka: {detail}")
            kafka_check = {"ok": False, "detail": detail}
        groups: Dict[str, List[Dict[str, Any]]] = {"coordinators": [], "workers": [], "stale": [], "gone": []}
        if now is not None:
            infos = self._redis.hgetall(MEMBERS)
            seen = self._redis.hgetall(MEMBERS_SEEN)
            for member_id, info in infos.items():
                if member_id not in seen:
                    continue
                try:
                    member = json.loads(info)
                except ValueError:
                    problems.append(f"member {member_id.decode()}: its heartbeat is not readable")
                    continue
                if member.get("namespace", "") != self.namespace:
                    continue
                at = int(seen[member_id])
                silent = max(0, now - at) / 1000
                member.update(last_seen=iso8601(at), silent_s=silent)
                if silent >= GONE_AFTER_S:
                    groups["gone"].append(member)
                elif silent >= STALE_AFTER_S:
                    groups["stale"].append(member)
                else:
                    groups["coordinators" if member.get("role") == "coordinator" else "workers"].append(member)
            for role in ("coordinator", "worker"):
                if not groups[role + "s"]:
                    problems.append(f"no {role} is alive (none heard from within {STALE_AFTER_S:.0f} s)")
            for member in groups["stale"]:
                problems.append(
                    f"stale: {member.get('role')} {member.get('id')} on {member.get('host')} "
                    f"(pid {member.get('pid')}), silent for {member['silent_s']:.0f} s"
                )
        for members in groups.values():
            members.sort(key=lambda member: member.get("id", ""))
        return {"healthy": not problems, "problems": problems, "redis": redis_check, "kafka": kafka_check, **groups}

    def executors(self) -> List[Dict[str, str]]:
        """The executors the live workers run, each once: ``{"name", "description"}``."""
        found: Dict[str, Dict[str, str]] = {}
        for worker in self.health()["workers"]:
            for executor in worker.get("executors", []):
                found.setdefault(executor["name"], executor)
        return [found[name] for name in sorted(found)]
