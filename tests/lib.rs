//! Shared helpers for the integration tests: where the real servers are, how to tell a person
//! to start them when they are not there, and a cluster of `agency` processes.
// Test helpers: a failure panics the test that called them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// The Redis Cluster tests use (`scripts/services.sh up --redis-cluster`): its nodes.
pub fn redis_cluster_nodes() -> Vec<String> {
    std::env::var("AGENCY_REDIS_CLUSTER")
        .unwrap_or_else(|_| {
            (7000..7006)
                .map(|port| format!("127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .split(',')
        .map(str::to_string)
        .collect()
}

/// The Kafka bootstrap servers tests use.
pub fn kafka_brokers() -> String {
    std::env::var("AGENCY_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Client settings for the test broker: its address, the consumer group protocol from
/// `AGENCY_KAFKA_GROUP_PROTOCOL` (`consumer` by default, `classic` for Tansu) and the fetch wait
/// from `AGENCY_KAFKA_FETCH_WAIT_MS`, as the `agency` processes read them.
pub fn kafka_options() -> events::KafkaOptions {
    let mut options = events::KafkaOptions::new(&kafka_brokers());
    if let Ok(protocol) = std::env::var("AGENCY_KAFKA_GROUP_PROTOCOL") {
        options.group_protocol = protocol.parse().unwrap();
    }
    if let Ok(ms) = std::env::var("AGENCY_KAFKA_FETCH_WAIT_MS") {
        options.fetch_wait = Duration::from_millis(ms.parse().unwrap());
    }
    options
}

/// The `agency` binary next to this test's executable, built first if needed.
pub fn agency_bin() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("agency");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-p", "agency", "--bin", "agency"])
            .status()
            .unwrap();
        assert!(built.success(), "cannot build the agency binary");
    }
    bin
}

/// Coordinators and workers, killed when dropped.
#[derive(Debug)]
pub struct Cluster {
    pub namespace: String,
    pub processes: Vec<Child>,
    pub dir: PathBuf,
    /// The Kafka bootstrap servers its processes use.
    pub kafka: String,
    /// The Redis URL its processes use.
    pub redis: String,
    /// Settings every process it starts gets (`AGENCY_KAFKA_REPLICATION`).
    pub env: Vec<(String, String)>,
}

impl Cluster {
    /// A coordinator and two workers.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, &["coordinator", "worker", "worker"])
    }

    pub fn start_with(name: &str, roles: &[&str]) -> Self {
        Self::start_on(name, roles, &kafka_brokers())
    }

    /// Processes of these roles on the Kafka broker at `kafka` (`host:port`).
    pub fn start_on(name: &str, roles: &[&str], kafka: &str) -> Self {
        Self::start_on_servers(name, roles, kafka, &redis_url())
    }

    /// Processes of these roles on the Kafka broker at `kafka` and the Redis at `redis` (a URL).
    pub fn start_on_servers(name: &str, roles: &[&str], kafka: &str, redis: &str) -> Self {
        Self::start_configured(name, roles, kafka, redis, &[])
    }

    /// As [`Cluster::start_on_servers`], every process (and `submit`) with these variables too.
    pub fn start_configured(
        name: &str,
        roles: &[&str],
        kafka: &str,
        redis: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let namespace = format!("{}.", unique(name));
        let dir = std::env::temp_dir().join(&namespace);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            namespace,
            processes: Vec::new(),
            dir,
            kafka: kafka.to_string(),
            redis: redis.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for role in roles {
            cluster.spawn(role);
        }
        cluster
    }

    /// Starts one more process; returns its index in `processes`.
    pub fn spawn(&mut self, role: &str) -> usize {
        self.spawn_with(role, &[])
    }

    /// Starts one more process with extra arguments; returns its index in `processes`. Its log
    /// is `{role}-{index}.log` in `dir`.
    pub fn spawn_with(&mut self, role: &str, args: &[&str]) -> usize {
        self.spawn_env(role, args, &[])
    }

    /// Starts one more process with extra arguments and environment variables (a failpoint,
    /// `AGENCY_FAILPOINT`); returns its index in `processes`.
    pub fn spawn_env(&mut self, role: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        self.spawn_via(&[], role, args, env)
    }

    /// Starts one more process through the program `via` (`ip netns exec <name>`), which runs
    /// `agency` with its arguments; returns its index in `processes`.
    pub fn spawn_via(
        &mut self,
        via: &[&str],
        role: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let log = std::fs::File::create(
            self.dir
                .join(format!("{role}-{}.log", self.processes.len())),
        )
        .unwrap();
        let child = self
            .command_via(via, &[role])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes.push(child);
        self.processes.len() - 1
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&[], args)
    }

    fn command_via(&self, via: &[&str], args: &[&str]) -> Command {
        let mut command = match via.split_first() {
            None => Command::new(agency_bin()),
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(agency_bin());
                command
            }
        };
        command
            .args(args)
            .env("AGENCY_NAMESPACE", &self.namespace)
            .env("AGENCY_KAFKA", &self.kafka)
            .env("AGENCY_REDIS", &self.redis)
            .env("AGENCY_LOG", "info")
            // The tests' sessions run programs and call the tests' own servers: their workers
            // allow every one (`tests/distributed.rs` checks what a worker refuses).
            .env("AGENCY_ALLOW_COMMAND", "*")
            .env("AGENCY_ALLOW_HTTP", "*")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `agency submit` without waiting; returns the session id it printed.
    pub fn submit(&self, doc: &Value) -> String {
        let file = self.dir.join(format!("{}.json", unique("session")));
        std::fs::write(&file, doc.to_string()).unwrap();
        let submitted = self.command(&["submit"]).arg(&file).output().unwrap();
        assert!(
            submitted.status.success(),
            "{}",
            String::from_utf8_lossy(&submitted.stderr)
        );
        String::from_utf8_lossy(&submitted.stdout)
            .trim()
            .to_string()
    }

    /// `agency submit --wait`: the exit code and the printed result.
    pub fn submit_wait(&self, doc: &Value) -> (i32, Value) {
        let file = self.dir.join(format!("{}.json", unique("session")));
        std::fs::write(&file, doc.to_string()).unwrap();
        let output = self
            .command(&["submit", "--wait", "--timeout", "120"])
            .arg(&file)
            .output()
            .unwrap();
        let result = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "no result ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), result)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Apache Kafka of one test's own, one node or a cluster, started by `scripts/services.sh` in a
/// state folder of its own on free ports, so the test can kill and restart nodes without
/// touching the shared broker. Stopped when dropped.
#[derive(Debug)]
pub struct OwnKafka {
    /// Pid files, logs and broker data.
    pub state: PathBuf,
    /// The port each node listens on.
    pub ports: Vec<u16>,
    controllers: Vec<u16>,
    /// The address every node listens on and advertises.
    pub host: String,
}

impl OwnKafka {
    /// Starts one node (formatting its storage on first start); panics with the script's message
    /// if it cannot.
    pub fn start(name: &str) -> Self {
        Self::start_nodes(name, 1)
    }

    /// Starts `nodes` nodes as one cluster, each a broker and a KRaft controller.
    pub fn start_nodes(name: &str, nodes: usize) -> Self {
        Self::start_nodes_on(name, nodes, "127.0.0.1")
    }

    /// Starts `nodes` nodes listening on `host` (an address of this machine).
    pub fn start_nodes_on(name: &str, nodes: usize, host: &str) -> Self {
        let state = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&state).unwrap();
        let kafka = Self {
            state,
            ports: (0..nodes).map(|_| free_port()).collect(),
            controllers: (0..nodes).map(|_| free_port()).collect(),
            host: host.to_string(),
        };
        kafka.up();
        kafka
    }

    /// Its bootstrap addresses.
    pub fn brokers(&self) -> String {
        let addresses: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("{}:{p}", self.host))
            .collect();
        addresses.join(",")
    }

    fn script(&self, verb: &str) -> std::process::Output {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
        let list = |ports: &[u16]| {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            ports.join(",")
        };
        Command::new("bash")
            .arg(script)
            .arg(verb)
            .env("AGENCY_SERVICES_STATE", &self.state)
            .env("AGENCY_REDIS_PORT", redis_addr().port().to_string())
            .env("AGENCY_KAFKA_PORT", list(&self.ports))
            .env("AGENCY_KAFKA_CONTROLLER_PORT", list(&self.controllers))
            .env("AGENCY_KAFKA_HOST", &self.host)
            .env("AGENCY_BROKER", "kafka")
            .output()
            .unwrap()
    }

    /// Starts every node that is not running again, on the same ports and data (after
    /// [`OwnKafka::kill`]).
    pub fn up(&self) {
        let output = self.script("kafka-up");
        assert!(
            output.status.success(),
            "cannot start Kafka: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `kill -9` of the (first) node; its log is kept.
    pub fn kill(&self) {
        self.kill_node(1);
    }

    /// `kill -9` of node `node` (1-based) of a cluster; its log is kept.
    pub fn kill_node(&self, node: usize) {
        let name = if self.ports.len() == 1 {
            "kafka".to_string()
        } else {
            format!("kafka{node}")
        };
        let pid = std::fs::read_to_string(self.state.join(format!("{name}.pid"))).unwrap();
        let killed = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(killed.success(), "kill -9 {pid}");
    }

    /// Deletes the data of the (first, killed) node: its log, its consumer offsets and its
    /// metadata. [`OwnKafka::up`] then formats it again for the same cluster id, as an operator
    /// restoring a broker whose disk was lost would.
    pub fn wipe(&self) {
        let data = self.state.join("kafka-data");
        std::fs::remove_dir_all(&data).unwrap_or_else(|e| panic!("removing {data:?}: {e}"));
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = self.script("kafka-down");
    }
}

/// A Redis server of one test's own, on a free port, with its data in a folder of its own and
/// the append-only file on (`appendfsync everysec`), so the test can stall it, shut it down and
/// start it again without touching the shared one. `DEBUG` is allowed from loopback. Shut down
/// when dropped.
#[derive(Debug)]
pub struct OwnRedis {
    /// Its data, pid file and log.
    pub dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
    /// The address it listens on (besides 127.0.0.1) and its URL names.
    pub host: String,
}

impl OwnRedis {
    /// Starts it on 127.0.0.1; panics if it does not answer within 10 s.
    pub fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1")
    }

    /// Starts it listening on `host` too (an address of this machine).
    pub fn start_on(name: &str, host: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let redis = Self {
            dir,
            port: free_port(),
            host: host.to_string(),
        };
        redis.up();
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    /// Starts it again on the same port and data (after [`OwnRedis::shutdown`]).
    pub fn up(&self) {
        let port = self.port.to_string();
        let started = Command::new("redis-server")
            .args(["--daemonize", "yes", "--port", &port])
            .arg("--bind")
            .args(
                ["127.0.0.1", &self.host]
                    .iter()
                    .copied()
                    .collect::<std::collections::BTreeSet<_>>(),
            )
            // Clients on the lab address of the network cases are not loopback to Redis.
            .args(["--protected-mode", "no"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .status()
            .unwrap();
        assert!(started.success(), "cannot start redis-server on {port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.query(&["PING"]).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on {port} does not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command; its answer or the error.
    pub fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        redis_query(&self.url(), args)
    }

    /// `SHUTDOWN` (the append-only file is written and synced first); returns once the server is
    /// gone.
    pub fn shutdown(&self) {
        let _ = self.query(&["SHUTDOWN"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.query(&["PING"]).is_ok() {
            assert!(std::time::Instant::now() < deadline, "redis did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends one command to the Redis at `url` (a 2 s connect timeout); its answer or the error.
fn redis_query(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut connection)
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.query(&["SHUTDOWN", "NOSAVE"]);
    }
}

pub mod network;
pub mod secured;
mod web;

pub use web::{http, http_with, wait_for_port};

/// Removes the times a result carries (they differ from run to run), at every level.
pub fn strip_times(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for key in [
                "submitted_at",
                "started_at",
                "finished_at",
                "duration_ms",
                "last_attempt_at",
            ] {
                object.remove(key);
            }
            object.values_mut().for_each(strip_times);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Produces one message to `topic` with a plain Kafka producer.
pub async fn produce(topic: &str, key: &str, payload: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
}

/// A Redis Cluster of one test's own: three masters and three replicas on free ports
/// (`redis-server --cluster-enabled yes`, `redis-cli --cluster create`), a node timeout of 2 s
/// so a killed master's replica is promoted within seconds. Shut down when dropped.
#[derive(Debug)]
pub struct OwnRedisCluster {
    /// Its nodes' data, pid files and logs, one folder per port.
    pub dir: PathBuf,
    /// Its nodes' ports.
    pub ports: Vec<u16>,
}

impl OwnRedisCluster {
    /// Starts it; panics unless it reaches `cluster_state:ok` within 30 s.
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(name));
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        for port in &ports {
            let node = dir.join(port.to_string());
            std::fs::create_dir_all(&node).unwrap();
            let started = Command::new("redis-server")
                .args([
                    "--daemonize",
                    "yes",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                ])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                // A replica may take over however long its link was down (the test kills its
                // master seconds after the cluster formed).
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--cluster-config-file")
                .arg(node.join("nodes.conf"))
                .arg("--dir")
                .arg(&node)
                .arg("--pidfile")
                .arg(node.join("redis.pid"))
                .arg("--logfile")
                .arg(node.join("redis.log"))
                .status()
                .unwrap();
            assert!(started.success(), "cannot start a cluster node on {port}");
        }
        let cluster = Self { dir, ports };
        for port in &cluster.ports {
            cluster.wait(*port, |c| c.ping(*port), "to answer");
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes())
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let first = cluster.ports[0];
        cluster.wait(first, |c| c.ok(first), "to reach cluster_state:ok");
        for port in &cluster.ports {
            cluster.wait(
                *port,
                |_| Self::replicating(*port),
                "to finish its replication sync",
            );
        }
        cluster
    }

    /// Whether node `port` is a master, or a replica whose link to its master is up.
    fn replicating(port: u16) -> bool {
        Self::query(port, &["INFO", "replication"])
            .ok()
            .and_then(|info| redis::from_redis_value::<String>(info).ok())
            .is_some_and(|info| {
                info.contains("role:master") || info.contains("master_link_status:up")
            })
    }

    /// Its nodes, `127.0.0.1:PORT`.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    fn query(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
        redis_query(&format!("redis://127.0.0.1:{port}"), args)
    }

    /// How many `WAIT` commands node `port` has answered (0 for a node that does not answer).
    pub fn waits(&self, port: u16) -> u64 {
        let stats = Self::query(port, &["INFO", "commandstats"])
            .ok()
            .and_then(|info| redis::from_redis_value::<String>(info).ok())
            .unwrap_or_default();
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_wait:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    fn ping(&self, port: u16) -> bool {
        Self::query(port, &["PING"]).is_ok()
    }

    /// Whether node `port` says `cluster_state:ok`.
    pub fn ok(&self, port: u16) -> bool {
        Self::query(port, &["CLUSTER", "INFO"])
            .ok()
            .and_then(|info| redis::from_redis_value::<String>(info).ok())
            .is_some_and(|info| info.contains("cluster_state:ok"))
    }

    fn wait(&self, port: u16, done: impl Fn(&Self) -> bool, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "node {port} failed {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the master serving `key`'s slot, as node `asked` sees it.
    pub fn master_of(&self, key: &str, asked: u16) -> u16 {
        let slot: i64 =
            redis::from_redis_value(Self::query(asked, &["CLUSTER", "KEYSLOT", key]).unwrap())
                .unwrap();
        let nodes: String =
            redis::from_redis_value(Self::query(asked, &["CLUSTER", "NODES"]).unwrap()).unwrap();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                match (from.parse::<i64>(), to.parse::<i64>()) {
                    (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let address = fields[1].split('@').next().unwrap();
                return address.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        panic!("no master serves slot {slot} of {key}:\n{nodes}")
    }

    /// Master `master`'s replica: its port, and the port its replication connection comes
    /// from (`INFO replication`, `CLIENT LIST TYPE replica`).
    pub fn replication_link(&self, master: u16) -> (u16, u16) {
        let text = |args: &[&str]| -> String {
            redis::from_redis_value(Self::query(master, args).unwrap()).unwrap()
        };
        let field = |text: &str, name: &str| -> Option<u16> {
            let at = text.find(name)? + name.len();
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        };
        let info = text(&["INFO", "replication"]);
        let clients = text(&["CLIENT", "LIST", "TYPE", "replica"]);
        match (field(&info, ",port="), field(&clients, "addr=127.0.0.1:")) {
            (Some(replica), Some(link)) => (replica, link),
            _ => panic!("node {master} has no replica:\n{info}\n{clients}"),
        }
    }

    /// How many fields hash `key` has on node `port`, a replica included (`READONLY`).
    pub fn hlen(&self, port: u16, key: &str) -> u64 {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("READONLY").exec(&mut connection).unwrap();
        redis::cmd("HLEN").arg(key).query(&mut connection).unwrap()
    }

    /// Kills node `port` with SIGKILL.
    pub fn kill(&self, port: u16) {
        let pid =
            std::fs::read_to_string(self.dir.join(port.to_string()).join("redis.pid")).unwrap();
        let killed = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(killed.success(), "kill -9 {pid}");
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for port in &self.ports {
            let _ = Self::query(*port, &["SHUTDOWN", "NOSAVE"]);
        }
    }
}

/// A session on `fleet` whose 3,000 numbers are kept by reference (over a count of 1,000): a
/// fan-out with retries maps over them, workers reading their slices; the result holds the
/// reference, and `agency results` pages them: the first, a middle and the last page, and a
/// range past them refused.
pub fn results_kept_by_reference_on(fleet: &Cluster) {
    let id = unique("kept");
    let session = serde_json::json!({"session_id": id, "groups": [{"id": "g", "tasks": [
        {"id": "numbers", "executor": "echo", "inline_results": {"count": 1000},
         "expansion_config": {"type": "range", "range": "1-3000", "variable": "n"}, "input": {"n": "{{n}}"}},
        {"id": "checked", "executor": "fail", "depends_on": ["numbers"],
         "retry": {"max_retries": 1, "retry_delays": [10]},
         "expansion_config": {"type": "array", "array_mapping": {"item": "context.numbers"}},
         "input": {"times": 1, "n": "{{item.n}}"}},
        {"id": "total", "executor": "echo", "depends_on": ["numbers"],
         "expansion_config": {"type": "array", "array_mapping": {"item": "context.numbers"}, "output_format": "single"},
         "input": {"n": "{{item.n}}"}}
    ]}]});
    let (code, result) = fleet.submit_wait(&session);
    assert_eq!(code, 0, "{result}");
    assert_eq!(
        result["context"]["numbers"],
        serde_json::json!({"$results": {"group": "g", "task": "numbers", "count": 3000}})
    );
    let checked = &result["groups"]["g"]["tasks"]["checked"];
    assert_eq!(
        (checked["succeeded"].clone(), checked["attempts"].clone()),
        (3000.into(), 6000.into())
    );
    assert_eq!(
        result["context"]["total"]["n"]["sum"], 4_501_500,
        "1 + ... + 3000, read from the store"
    );
    assert_eq!(result["context"]["checked"][2999]["n"], 3000);
    let page = |args: &[&str]| -> Value {
        let mut command = fleet.command(&["results", &id, "numbers"]);
        let output = command.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let numbers = |range: std::ops::Range<u64>| -> Value {
        range.map(|n| serde_json::json!({"n": n + 1})).collect()
    };
    assert_eq!(page(&["--limit", "5"]), numbers(0..5));
    assert_eq!(
        page(&["--from", "1500", "--limit", "3"]),
        numbers(1500..1503)
    );
    assert_eq!(
        page(&["--from", "2995", "--limit", "100"]),
        numbers(2995..3000)
    );
    assert_eq!(page(&[]).as_array().map(Vec::len), Some(3000));
    let past = fleet
        .command(&["results", &id, "numbers", "--from", "3000"])
        .output()
        .unwrap();
    assert_eq!(past.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&past.stderr)
        .contains("past the last of task `numbers`'s 3000 results"));
}
