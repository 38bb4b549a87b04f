//! One connection type for a single Redis and a Redis Cluster: every command, script and
//! pipeline of the store goes through it. A cluster connection routes each command to the
//! master of its key's slot, follows `MOVED` and `ASK`, and finds the new master after a
//! failover by itself.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, ServerErrorKind, ToRedisArgs, Value};

/// How long a write that must not be lost waits for a replica to acknowledge it (`WAIT`).
pub(crate) const REPLICA_WAIT_MS: u64 = 1000;

/// Whether writes wait for a replica: on a cluster whose every master has one. A wait that no
/// replica answered (its master lost its replica, or was one until a failover) stops the
/// waiting, with a warning, until a look at the cluster [`RECHECK`] later finds every master
/// replicated again: a cluster short of replicas stays available, at the risk a failover then
/// brings anyway.
#[derive(Debug)]
pub(crate) struct ReplicaWait {
    /// Never on a single Redis.
    cluster: bool,
    waiting: std::sync::atomic::AtomicBool,
    /// When to look at the cluster again while not waiting.
    recheck: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long writes go without waiting for a replica, after one did not answer, before the
/// cluster is looked at again.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

impl ReplicaWait {
    pub(crate) fn none() -> Self {
        Self {
            cluster: false,
            waiting: false.into(),
            recheck: std::sync::Mutex::new(None),
        }
    }

    /// For a cluster whose `CLUSTER NODES` answer is `nodes`.
    pub(crate) fn cluster(nodes: &str, address: &str) -> Self {
        let waiting = every_master_has_a_replica(nodes);
        if !waiting {
            tracing::warn!(cluster = %address, "a master of the Redis Cluster has no replica: writes do not wait for one, and losing that master loses what it held");
        }
        Self {
            cluster: true,
            waiting: waiting.into(),
            recheck: std::sync::Mutex::new((!waiting).then(|| std::time::Instant::now() + RECHECK)),
        }
    }

    /// Whether the next write waits for a replica (looking at the cluster again when due).
    pub(crate) async fn wanted(&self, connection: &Connection) -> bool {
        use std::sync::atomic::Ordering;
        if !self.cluster || self.waiting.load(Ordering::Relaxed) {
            return self.cluster;
        }
        let due = {
            let mut recheck = self.recheck.lock().unwrap_or_else(|e| e.into_inner());
            match *recheck {
                Some(at) if at <= std::time::Instant::now() => {
                    *recheck = Some(std::time::Instant::now() + RECHECK);
                    true
                }
                _ => false,
            }
        };
        if due {
            let nodes: redis::RedisResult<String> = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut connection.clone())
                .await;
            if nodes.is_ok_and(|nodes| every_master_has_a_replica(&nodes)) {
                tracing::info!(
                    "every master of the Redis Cluster has a replica again: writes wait for one"
                );
                self.waiting.store(true, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// A wait no replica answered: stop waiting until the next look at the cluster.
    pub(crate) fn missed(&self, address: &str) {
        use std::sync::atomic::Ordering;
        if self.waiting.swap(false, Ordering::Relaxed) {
            tracing::warn!(cluster = %address, "a write reached no replica within {REPLICA_WAIT_MS} ms: writes stop waiting for replicas until every master has one again");
            *self.recheck.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(std::time::Instant::now() + RECHECK);
        }
    }
}

/// A script call built as a command, so that it can share a pipeline with `WAIT`.
pub(crate) struct ScriptCall<'a> {
    script: &'a redis::Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl<'a> ScriptCall<'a> {
    pub(crate) fn new(script: &'a redis::Script) -> Self {
        Self {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(crate) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn command(&self) -> Cmd {
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        command
    }
}

/// A connection to a single Redis (reconnecting by itself) or to a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// Runs `call` (loading its script first where the server lacks it) and, with `wait`,
    /// `WAIT 1` after it in the same pipeline, so on the same master: the script's answer, and
    /// whether a replica acknowledged the write within [`REPLICA_WAIT_MS`] (always, without
    /// `wait`). Sent together, the two are sent again together when the cluster client retries
    /// them on a promoted replica after a failover; a `WAIT` of its own would be retried alone
    /// and answer for writes that connection never made.
    pub(crate) async fn run(
        &self,
        call: &ScriptCall<'_>,
        wait: bool,
    ) -> redis::RedisResult<(Value, bool)> {
        let mut pipe = redis::pipe();
        pipe.add_command(call.command());
        if wait {
            pipe.cmd("WAIT").arg(1).arg(REPLICA_WAIT_MS);
        }
        let mut connection = self.clone();
        let mut answer: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut connection).await;
        if matches!(&answer, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)) {
            call.script
                .prepare_invoke()
                .load_async(&mut connection)
                .await?;
            answer = pipe.query_async(&mut connection).await;
        }
        let mut answers = answer?.into_iter();
        let value = answers.next().unwrap_or(Value::Nil);
        let acknowledged = match answers.next() {
            None => true,
            Some(Value::Int(replicas)) => replicas >= 1,
            Some(_) => false,
        };
        Ok((value, acknowledged))
    }

    /// Runs `commands`, each answer in order: one pipeline on a single Redis; on a cluster,
    /// each on its own (all at once), since their keys may live on different masters.
    pub(crate) async fn each<T: redis::FromRedisValue>(
        &self,
        commands: Vec<Cmd>,
    ) -> redis::RedisResult<Vec<T>> {
        match self {
            Self::Single(connection) => {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query_async(&mut connection.clone()).await
            }
            Self::Cluster(connection) => {
                let runs = commands.into_iter().map(|command| {
                    let mut connection = connection.clone();
                    async move { command.query_async::<T>(&mut connection).await }
                });
                futures_util::future::join_all(runs)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    /// Unlinks the keys matching `pattern`, a page of SCAN at a time, over the server or over
    /// every master of a cluster; how many were there.
    pub(crate) async fn unlink_matching(
        &self,
        pattern: &str,
        access: &super::RedisAccess,
    ) -> redis::RedisResult<u64> {
        match self {
            Self::Single(connection) => unlink_on(&mut connection.clone(), pattern).await,
            Self::Cluster(connection) => {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut connection.clone())
                    .await?;
                let mut gone = 0;
                for master in masters(&nodes) {
                    let client = access.client(&master)?;
                    let mut node = client.get_multiplexed_async_connection().await?;
                    gone += unlink_on(&mut node, pattern).await?;
                }
                Ok(gone)
            }
        }
    }
}

/// One line of a `CLUSTER NODES` answer: the node's id, address (`host:port`), flags and, for a
/// replica, its master's id (`-` for a master).
struct Node<'a> {
    id: &'a str,
    address: &'a str,
    flags: Vec<&'a str>,
    master: &'a str,
}

impl<'a> Node<'a> {
    /// The nodes of a `CLUSTER NODES` answer; lines too short to be one are skipped.
    fn parse(nodes: &'a str) -> Vec<Self> {
        nodes
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let id = fields.next()?;
                let address = fields.next()?.split('@').next()?;
                let flags = fields.next()?.split(',').collect();
                let master = fields.next()?;
                Some(Self {
                    id,
                    address,
                    flags,
                    master,
                })
            })
            .collect()
    }

    fn is(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// A master that can serve: neither failing nor without an address.
    fn serving(&self) -> bool {
        self.is("master") && !self.is("fail") && !self.is("noaddr")
    }
}

/// Whether every master a `CLUSTER NODES` answer lists has a replica that is not failing.
pub(crate) fn every_master_has_a_replica(nodes: &str) -> bool {
    let nodes = Node::parse(nodes);
    let mut masters = nodes.iter().filter(|node| node.serving()).peekable();
    masters.peek().is_some()
        && masters.all(|master| {
            nodes
                .iter()
                .any(|node| node.is("slave") && !node.is("fail") && node.master == master.id)
        })
}

/// The addresses (`host:port`) of the masters a `CLUSTER NODES` answer lists.
fn masters(nodes: &str) -> Vec<String> {
    Node::parse(nodes)
        .iter()
        .filter(|node| node.serving())
        .map(|node| node.address.to_string())
        .collect()
}

/// SCANs one server page by page, unlinking each page's keys (one UNLINK per key: a cluster
/// node's keys live in many slots) before reading the next.
async fn unlink_on(connection: &mut impl ConnectionLike, pattern: &str) -> redis::RedisResult<u64> {
    let mut cursor = 0u64;
    let mut gone = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await?;
        if !found.is_empty() {
            let mut unlinks = redis::pipe();
            for key in &found {
                unlinks.cmd("UNLINK").arg(key);
            }
            let each: Vec<u64> = unlinks.query_async(connection).await?;
            gone += each.iter().sum::<u64>();
        }
        if next == 0 {
            return Ok(gone);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::masters;

    #[test]
    fn the_masters_of_a_cluster_nodes_answer() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7003@17003 slave a1 0 0 1 connected
c3 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
d4 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
";
        assert_eq!(masters(nodes), vec!["127.0.0.1:7000", "127.0.0.1:7001"]);
        // 7001 (c3) has no replica.
        assert!(!super::every_master_has_a_replica(nodes));
        let replicated = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191
c3 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383
b2 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7004@17004 slave c3 0 0 2 connected
";
        assert!(super::every_master_has_a_replica(replicated));
        assert!(!super::every_master_has_a_replica(""));
    }
}
