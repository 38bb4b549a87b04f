//! One connection type for a single Redis and a Redis Cluster: every command, script and
//! pipeline of the store goes through it. A cluster connection routes each command to the
//! master of its key's slot, follows `MOVED` and `ASK`, and finds the new master after a
//! failover by itself.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

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
    pub(crate) async fn unlink_matching(&self, pattern: &str) -> redis::RedisResult<u64> {
        match self {
            Self::Single(connection) => unlink_on(&mut connection.clone(), pattern).await,
            Self::Cluster(connection) => {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut connection.clone())
                    .await?;
                let mut gone = 0;
                for master in masters(&nodes) {
                    let client = redis::Client::open(format!("redis://{master}"))?;
                    let mut node = client.get_multiplexed_async_connection().await?;
                    gone += unlink_on(&mut node, pattern).await?;
                }
                Ok(gone)
            }
        }
    }
}

/// The addresses (`host:port`) of the masters a `CLUSTER NODES` answer lists.
fn masters(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let is_master = flags.split(',').any(|flag| flag == "master")
                && !flags
                    .split(',')
                    .any(|flag| flag == "fail" || flag == "noaddr");
            let address = fields.get(1)?.split('@').next()?;
            is_master.then(|| address.to_string())
        })
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
    }
}
