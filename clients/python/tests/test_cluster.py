"""The Python client on a Redis Cluster (`scripts/services.sh up --redis-cluster`), against a
coordinator and two workers on it: a session submitted, followed and waited for, its agent task
claimed and completed through the client, the sessions listed, the task manager."""

import json
import uuid

import redis

from conftest import REDIS_CLUSTER, check_results_by_reference


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_a_session_with_agents_runs_on_the_cluster(cluster_deployment):
    agency = cluster_deployment.client
    kind = unique("cluster-kind")
    sid = agency.submit({"groups": [
        {"id": "g", "tasks": [
            {"id": "echoes", "executor": "echo", "input": {"ns": list(range(20)),
             "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}},
            {"id": "reviewed", "executor": "agent", "agent": {"type": kind, "claim_timeout_ms": 60000},
             "input": {"n": "{{n}}", "ns": list(range(5)),
                       "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}},
        ]}]})
    done = set()
    while len(done) < 5:
        claim = agency.claim("py-agent", [kind], wait=60)
        assert claim is not None, "an item within 60 s"
        agency.complete(claim["token"], {"n": claim["input"]["n"]})
        done.add(claim["input"]["n"])
    result = agency.wait(sid, timeout=120)
    assert result["status"] == "completed"
    assert result["groups"]["g"]["tasks"]["echoes"]["succeeded"] == 20
    assert sorted(r["n"] for r in result["context"]["reviewed"]) == [0, 1, 2, 3, 4]
    assert agency.status(sid)["status"] == "completed"
    assert sid in [s["session_id"] for s in agency.sessions()]
    # Stored on the cluster, not on the single Redis.
    nodes = [redis.cluster.ClusterNode(*n.rsplit(":", 1)) for n in REDIS_CLUSTER.split(",")]
    assert redis.RedisCluster(startup_nodes=nodes).exists(f"agency:result:{{{sid}}}")
    assert not redis.Redis().exists(f"agency:result:{{{sid}}}")


def test_the_task_manager_works_on_the_cluster(cluster_deployment):
    agency = cluster_deployment.client
    workflow = unique("cluster-wf")
    plan, step = unique("plan"), unique("step")
    root = agency.create_task(plan, {"goal": 1}, workflow=workflow)
    child = agency.create_task(step, {"n": 1}, parent_id=root, workflow=workflow)
    assert [c["id"] for c in agency.children(root)] == [child]
    # The CLI's agents on the cluster share the queue with the client's.
    claimed = cluster_deployment.agency("agent", "claim", "--agent", "cli", "--types", step, "--json")
    assert claimed.returncode == 0, claimed.stderr
    agency.complete(json.loads(claimed.stdout)["token"], {"ok": True})
    assert agency.get_task(child)["status"] == "completed"
    summary = agency.summary(workflow)
    assert (summary["status_counts"]["completed"], summary["status_counts"]["pending"]) == (1, 1)
    metadata = agency.metadata(workflow, {"owner": "py"})
    assert (metadata["owner"], metadata["workflow_type"]) == ("py", "generic")
    assert metadata["initialized_at"] <= metadata["last_updated"]


def test_results_kept_by_reference_are_read_by_page_on_the_cluster(cluster_deployment):
    check_results_by_reference(cluster_deployment)
