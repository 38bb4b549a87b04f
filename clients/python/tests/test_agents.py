"""Agents through the Python client against a real deployment: 8 agent processes claim and
complete a session's 10,000 agent items, each exactly once; a stale claim is released after
its timeout and its late completion refused; the task manager's parents, children, summary and
metadata."""

import json
import multiprocessing
import os
import uuid

import pytest

from agency_client import Agency, AgencyError, NotFound, StaleClaim, TaskStatus

KAFKA = os.environ.get("AGENCY_KAFKA", "127.0.0.1:9092")
REDIS = os.environ.get("AGENCY_REDIS", "redis://127.0.0.1:6379")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def agent_task(task_id: str, kind: str, instances: int, timeout_ms: int = 60_000, **extra):
    return {"id": task_id, "executor": "agent", "agent": {"type": kind, "claim_timeout_ms": timeout_ms},
            "input": {"n": "{{n}}", "ns": list(range(instances)),
                      "expansion_config": {"type": "array", "array_mapping": {"n": "ns"}}}, **extra}


def agent_process(kind: str, number: int, done: "multiprocessing.Queue") -> None:
    """One agent: claims and completes until a quiet 3 s after its first item; reports what
    it completed."""
    agency = Agency(kafka=KAFKA, redis=REDIS)
    completed = []
    wait = 120.0
    while True:
        claim = agency.claim(f"agent-{number}", [kind], wait=wait)
        if claim is None:
            break
        wait = 3.0
        agency.complete(claim["token"], {"n": claim["input"]["n"], "by": number})
        completed.append((claim["instance"], claim["attempt"]))
    done.put((number, completed))


def test_eight_agent_processes_claim_ten_thousand_items_each_exactly_once(deployment):
    agency = deployment.client
    kind = unique("py-analyze")
    sid = agency.submit({"groups": [{"id": "g", "tasks": [agent_task("review", kind, 10_000)]}]}, session_id=unique("py-agents"))
    done = multiprocessing.get_context("spawn").Queue()
    agents = [multiprocessing.get_context("spawn").Process(target=agent_process, args=(kind, k, done)) for k in range(8)]
    for process in agents:
        process.start()
    reports = dict(done.get(timeout=300) for _ in agents)
    for process in agents:
        process.join(60)
        assert process.exitcode == 0
    claimed = [instance for completed in reports.values() for instance, _ in completed]
    assert sorted(claimed) == list(range(10_000)), "each item claimed and completed once"
    assert all(attempt == 1 for completed in reports.values() for _, attempt in completed)
    assert all(reports[k] for k in range(8)), "every agent took some work"
    result = agency.wait(sid, timeout=120)
    assert result["status"] == "completed", result
    review = result["context"]["review"]
    assert [answer["n"] for answer in review] == list(range(10_000))
    assert result["groups"]["g"]["tasks"]["review"]["attempts"] == 10_000


def test_a_stale_claim_is_released_and_its_late_completion_refused(deployment):
    agency = deployment.client
    kind = unique("py-slow")
    task = agent_task("once", kind, 1, timeout_ms=1_000, retry={"max_retries": 1, "retry_delays": [0]})
    sid = agency.submit({"groups": [{"id": "g", "tasks": [task]}]}, session_id=unique("py-stale"))
    first = agency.claim("a1", [kind], wait=30)
    assert (first["session_id"], first["task"], first["instance"], first["attempt"]) == (sid, "once", 0, 1)
    # Past its 1 s timeout the claim is released and counted; the retry is attempt 2.
    second = agency.claim("a2", [kind], wait=30)
    assert second["attempt"] == 2
    with pytest.raises(StaleClaim, match="does not hold an item"):
        agency.complete(first["token"], {"late": True})
    agency.release(second["token"])
    third = agency.claim("a3", [kind], wait=30)
    assert third["attempt"] == 2
    with pytest.raises(StaleClaim):
        agency.release(second["token"])
    agency.complete(third["token"], {"ok": 1})
    result = agency.wait(sid, timeout=60)
    assert result["status"] == "completed", result
    assert result["context"]["once"] == [{"ok": 1}]
    assert result["groups"]["g"]["tasks"]["once"]["attempts"] == 2
    assert agency.claim("a4", [kind]) is None


def test_the_task_manager_parents_children_summary_and_metadata(deployment):
    agency = deployment.client
    workflow = unique("py-wf")
    analyze, validate = unique("analyze"), unique("validate")
    root = agency.create_task(analyze, {"file": "data.csv", "params": {"threshold": 0.8}}, workflow=workflow)
    children = [agency.create_task(validate, {"part": n}, parent_id=root, workflow=workflow, claim_timeout_ms=60_000) for n in range(3)]
    task = agency.get_task(root)
    assert (task["status"], task["type"], task["parent_id"]) == ("pending", analyze, None)
    assert task["data"] == {"file": "data.csv", "params": {"threshold": 0.8}}
    assert agency.get_task("ghost") is None

    # The CLI's agents and the client's share the queue: the root is claimed from the command.
    claimed = deployment.agency("agent", "claim", "--agent", "cli", "--types", analyze, "--json")
    assert claimed.returncode == 0, claimed.stderr
    assert agency.get_task(root)["status"] == TaskStatus.IN_PROGRESS
    token = json.loads(claimed.stdout)["token"]
    agency.complete(token, {"output": "results.json"})
    done = agency.get_task(root)
    assert (done["status"], done["result"], done["locked_by"]) == ("completed", {"output": "results.json"}, "cli")

    first = agency.claim("agent-1", [validate])
    assert (first["task"], first["parent_id"], first["workflow"], first["session_id"]) == (children[0], root, workflow, None)
    agency.fail(first["token"], "schema mismatch")
    second = agency.claim("agent-2", [validate])
    agency.release(second["token"])
    assert agency.get_task(children[1])["status"] == "pending"
    again = agency.claim("agent-3", [validate])
    assert (again["task"], again["attempt"]) == (children[1], 2)
    agency.complete(again["token"])
    agency.cancel_task(children[2])
    with pytest.raises(AgencyError, match="cancelled already"):
        agency.cancel_task(children[2])
    assert agency.claim("agent-4", [validate]) is None

    listed = agency.children(root)
    assert [(c["id"], c["status"]) for c in listed] == [(children[0], "failed"), (children[1], "completed"), (children[2], "cancelled")]
    assert listed[0]["error"] == "schema mismatch"
    with pytest.raises(NotFound):
        agency.children("ghost")
    summary = agency.summary(workflow)
    assert summary["total_tasks"] == 4
    assert summary["status_counts"] == {"pending": 0, "in_progress": 0, "completed": 2, "failed": 1, "cancelled": 1}
    assert summary["type_counts"] == {analyze: 1, validate: 3}
    assert summary["by_type"][validate] == {"completed": 1, "failed": 1, "cancelled": 1}
    # The command reads the same counts.
    printed = deployment.agency("tasks", "summary", "--workflow", workflow)
    assert json.loads(printed.stdout) == summary

    def mine(metadata):
        return {k: v for k, v in metadata.items() if k not in ("initialized_at", "last_updated", "workflow_type")}

    assert mine(agency.metadata(workflow, {"version": "2.0", "started_by": "scheduler"})) == {"version": "2.0", "started_by": "scheduler"}
    assert mine(agency.metadata(workflow, {"version": "2.1"})) == {"version": "2.1", "started_by": "scheduler"}
    metadata = agency.metadata(workflow)
    assert mine(metadata) == {"version": "2.1", "started_by": "scheduler"}
    # Seed 003's own keys (issue 30, finding 17): the same from the command.
    assert metadata["workflow_type"] == "generic"
    assert metadata["initialized_at"] <= metadata["last_updated"] and metadata["last_updated"].endswith("Z")
    printed = deployment.agency("tasks", "metadata", "--workflow", workflow)
    assert json.loads(printed.stdout) == metadata

    with pytest.raises(AgencyError, match="is of workflow"):
        agency.create_task(validate, {}, parent_id=root, workflow=unique("other"))
    with pytest.raises(AgencyError, match="does not exist"):
        agency.create_task(validate, {}, parent_id="ghost", workflow=workflow)
    with pytest.raises(AgencyError, match="must be 1 to 200"):
        agency.create_task("bad type", {}, workflow=workflow)


def test_claims_within_a_workflow_of_any_type_and_listings(deployment):
    # Seed 003's get_next_task(agent_id, task_types=None), within one workflow; a workflow's
    # tasks listed a page at a time with filters; ISO times (issue 30, findings 15 to 17).
    agency = deployment.client
    workflow, other = unique("py-wf"), unique("py-other")
    analyze, validate = unique("analyze"), unique("validate")
    first = agency.create_task(analyze, {"n": 1}, workflow=workflow)
    elsewhere = agency.create_task(analyze, {"n": 0}, workflow=other)
    second = agency.create_task(validate, {"n": 2}, workflow=workflow)
    third = agency.create_task(analyze, {"n": 3}, workflow=workflow)

    claimed = agency.claim("a1", workflow=workflow)
    assert claimed["task"] == first and claimed["workflow"] == workflow
    assert agency.claim("a2", [validate], workflow=workflow)["task"] == second
    released = agency.claim("a3", workflow=workflow)
    assert released["task"] == third
    agency.release(released["token"])
    command = deployment.agency("agent", "claim", "--agent", "cli", "--workflow", workflow, "--json")
    assert command.returncode == 0, command.stderr
    assert json.loads(command.stdout)["task"] == third
    assert agency.claim("a4", workflow=workflow) is None
    nothing = deployment.agency("agent", "claim", "--agent", "cli", "--workflow", workflow)
    assert nothing.returncode == 3 and "of any type in workflow" in nothing.stderr.decode()
    assert agency.claim("a5", [analyze], workflow=other)["task"] == elsewhere
    agency.complete(claimed["token"], {"ok": True})

    page = agency.list_tasks(workflow, limit=2)
    assert [t["id"] for t in page["tasks"]] == [first, second] and page["next"] == 2
    rest = agency.list_tasks(workflow, start=page["next"])
    assert [t["id"] for t in rest["tasks"]] == [third] and rest["next"] is None
    done = agency.list_tasks(workflow, status=TaskStatus.COMPLETED)
    assert [t["id"] for t in done["tasks"]] == [first]
    assert [t["id"] for t in agency.list_tasks(workflow, task_type=analyze)["tasks"]] == [first, third]
    listed = deployment.agency("tasks", "list", "--workflow", workflow, "--type", analyze, "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    printed = json.loads(listed.stdout)
    assert [t["id"] for t in printed["tasks"]] == [first] and printed["next"] == 1
    with pytest.raises(AgencyError, match="no task status"):
        agency.list_tasks(workflow, status="done")

    task = agency.get_task(first)
    assert task["created_at"].endswith("Z") and task["completed_at"] >= task["created_at"]
    assert task["locked_at"] is not None
    assert json.loads(deployment.agency("tasks", "get", first).stdout) == task
