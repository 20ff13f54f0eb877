//! The Redis side of invalidation: generation bumps, reading the
//! generations back, publishing backplane messages, and the SCAN + UNLINK
//! purge. Every call goes through the L2's timeout and breaker.

use redis::{Script, Value};

use crate::{
    keys,
    l2::{L2Error, RedisL2},
};

/// Takes the next generation and records it for every prefix given,
/// atomically. Generations are Redis `TIME` in microseconds, or one more
/// than the last when the clock has not moved past it: they keep growing
/// even when Redis restarts without its data, so a stamp written before the
/// restart can never look newer than an invalidation after it. (Microseconds
/// since 1970 stay below 2^53, exact in Lua's doubles.)
const BUMP: &str = r#"
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local last = tonumber(redis.call("GET", KEYS[2]) or "0")
local generation = string.format("%.0f", math.max(now, last + 1))
redis.call("SET", KEYS[2], generation)
for i = 1, #ARGV do
    redis.call("HSET", KEYS[1], ARGV[i], generation)
end
return generation
"#;

/// Keys asked for per SCAN step.
const SCAN_COUNT: usize = 500;

impl RedisL2 {
    /// Bumps the generations of `prefixes` (unprefixed) to one new number
    /// of the shared sequence, and returns it.
    pub(crate) async fn bump(&self, prefixes: &[&str]) -> Result<u64, L2Error> {
        let (map, seq) = keys::generation_keys(&self.prefix);
        let script = Script::new(BUMP);
        let mut invocation = script.key(map);
        invocation.key(seq);
        for prefix in prefixes {
            invocation.arg(*prefix);
        }
        let generation: String = self
            .call("bump", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        generation
            .parse()
            .map_err(|_| L2Error::Reply(format!("generation {generation:?} is not a number")))
    }

    /// Every prefix's generation as Redis holds it.
    pub(crate) async fn generations(&self) -> Result<Vec<(String, u64)>, L2Error> {
        let (map, _) = keys::generation_keys(&self.prefix);
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(map);
        self.call("generations", |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Publishes a backplane message (`SPUBLISH` on a cluster, so only the
    /// channel's shard carries it).
    pub(crate) async fn publish(&self, payload: &[u8]) -> Result<(), L2Error> {
        let command = if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut cmd = redis::cmd(command);
        cmd.arg(keys::channel(&self.prefix)).arg(payload);
        self.call("publish", |mut conn| async move {
            cmd.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Deletes every value whose key (after the key prefix) matches `glob`,
    /// with its stamp: `SCAN MATCH` in steps of 500 keys and `UNLINK`, on
    /// each master of a cluster. Returns how many values were deleted.
    pub(crate) async fn purge(&self, glob: &str) -> Result<u64, L2Error> {
        let pattern = format!("{}{glob}", crate::escape_glob(&self.prefix));
        let mut deleted = 0;
        for node in self.masters().await? {
            let mut cursor = 0_u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let (next, found): (u64, Vec<String>) = self.on_node(&node, scan).await?;
                // The cache's own keys (stamps, generations) stay.
                let values: Vec<&str> = found
                    .iter()
                    .map(|full| full.strip_prefix(&*self.prefix).unwrap_or(full))
                    .filter(|key| !key.starts_with("hasivu:"))
                    .collect();
                deleted += values.len() as u64;
                if self.is_cluster() {
                    // Keys of one step lie in many slots: one UNLINK each.
                    for key in values {
                        self.remove(key).await?;
                    }
                } else if !values.is_empty() {
                    let mut unlink = redis::cmd("UNLINK");
                    for key in values {
                        unlink.arg(self.full_key(key));
                        unlink.arg(keys::stamp_key_any(&self.prefix, key));
                    }
                    self.call("purge", |mut conn| async move {
                        unlink.query_async::<()>(&mut conn).await
                    })
                    .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    /// The masters to scan: the one server, or every master of a cluster
    /// (`CLUSTER SLOTS`).
    async fn masters(&self) -> Result<Vec<Option<(String, u16)>>, L2Error> {
        if !self.is_cluster() {
            return Ok(vec![None]);
        }
        let slots: Value = self
            .call("cluster slots", |mut conn| async move {
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let mut masters = Vec::new();
        if let Value::Array(ranges) = slots {
            for range in ranges {
                if let Value::Array(parts) = range
                    && let Some(Value::Array(master)) = parts.get(2)
                    && let (Some(host), Some(Value::Int(port))) = (master.first(), master.get(1))
                    && let Ok(host) = redis::from_redis_value::<String>(host.clone())
                    && let Ok(port) = u16::try_from(*port)
                    && !masters.contains(&Some((host.clone(), port)))
                {
                    masters.push(Some((host, port)));
                }
            }
        }
        Ok(masters)
    }

    /// Runs `cmd` on one node (`None`: the one server).
    async fn on_node<T: redis::FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        cmd: redis::Cmd,
    ) -> Result<T, L2Error> {
        let node = node.clone();
        self.call("scan", |conn| async move {
            match (conn, node) {
                #[cfg(feature = "cluster")]
                (crate::l2::Connection::Cluster(mut conn), Some((host, port))) => {
                    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                    let value = conn
                        .route_command(
                            cmd,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host,
                                port,
                            }),
                        )
                        .await?;
                    Ok(redis::from_redis_value(value)?)
                }
                (mut conn, _) => cmd.query_async(&mut conn).await,
            }
        })
        .await
    }
}
