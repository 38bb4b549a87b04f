//! The secured stack end to end (`scripts/services.sh secure up`): Apache Kafka over SASL_SSL
//! with a SCRAM user, Redis and a Redis Cluster over TLS with client certificates and an ACL
//! user, all under a throwaway CA; and the refusals a wrong password or an untrusted CA meet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::secured::Secured;
use integration_tests::{agency_bin, strip_times, unique, Cluster};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pipeline(id: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["session_id"] = Value::String(id.to_string());
    doc
}

/// A result as two runs of one document share it: without its run and its times.
fn comparable(mut result: Value) -> Value {
    result.as_object_mut().unwrap().shift_remove("run");
    strip_times(&mut result);
    result
}

/// The pipeline's result on the plain stack (the shared Kafka and Redis).
fn plain_result(id: &str) -> Value {
    let cluster = Cluster::start("plain");
    let (code, result) = cluster.submit_wait(&pipeline(id));
    assert_eq!(code, 0, "{result:#}");
    comparable(result)
}

fn pairs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A Kafka properties file of the SCRAM user, in `dir`.
fn properties_file(secured: &Secured, dir: &Path) -> String {
    let text: String = secured
        .kafka_properties(secured.get("AGENCY_SECURE_KAFKA_PASSWORD"))
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect();
    let file = dir.join("client.properties");
    std::fs::write(&file, format!("# the secured stack's Kafka user\n{text}")).unwrap();
    file.display().to_string()
}

#[test]
fn a_session_on_kafka_over_sasl_ssl_and_redis_over_tls_gives_the_plain_stacks_result() {
    let secured = Secured::load();
    let redis = secured.redis_env();
    let mut cluster = Cluster::start_configured(
        "secured",
        &[],
        secured.kafka(),
        &secured.redis_url(),
        &pairs(&redis),
    );
    // Workers and `submit` read the Kafka user from a properties file, the coordinator from
    // its variables.
    let file = properties_file(&secured, &cluster.dir);
    cluster.env.push(("AGENCY_KAFKA_PROPERTIES".into(), file));
    cluster.spawn_env("coordinator", &[], &pairs(&secured.kafka_env()));
    cluster.spawn("worker");
    cluster.spawn("worker");
    let id = unique("secured");
    let (code, result) = cluster.submit_wait(&pipeline(&id));
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["status"], "completed", "{result:#}");
    assert_eq!(comparable(result), plain_result(&id));
}

#[test]
fn a_session_on_a_redis_cluster_over_tls_gives_the_plain_stacks_result() {
    let secured = Secured::load();
    let mut env = secured.redis_env();
    env.extend(secured.kafka_env());
    env.push((
        "AGENCY_REDIS_CLUSTER".into(),
        secured.get("AGENCY_SECURE_REDIS_CLUSTER").into(),
    ));
    let cluster = Cluster::start_configured(
        "secured-cluster",
        &["coordinator", "worker", "worker"],
        secured.kafka(),
        &secured.redis_url(),
        &pairs(&env),
    );
    let id = unique("secured-cluster");
    let (code, result) = cluster.submit_wait(&pipeline(&id));
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(comparable(result), plain_result(&id));
}

/// Runs `agency` with `args` and `env` (over the secured stack's own settings); its exit code,
/// its stderr, and how long it took.
fn run(secured: &Secured, args: &[&str], env: &[(String, String)]) -> (i32, String, Duration) {
    let started = Instant::now();
    let mut command = Command::new(agency_bin());
    command
        .args(args)
        .env("AGENCY_KAFKA", secured.kafka())
        .env("AGENCY_REDIS", secured.redis_url())
        .envs(secured.kafka_env())
        .envs(secured.redis_env())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null());
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).to_string(),
        started.elapsed(),
    )
}

fn set(name: &str, value: &str) -> Vec<(String, String)> {
    vec![(name.to_string(), value.to_string())]
}

#[test]
fn a_wrong_password_or_an_untrusted_ca_is_refused_at_once_naming_the_cause() {
    let secured = Secured::load();
    let other_ca = secured.get("AGENCY_SECURE_OTHER_CA");
    // A coordinator waits a minute for servers that do not answer yet; one that refuses it is
    // said at once (well within that minute), with librdkafka's or the server's reason.
    let cases = [
        (
            "kafka, wrong password",
            set("AGENCY_KAFKA_SASL_PASSWORD", "not-the-password"),
            "SASL authentication error",
        ),
        (
            "kafka, untrusted CA",
            set("AGENCY_KAFKA_SSL_CA_LOCATION", other_ca),
            "certificate verify failed",
        ),
        (
            "redis, wrong password",
            set("AGENCY_REDIS_PASSWORD", "not-the-password"),
            "Password authentication failed",
        ),
        (
            "redis, untrusted CA",
            set("AGENCY_REDIS_CA", other_ca),
            "invalid peer certificate",
        ),
    ];
    for (case, env, cause) in cases {
        let (code, stderr, took) = run(&secured, &["coordinator"], &env);
        assert_ne!(code, 0, "{case}: {stderr}");
        assert!(stderr.contains("refused this client"), "{case}: {stderr}");
        assert!(stderr.contains(cause), "{case}: {stderr}");
        assert!(
            took < Duration::from_secs(30),
            "{case}: took {took:?}: {stderr}"
        );
        for secret in secured.secrets() {
            assert!(!stderr.contains(secret), "{case}: a secret in {stderr}");
        }
    }
}

#[test]
fn sasl_plain_and_scram_sha_256_users_are_let_in_by_flags_too() {
    let secured = Secured::load();
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let flag = format!("sasl.mechanism={mechanism}");
        let started = Instant::now();
        let output = Command::new(agency_bin())
            .args(["health", "--json", "--kafka-property", &flag])
            .env("AGENCY_KAFKA", secured.kafka())
            .env("AGENCY_REDIS", secured.redis_url())
            .envs(secured.kafka_env())
            .envs(secured.redis_env())
            .output()
            .unwrap();
        let health: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{mechanism}: {e}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert_eq!(health["kafka"]["ok"], true, "{mechanism}: {health}");
        assert_eq!(health["redis"]["ok"], true, "{mechanism}: {health}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
