"""A real deployment for the client's tests: an `agency coordinator` and two `agency worker`
processes of the repository's build, on the Kafka and Redis that `scripts/services.sh` starts
(AGENCY_KAFKA, AGENCY_REDIS), in a namespace of their own."""

import os
import pathlib
import subprocess
import time
import uuid

import pytest

from agency_client import Agency

ROOT = pathlib.Path(__file__).resolve().parents[3]
KAFKA = os.environ.get("AGENCY_KAFKA", "127.0.0.1:9092")
REDIS = os.environ.get("AGENCY_REDIS", "redis://127.0.0.1:6379")
# The Redis Cluster of `scripts/services.sh up --redis-cluster`.
REDIS_CLUSTER = os.environ.get("AGENCY_REDIS_CLUSTER", ",".join(f"127.0.0.1:{p}" for p in range(7000, 7006)))


def agency_bin() -> str:
    built = pathlib.Path(os.environ.get("AGENCY_BIN", ROOT / "target" / "debug" / "agency"))
    if not built.exists():
        pytest.fail(f"no agency binary at {built}: run `cargo build -p agency` first (or set AGENCY_BIN)")
    return str(built)


class Deployment:
    """Processes of one namespace; a client of it."""

    def __init__(self, tmp: pathlib.Path, redis_cluster=None, kafka=KAFKA, redis=REDIS, env=None, client_options=None):
        """``env`` goes to every process over the rest, ``client_options`` to the client (the
        secured stack's settings: test_security.py)."""
        self.namespace = f"py-{uuid.uuid4().hex[:12]}."
        self.tmp = tmp
        self.processes = []
        self.env = {**os.environ, "AGENCY_KAFKA": kafka, "AGENCY_REDIS": redis, "AGENCY_NAMESPACE": self.namespace, "AGENCY_LOG": "info",
                    # The tests' sessions run programs: their workers allow every one.
                    "AGENCY_ALLOW_COMMAND": "*", "AGENCY_ALLOW_HTTP": "*"}
        self.env.pop("AGENCY_REDIS_CLUSTER", None)
        if redis_cluster:
            self.env["AGENCY_REDIS_CLUSTER"] = redis_cluster
        self.env.update(env or {})
        self.client = Agency(kafka=kafka, redis=redis, namespace=self.namespace, redis_cluster=redis_cluster,
                             **(client_options or {}))

    def spawn(self, role: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{role}-{len(self.processes)}.log", "wb")
        process = subprocess.Popen([agency_bin(), role, *args], env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        self.processes.append(process)
        return process

    def agency(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([agency_bin(), *args], env=self.env, capture_output=True, timeout=120)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        self.client.close()


def deploy(tmp_path, redis_cluster=None, **settings):
    deployed = Deployment(tmp_path, redis_cluster, **settings)
    deployed.spawn("coordinator", "--chunk", "4")
    deployed.spawn("worker")
    deployed.spawn("worker")
    deadline = time.monotonic() + 60
    while not deployed.client.health()["healthy"]:
        assert time.monotonic() < deadline, deployed.client.health()
        time.sleep(0.2)
    return deployed


@pytest.fixture
def deployment(tmp_path):
    deployed = deploy(tmp_path)
    yield deployed
    deployed.stop()


@pytest.fixture
def cluster_deployment(tmp_path):
    """The same on the Redis Cluster: the processes with AGENCY_REDIS_CLUSTER, the client with
    ``redis_cluster``."""
    deployed = deploy(tmp_path, REDIS_CLUSTER)
    yield deployed
    deployed.stop()


def check_results_by_reference(deployed):
    """A session whose 300 numbers are kept by reference (over a count of 100), a fan-out over
    them, and the client's ``results`` iterator: all of them, a page from the middle, the last
    one, ``GROUP.TASK``, and the errors for a range outside them and a task keeping none."""
    import pytest as _pytest
    from agency_client import NotFound

    agency = deployed.client
    sid = agency.submit({"groups": [{"id": "g", "tasks": [
        {"id": "numbers", "executor": "echo", "inline_results": {"count": 100},
         "expansion_config": {"type": "range", "range": "1-300", "variable": "n"}, "input": {"n": "{{n}}"}},
        {"id": "doubled", "executor": "echo", "depends_on": ["numbers"],
         "expansion_config": {"type": "array", "array_mapping": {"item": "context.numbers"}},
         "input": {"n": "{{item.n}}"}},
    ]}]})
    result = agency.wait(sid, timeout=120)
    assert result["status"] == "completed", result
    assert result["context"]["numbers"] == {"$results": {"group": "g", "task": "numbers", "count": 300}}
    assert [r["n"] for r in result["context"]["doubled"]] == list(range(1, 301))
    numbers = agency.results(sid, "numbers", page=64)
    assert [r["n"] for r in numbers] == list(range(1, 301))
    assert [r["n"] for r in agency.results(sid, "g.numbers", start=150, limit=3)] == [151, 152, 153]
    assert [r["n"] for r in agency.results(sid, "numbers", start=299, limit=50)] == [300]
    with _pytest.raises(ValueError, match="outside task 'numbers'"):
        agency.results(sid, "numbers", start=300)
    with _pytest.raises(NotFound, match="keeps no results of task 'doubled'"):
        agency.results(sid, "doubled")
