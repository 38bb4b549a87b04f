//! The secured stack end to end (`scripts/services.sh secure up`): Apache Kafka over SASL_SSL
//! with a SCRAM user, Redis and a Redis Cluster over TLS with client certificates and an ACL
//! user, all under a throwaway CA; and the refusals a wrong password or an untrusted CA meet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::secured::Secured;
use integration_tests::{
    agency_bin, free_port, http_with, strip_times, unique, wait_for_port, Cluster,
};
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

const OPERATOR: &str = "operator-token-0123456789";
const READER: &str = "read-only-token-0123456789";

/// A coordinator and a worker on the plain stack whose `--http` answers only to tokens; their
/// ports.
fn guarded(name: &str) -> (Cluster, u16, u16) {
    let (coordinator, worker) = (free_port(), free_port());
    let mut cluster = Cluster::start_with(name, &[]);
    let port = coordinator.to_string();
    cluster.spawn_env(
        "coordinator",
        &["--http", &port, "--http-read-token", READER],
        &[("AGENCY_HTTP_TOKEN", OPERATOR)],
    );
    let port = worker.to_string();
    cluster.spawn_with(
        "worker",
        &[
            "--http",
            &port,
            "--http-read-token",
            READER,
            "--http-metrics-open",
        ],
    );
    wait_for_port(coordinator);
    wait_for_port(worker);
    (cluster, coordinator, worker)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[test]
fn the_http_api_and_page_answer_only_to_their_tokens() {
    let (cluster, port, worker) = guarded("tokens");
    let read = bearer(READER);
    let operator = bearer(OPERATOR);
    let wrong = bearer("not-a-token-of-this-server");
    // No token, or a wrong one: 401 with a JSON error, for the page, the API and /metrics.
    for path in ["/", "/api/sessions", "/metrics", "/sessions/x"] {
        for headers in [vec![], vec![wrong.as_str()]] {
            let (status, head, body) = http_with(port, "GET", path, &headers);
            assert_eq!(status, 401, "{path}: {body}");
            assert!(
                head.contains("WWW-Authenticate: Bearer")
                    || head.contains("www-authenticate: Bearer"),
                "{head}"
            );
            let error: Value = serde_json::from_str(&body).unwrap();
            assert!(error["error"].is_string(), "{body}");
        }
    }
    // The read-only token reads, and may not change anything: 403.
    assert_eq!(http_with(port, "GET", "/api/sessions", &[&read]).0, 200);
    assert_eq!(http_with(port, "GET", "/metrics", &[&read]).0, 200);
    let doc = serde_json::json!({"session_id": unique("guarded"), "groups": [{"id": "g", "tasks": [
        {"id": "nap", "executor": "sleep", "input": {"ms": 60000}}]}]});
    let id = cluster.submit(&doc);
    for change in ["cancel", "pause", "resume"] {
        let path = format!("/api/sessions/{id}/{change}");
        let (status, _, body) = http_with(port, "POST", &path, &[&read]);
        assert_eq!(status, 403, "{change}: {body}");
        assert!(body.contains("operator token"), "{body}");
        // Changes only by POST, whatever the token.
        assert_eq!(http_with(port, "GET", &path, &[&operator]).0, 405);
    }
    // The operator token changes: the session is cancelled.
    let path = format!("/api/sessions/{id}/cancel");
    let (status, _, body) = http_with(port, "POST", &path, &[&operator]);
    assert!(status == 202, "{status} {body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, body) = http_with(port, "GET", &format!("/api/sessions/{id}"), &[&read]);
        let answer: Value = serde_json::from_str(&body).unwrap();
        if answer["result"]["status"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A browser opens the page once with its token: it gets it as an HttpOnly cookie and the
    // address without it.
    let (status, head, _) = http_with(port, "GET", &format!("/?token={READER}"), &[]);
    assert_eq!(status, 303, "{head}");
    let lower = head.to_lowercase();
    assert!(
        lower.contains("location: /\r\n") || lower.ends_with("location: /"),
        "{head}"
    );
    assert!(
        lower.contains("httponly") && lower.contains("samesite=strict"),
        "{head}"
    );
    let cookie = format!("Cookie: agency_token={READER}");
    assert_eq!(http_with(port, "GET", "/", &[&cookie]).0, 200);
    assert_eq!(
        http_with(port, "GET", &format!("/?token=wrong-{READER}"), &[]).0,
        401
    );
    // The worker's /metrics is open on its own flag.
    assert_eq!(http_with(worker, "GET", "/metrics", &[]).0, 200);
    // No token reached a log.
    for entry in std::fs::read_dir(&cluster.dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains(OPERATOR) && !text.contains(READER),
            "{}",
            path.display()
        );
    }
}

#[test]
fn http_without_a_token_is_refused_at_start_unless_open_on_purpose() {
    let output = Command::new(agency_bin())
        .args(["coordinator", "--http", "0"])
        .env_remove("AGENCY_HTTP_TOKEN")
        .env_remove("AGENCY_HTTP_READ_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("give a token") && said.contains("--http-open"),
        "{said}"
    );
    let short = Command::new(agency_bin())
        .args(["coordinator", "--http", "0", "--http-token", "short"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16"));
}

#[test]
fn a_hostile_client_gets_4xx_and_the_server_keeps_answering() {
    use std::io::{Read as _, Write as _};
    let (_cluster, port, _) = guarded("hostile");
    let read = bearer(READER);
    let raw = |bytes: &[u8]| -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // A server may close on a request it will not read whole; what it said is kept.
        let _ = stream.write_all(bytes);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_string()
    };
    // Slow clients hold their connections: a request line never finished, a POST whose body
    // never comes.
    let mut slow_head = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow_head
        .write_all(b"GET /api/sessions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut slow_body = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        slow_body,
        "POST /api/sessions/x/cancel HTTP/1.1\r\nHost: x\r\n{read}\r\nContent-Length: 100000\r\n\r\nab"
    )
    .unwrap();
    // A header of a megabyte, ten thousand headers, a request line that is not HTTP.
    let huge = format!(
        "GET /api/sessions HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = raw(huge.as_bytes());
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 431")
            || answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let many: String = (0..10_000).map(|n| format!("X-H{n}: v\r\n")).collect();
    let answer = raw(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 431")
            || answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let answer = raw(b"\x16\x03\x01garbage\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    // Paths that are not the API's, with the token: 4xx with a JSON error.
    let long = format!("/api/sessions/{}", "x".repeat(10_000));
    for path in [
        "/../../etc/passwd",
        "/api/sessions/%ZZ",
        "/api/sessions/a%00b",
        long.as_str(),
        "/api/sessions/x/cancel/more",
    ] {
        let (status, _, body) = http_with(port, "GET", path, &[&read]);
        assert!((400..500).contains(&status), "{path}: {status} {body}");
        assert!(
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v["error"].is_string()),
            "{path}: {body}"
        );
    }
    // Through all of it, and with the slow clients still connected, it answers.
    assert_eq!(http_with(port, "GET", "/api/sessions", &[&read]).0, 200);
    drop((slow_head, slow_body));
    assert_eq!(http_with(port, "GET", "/metrics", &[&read]).0, 200);
}

/// A consumer or producer setting of the secured Kafka for this test's own rdkafka clients.
fn secured_client(secured: &Secured) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", secured.kafka());
    for (name, value) in secured.kafka_properties(secured.get("AGENCY_SECURE_KAFKA_PASSWORD")) {
        config.set(name, value);
    }
    config
}

/// The first dead letter of `topic`, read over the secured Kafka.
fn dead_letter(secured: &Secured, action_topic: &str, dead_letters: &str) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::Message as _;
    let producer: BaseProducer = secured_client(secured).create().unwrap();
    producer
        .send(
            BaseRecord::to(action_topic)
                .key("junk")
                .payload("{not an action"),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = secured_client(secured)
        .set("group.id", unique("dead-letter-reader"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    consumer.subscribe(&[dead_letters]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            return String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        }
    }
    panic!("no dead letter on {dead_letters} within 90 s");
}

#[test]
fn no_secret_reaches_logs_results_dead_letters_the_page_or_metrics() {
    let secured = Secured::load();
    let operator = format!("operator-{}", unique("token"));
    let reader = format!("reader-{}", unique("token"));
    // The Redis password inside the URL, as many deployments give it; everything else by
    // variables; the most talkative logs.
    let redis_url = format!(
        "rediss://{}:{}@{}",
        secured.get("AGENCY_SECURE_REDIS_USER"),
        secured.get("AGENCY_SECURE_REDIS_PASSWORD"),
        secured.get("AGENCY_SECURE_REDIS")
    );
    let mut env: Vec<(String, String)> = secured
        .redis_env()
        .into_iter()
        .filter(|(name, _)| {
            !name.starts_with("AGENCY_REDIS_USER") && !name.starts_with("AGENCY_REDIS_PASSWORD")
        })
        .collect();
    env.extend(secured.kafka_env());
    env.push(("AGENCY_LOG".into(), "debug".into()));
    env.push(("AGENCY_HTTP_TOKEN".into(), operator.clone()));
    env.push(("AGENCY_HTTP_READ_TOKEN".into(), reader.clone()));
    let mut cluster =
        Cluster::start_configured("secrets", &[], secured.kafka(), &redis_url, &pairs(&env));
    let (port, worker_port) = (free_port(), free_port());
    cluster.spawn_with("coordinator", &["--http", &port.to_string()]);
    cluster.spawn_with("worker", &["--http", &worker_port.to_string()]);
    cluster.spawn("worker");
    wait_for_port(port);
    wait_for_port(worker_port);

    let mut seen: Vec<(String, String)> = Vec::new();
    let id = unique("secrets");
    let (code, result) = cluster.submit_wait(&pipeline(&id));
    assert_eq!(code, 0, "{result:#}");
    seen.push(("the result".into(), result.to_string()));
    // A session that fails, connecting nowhere: its errors are in its result too.
    let failing = serde_json::json!({"session_id": unique("secrets-fail"), "groups": [{"id": "g",
        "failure_policy": "all_settled", "tasks": [{"id": "get", "executor": "http_get",
            "retry": {"max_retries": 0}, "input": {"url": "http://127.0.0.1:1/nothing"}}]}]});
    let (_, failed) = cluster.submit_wait(&failing);
    seen.push(("a failed result".into(), failed.to_string()));
    for args in [
        vec!["status", id.as_str(), "--json"],
        vec!["health", "--json"],
        vec!["health"],
        vec!["sessions", "--json"],
        vec!["executors", "--json"],
        vec!["coordinator", "--help"],
        vec!["worker", "--help"],
    ] {
        let output = cluster.command(&args).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        seen.push((format!("agency {}", args.join(" ")), said));
    }
    let bearer = format!("Authorization: Bearer {reader}");
    for path in [
        "/",
        "/api/sessions",
        &format!("/api/sessions/{id}"),
        "/metrics",
    ] {
        let (status, head, body) = http_with(port, "GET", path, &[&bearer]);
        assert_eq!(status, 200, "{path}");
        seen.push((format!("GET {path}"), format!("{head}{body}")));
    }
    let (_, head, body) = http_with(worker_port, "GET", "/metrics", &[&bearer]);
    seen.push(("the worker's /metrics".into(), format!("{head}{body}")));
    let action_topic = format!("{}agency_action", cluster.namespace);
    let dead_letters = format!("{}agency_dead_letter", cluster.namespace);
    seen.push((
        "a dead letter".into(),
        dead_letter(&secured, &action_topic, &dead_letters),
    ));
    drop(
        cluster
            .processes
            .drain(..)
            .map(|mut child| {
                let _ = child.kill();
                child.wait()
            })
            .collect::<Vec<_>>(),
    );
    for entry in std::fs::read_dir(&cluster.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.is_empty(), "{} says little: {text}", path.display());
            seen.push((path.display().to_string(), text));
        }
    }
    let mut secrets: Vec<&str> = secured.secrets();
    secrets.push(&operator);
    secrets.push(&reader);
    for (what, text) in &seen {
        for (n, secret) in secrets.iter().enumerate() {
            // Which secret by its place in the list, never by its value.
            assert!(!text.contains(secret), "secret {n} is in {what}");
        }
    }
}
