//! Plain HTTP from the tests: one request on a socket of its own, and waiting for a port.

use crate::connect;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP/1.0 request to `127.0.0.1:port` (so the answer is never chunked): the status code and
/// the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_with(port, method, path, &[]);
    (status, body)
}

/// As [`http`], with more header lines (`Authorization: Bearer ...`): the status code, the
/// head and the body.
pub fn http_with(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = connect("the HTTP server", SocketAddr::from(([127, 0, 0, 1], port)));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, head.to_string(), body.to_string())
}

/// Waits until `127.0.0.1:port` takes connections (a process's `--http` is up).
pub fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
