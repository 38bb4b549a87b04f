//! Shared helpers for the integration tests: where the real servers are, and how to tell a
//! person to start them when they are not there.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Redis, from `AGENCY_REDIS` (`redis://host:port`), by default 127.0.0.1:6379.
pub fn redis_addr() -> SocketAddr {
    let url = std::env::var("AGENCY_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    resolve(url.trim_start_matches("redis://").trim_end_matches('/'))
}

/// The Kafka broker, from `AGENCY_KAFKA` (`host:port`), by default 127.0.0.1:9092.
pub fn kafka_addr() -> SocketAddr {
    let broker = std::env::var("AGENCY_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    resolve(&broker)
}

fn resolve(address: &str) -> SocketAddr {
    match address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
    {
        Some(addr) => addr,
        None => panic!("cannot resolve server address `{address}`"),
    }
}

/// Connects with a timeout, or fails the test saying how to start the server.
pub fn connect(name: &str, addr: SocketAddr) -> TcpStream {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(stream) => {
            let timeout = Some(Duration::from_secs(5));
            stream.set_read_timeout(timeout).ok();
            stream.set_write_timeout(timeout).ok();
            stream
        }
        Err(error) => {
            panic!("{name} is not answering at {addr} ({error}): run scripts/services.sh up")
        }
    }
}

/// A name no other test run uses: for sessions, topics and consumer groups.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The Redis URL tests use.
pub fn redis_url() -> String {
    std::env::var("AGENCY_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Kafka bootstrap servers tests use.
pub fn kafka_brokers() -> String {
    std::env::var("AGENCY_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}
