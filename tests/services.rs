//! Smoke test of the real servers `scripts/services.sh up` starts: Redis answers RESP and Kafka
//! answers the Kafka protocol. Later suites build on the same servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
