//! Smoke test of the real servers `scripts/services.sh up` starts: Redis answers RESP and Kafka
//! answers the Kafka protocol. Later suites build on the same servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::free_port;
use integration_tests::{connect, kafka_addr, redis_addr};
use std::io::{BufRead, BufReader, Read, Write};

fn redis_command(reader: &mut BufReader<std::net::TcpStream>, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if let Some(len) = line.strip_prefix('$') {
        let len: usize = len.trim().parse().unwrap();
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body).unwrap();
        return String::from_utf8_lossy(&body[..len]).into_owned();
    }
    line.trim_end().to_string()
}

#[test]
fn redis_answers_and_stores() {
    let mut redis = BufReader::new(connect("redis", redis_addr()));
    assert_eq!(redis_command(&mut redis, &["PING"]), "+PONG");
    let key = format!("agency:test:smoke:{}", std::process::id());
    assert_eq!(
        redis_command(&mut redis, &["SET", &key, "hello", "PX", "10000"]),
        "+OK"
    );
    assert_eq!(redis_command(&mut redis, &["GET", &key]), "hello");
    assert_eq!(redis_command(&mut redis, &["DEL", &key]), ":1");
    let version = redis_command(&mut redis, &["INFO", "server"]);
    let major: u32 = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.split('.').next()?.parse().ok())
        .expect("INFO server has redis_version");
    assert!(major >= 7, "Redis 7 or newer is required, found {version}");
}

#[test]
fn kafka_answers_api_versions() {
    let mut kafka = connect("kafka", kafka_addr());
    // ApiVersions v0: api_key 18, api_version 0, correlation id, empty client id.
    let correlation: i32 = 0x5eed;
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    kafka.write_all(&request).unwrap();

    let mut size = [0; 4];
    kafka.read_exact(&mut size).unwrap();
    let mut response = vec![0; i32::from_be_bytes(size) as usize];
    kafka.read_exact(&mut response).unwrap();
    let int16 = |at: usize| i16::from_be_bytes([response[at], response[at + 1]]);
    assert_eq!(
        i32::from_be_bytes(response[0..4].try_into().unwrap()),
        correlation
    );
    assert_eq!(int16(4), 0, "ApiVersions error code");
    let count = i32::from_be_bytes(response[6..10].try_into().unwrap()) as usize;
    // Each entry: api_key, min_version, max_version (int16 each).
    let keys: Vec<i16> = (0..count).map(|i| int16(10 + i * 6)).collect();
    for (key, name) in [
        (0, "Produce"),
        (1, "Fetch"),
        (3, "Metadata"),
        (11, "JoinGroup"),
        (18, "ApiVersions"),
    ] {
        assert!(
            keys.contains(&key),
            "broker does not support {name} (api key {key}); it supports {keys:?}"
        );
    }
}

/// `scripts/services.sh up` in a state folder of its own, with a Kafka port nobody uses unless
/// `kafka_port` is given; Redis is the running one, so only the Kafka part is exercised.
fn services_up(state: &std::path::Path, kafka_port: u16, env: &[(&str, &str)]) -> (bool, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg("up")
        .env("AGENCY_SERVICES_STATE", state)
        .env("AGENCY_REDIS_PORT", redis_addr().port().to_string())
        .env("AGENCY_KAFKA_PORT", kafka_port.to_string())
        .env("AGENCY_KAFKA_CONTROLLER_PORT", free_port().to_string())
        .env("AGENCY_BROKER", "kafka")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(integration_tests::unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_kafka_port_held_by_something_else_is_named() {
    // A listener that accepts and never answers the Kafka protocol.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let (ok, stderr) = services_up(&state_dir("squatted"), port, &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} is taken by"))
            && stderr.contains("does not answer as a Kafka broker"),
        "{stderr}"
    );
}

#[test]
fn storage_of_another_cluster_is_refused() {
    let state = state_dir("other-cluster");
    std::fs::create_dir_all(state.join("kafka-data")).unwrap();
    std::fs::write(
        state.join("kafka-data/meta.properties"),
        "node.id=1\ndirectory.id=abc\nversion=1\ncluster.id=c29tZW9uZS1lbHNlcy0wMQ\n",
    )
    .unwrap();
    let (ok, stderr) = services_up(&state, free_port(), &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("formatted for cluster id 'c29tZW9uZS1lbHNlcy0wMQ'"),
        "{stderr}"
    );
}

#[test]
fn a_java_older_than_17_is_refused() {
    // A `java` that reports version 11, found through JAVA_HOME.
    let home = state_dir("old-java");
    std::fs::create_dir_all(home.join("bin")).unwrap();
    let java = home.join("bin/java");
    std::fs::write(
        &java,
        "#!/bin/sh\necho 'openjdk version \"11.0.21\" 2023-10-17' >&2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&java, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, stderr) = services_up(
        &state_dir("old-java-state"),
        free_port(),
        &[("JAVA_HOME", home.to_str().unwrap())],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("needs Java 17 or newer") && stderr.contains("11.0.21"),
        "{stderr}"
    );
}

#[test]
fn a_kafka_version_maven_cannot_fetch_is_named() {
    let cache = state_dir("no-such-kafka-cache");
    let (ok, stderr) = services_up(
        &state_dir("no-such-kafka"),
        free_port(),
        &[
            ("AGENCY_KAFKA_VERSION", "0.0.0-no-such-version"),
            ("AGENCY_SERVICES_CACHE", cache.to_str().unwrap()),
        ],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("Maven could not fetch org.apache.kafka:kafka_2.13:0.0.0-no-such-version"),
        "{stderr}"
    );
}
