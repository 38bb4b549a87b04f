"""The client on the secured stack of `scripts/services.sh secure up`: Kafka over SASL_SSL with a
SCRAM user and Redis over TLS with a client certificate and an ACL user, under a throwaway CA;
a coordinator and two workers there, and the client submitting, waiting and checking health. A
wrong Kafka password is refused at once, with librdkafka's reason."""

import os
import pathlib
import time
import uuid

import pytest

from agency_client import Agency, AgencyError
from conftest import ROOT, deploy


def secrets():
    state = pathlib.Path(os.environ.get("AGENCY_SERVICES_STATE", ROOT / ".services"))
    file = state / "secure" / "secrets.env"
    if not file.exists():
        pytest.fail(f"{file} is missing: the secured stack is started by `scripts/services.sh secure up` (scripts/test.sh does)")
    return dict(line.split("=", 1) for line in file.read_text().splitlines() if "=" in line)


def kafka_config(secret, password=None):
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": secret["AGENCY_SECURE_KAFKA_USER"],
        "sasl.password": password or secret["AGENCY_SECURE_KAFKA_PASSWORD"],
        "ssl.ca.location": secret["AGENCY_SECURE_CA"],
    }


def redis_options(secret):
    return {
        "username": secret["AGENCY_SECURE_REDIS_USER"],
        "password": secret["AGENCY_SECURE_REDIS_PASSWORD"],
        "ssl_ca_certs": secret["AGENCY_SECURE_CA"],
        "ssl_certfile": secret["AGENCY_SECURE_CLIENT_CERT"],
        "ssl_keyfile": secret["AGENCY_SECURE_CLIENT_KEY"],
    }


def process_env(secret):
    """The same settings as the `agency` processes read them."""
    env = {f"AGENCY_KAFKA_{name.upper().replace('.', '_')}": value for name, value in kafka_config(secret).items()}
    env.update({
        "AGENCY_REDIS_USER": secret["AGENCY_SECURE_REDIS_USER"],
        "AGENCY_REDIS_PASSWORD": secret["AGENCY_SECURE_REDIS_PASSWORD"],
        "AGENCY_REDIS_CA": secret["AGENCY_SECURE_CA"],
        "AGENCY_REDIS_CERT": secret["AGENCY_SECURE_CLIENT_CERT"],
        "AGENCY_REDIS_KEY": secret["AGENCY_SECURE_CLIENT_KEY"],
    })
    return env


@pytest.fixture
def secured(tmp_path):
    secret = secrets()
    deployed = deploy(
        tmp_path,
        kafka=secret["AGENCY_SECURE_KAFKA"],
        redis=f"rediss://{secret['AGENCY_SECURE_REDIS']}",
        env=process_env(secret),
        client_options={"kafka_config": kafka_config(secret), "redis_options": redis_options(secret)},
    )
    yield deployed, secret
    deployed.stop()


def test_a_session_runs_on_the_secured_stack(secured):
    deployment, _ = secured
    agency = deployment.client
    sid = agency.submit_task("echo", {"hi": "{{name}}", "names": ["ann", "bob"],
                                      "expansion_config": {"type": "array", "array_mapping": {"name": "names"}}},
                             session_id=f"py-secure-{uuid.uuid4().hex[:10]}")
    result = agency.wait(sid, timeout=60)
    assert result["status"] == "completed", result
    assert [item["hi"] for item in result["context"]["task"]] == ["ann", "bob"]
    health = agency.health()
    assert health["kafka"]["ok"] and health["redis"]["ok"], health


def test_a_wrong_kafka_password_is_refused_at_once():
    secret = secrets()
    agency = Agency(kafka=secret["AGENCY_SECURE_KAFKA"], redis=f"rediss://{secret['AGENCY_SECURE_REDIS']}",
                    namespace=f"py-{uuid.uuid4().hex[:8]}.",
                    kafka_config=kafka_config(secret, password="not-the-password"),
                    redis_options=redis_options(secret))
    started = time.monotonic()
    with pytest.raises(AgencyError) as refused:
        agency.submit_task("echo", {"hi": 1})
    # Refused, not waited out: the 30 s a delivery may take.
    assert time.monotonic() - started < 20
    assert "refused this client" in str(refused.value) and "SASL authentication" in str(refused.value)
    assert "not-the-password" not in str(refused.value)
    agency.close()
