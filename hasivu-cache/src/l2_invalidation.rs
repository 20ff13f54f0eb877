//! The Redis side of writes and invalidation: changes (generation bumps,
//! stamped writes and deletes, the backplane message, in one script on a
//! single server), reading the generations back, publishing, and the
//! SCAN + UNLINK purge. Every call goes through the L2's timeout and
//! breaker.

use std::time::Duration;

use redis::Value;

use crate::{
    keys,
    l2::{L2Error, RedisL2, STAMP_LIFE, stamp_life, ttl_millis},
    message::Message,
};

/// One change, atomically: takes the next generation, records it for every
/// prefix given, deletes or writes the keys given with it as their stamp,
/// and publishes the backplane message with it. Generations are Redis
/// `TIME` in microseconds, or one more than the last when the clock has not
/// moved past it: they keep growing even when Redis restarts without its
/// data, so a stamp written before the restart can never look newer than a
/// change after it. (Microseconds since 1970 stay below 2^53, exact in Lua's
/// doubles.)
///
/// KEYS: the generations hash, the sequence, then (value, stamp) pairs.
/// ARGV: `set` (the one pair gets the value) or `delete` (every pair is
/// deleted, its stamp kept as a tombstone); the stamp's TTL (ms); the value
/// and its TTL (ms); the channel (empty: nothing is published) and the
/// message before and after its generation; then the prefixes.
///
/// On a cluster only the generation part runs here (no pairs, no channel):
/// the pairs live in other slots and go through [`WRITE_KEY`].
pub(crate) const CHANGE: &str = r#"
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local last = tonumber(redis.call("GET", KEYS[2]) or "0")
local generation = string.format("%.0f", math.max(now, last + 1))
redis.call("SET", KEYS[2], generation)
for i = 8, #ARGV do
    redis.call("HSET", KEYS[1], ARGV[i], generation)
end
for i = 3, #KEYS, 2 do
    if ARGV[1] == "set" then
        redis.call("SET", KEYS[i], ARGV[3], "PX", ARGV[4])
    else
        redis.call("UNLINK", KEYS[i])
    end
    redis.call("SET", KEYS[i + 1], generation, "PX", ARGV[2])
end
if ARGV[5] ~= "" then
    redis.call("PUBLISH", ARGV[5], ARGV[6] .. generation .. ARGV[7])
end
return generation
"#;

/// One key of a change on a cluster, in its own slot, with the generation
/// [`CHANGE`] gave: KEYS value and stamp; ARGV the generation, the stamp's
/// TTL (ms), then, for a write, the value and its TTL (ms). A stamp is
/// never lowered: a later change that landed first keeps its stamp (and a
/// later write its value).
pub(crate) const WRITE_KEY: &str = r#"
local current = tonumber(redis.call("GET", KEYS[2]) or "0") or 0
local generation = tonumber(ARGV[1])
if ARGV[3] == nil then
    redis.call("UNLINK", KEYS[1])
elseif current > generation then
    return 0
else
    redis.call("SET", KEYS[1], ARGV[3], "PX", ARGV[4])
end
if current < generation then
    redis.call("SET", KEYS[2], ARGV[1], "PX", ARGV[2])
end
return 1
"#;

/// The digits standing for the generation in a message template; a JSON
/// string cannot hold them after an unescaped `"g":`.
const GENERATION_MARK: &str = "\"g\":18446744073709551615";

/// Keys asked for per SCAN step.
const SCAN_COUNT: usize = 500;

/// `message` as JSON cut around its generation, which the change script
/// puts in between.
fn template(message: &Message) -> Option<(String, String)> {
    let mut marked = message.clone();
    marked.generation = u64::MAX;
    let json = serde_json::to_string(&marked).expect("a message serializes");
    let (head, tail) = json.split_once(GENERATION_MARK)?;
    Some((format!("{head}\"g\":"), tail.to_owned()))
}

fn parse_generation(generation: &str) -> Result<u64, L2Error> {
    generation
        .parse()
        .map_err(|_| L2Error::Reply(format!("generation {generation:?} is not a number")))
}

/// Keys written or deleted, prefixes invalidated, and the message telling
/// the other instances: one [`RedisL2::change`].
#[derive(Debug)]
pub(crate) struct Change<'a> {
    /// Prefixes whose generation is bumped.
    pub(crate) prefixes: &'a [&'a str],
    /// Keys whose value is deleted (their stamp stays, as a tombstone).
    pub(crate) deleted: &'a [&'a str],
    /// A key written with its value and TTL (with no `deleted`).
    pub(crate) written: Option<(&'a str, &'a [u8], Duration)>,
    /// The backplane message; its generation is the change's.
    pub(crate) message: Option<Message>,
}

impl RedisL2 {
    /// Applies `change` and returns its generation. On one server it is
    /// one script, so the whole change, its stamps and its message happen
    /// at once or not at all; on a cluster it takes a round trip per slot
    /// (the generation, each key, the message) and may stop half-way, which
    /// the caller's replay repeats.
    pub(crate) async fn change(&self, change: Change<'_>) -> Result<u64, L2Error> {
        if self.is_cluster() {
            return self.change_in_slots(change).await;
        }
        let (map, seq) = keys::generation_keys(&self.prefix);
        let mut invocation = self.scripts.change.key(map);
        invocation.key(seq);
        let (mode, value, millis) = match change.written {
            Some((key, value, ttl)) => {
                invocation
                    .key(self.full_key(key))
                    .key(keys::stamp_key_any(&self.prefix, key));
                ("set", value, ttl_millis(ttl))
            }
            None => ("delete", &[][..], 0),
        };
        for key in change.deleted {
            invocation
                .key(self.full_key(key))
                .key(keys::stamp_key_any(&self.prefix, key));
        }
        let template = change.message.as_ref().and_then(template);
        let (channel, head, tail) = match template {
            Some((head, tail)) => (keys::channel(&self.prefix), head, tail),
            None => (String::new(), String::new(), String::new()),
        };
        invocation
            .arg(mode)
            .arg(stamp_life(millis))
            .arg(value)
            .arg(millis)
            .arg(&channel)
            .arg(head)
            .arg(tail);
        for prefix in change.prefixes {
            invocation.arg(*prefix);
        }
        let generation: String = self
            .call("change", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        let generation = parse_generation(&generation)?;
        if channel.is_empty()
            && let Some(mut message) = change.message
        {
            // Not templated (cannot happen with the message format as it
            // is): published on its own.
            message.generation = generation;
            self.publish(&serde_json::to_vec(&message).expect("a message serializes"))
                .await?;
        }
        Ok(generation)
    }

    async fn change_in_slots(&self, change: Change<'_>) -> Result<u64, L2Error> {
        let generation = self.bump(change.prefixes).await?;
        let written = change
            .written
            .map(|(key, value, ttl)| (key, Some((value, ttl))));
        let deleted = change.deleted.iter().map(|key| (*key, None));
        for (key, value) in written.into_iter().chain(deleted) {
            let Some(stamp_key) = self.stamp_key(key) else {
                // No stamp can share this key's slot: the value goes alone.
                let cmd = match value {
                    Some((value, ttl)) => {
                        let mut set = redis::cmd("SET");
                        set.arg(self.full_key(key))
                            .arg(value)
                            .arg("PX")
                            .arg(ttl_millis(ttl));
                        set
                    }
                    None => {
                        let mut unlink = redis::cmd("UNLINK");
                        unlink.arg(self.full_key(key));
                        unlink
                    }
                };
                self.call("change key", |mut conn| async move {
                    cmd.query_async::<()>(&mut conn).await
                })
                .await?;
                continue;
            };
            let mut invocation = self.scripts.write_key.key(self.full_key(key));
            invocation.key(stamp_key).arg(generation);
            match value {
                Some((value, ttl)) => {
                    let millis = ttl_millis(ttl);
                    invocation.arg(stamp_life(millis)).arg(value).arg(millis);
                }
                None => {
                    invocation.arg(ttl_millis(STAMP_LIFE));
                }
            }
            self.call("change key", |mut conn| async move {
                invocation.invoke_async::<i64>(&mut conn).await
            })
            .await?;
        }
        if let Some(mut message) = change.message {
            message.generation = generation;
            self.publish(&serde_json::to_vec(&message).expect("a message serializes"))
                .await?;
        }
        Ok(generation)
    }

    /// Bumps the generations of `prefixes` (unprefixed) to one new number
    /// of the shared sequence, and returns it.
    pub(crate) async fn bump(&self, prefixes: &[&str]) -> Result<u64, L2Error> {
        let (map, seq) = keys::generation_keys(&self.prefix);
        let mut invocation = self.scripts.change.key(map);
        invocation
            .key(seq)
            .arg("delete")
            .arg(0)
            .arg("")
            .arg(0)
            .arg("")
            .arg("")
            .arg("");
        for prefix in prefixes {
            invocation.arg(*prefix);
        }
        let generation: String = self
            .call("bump", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        parse_generation(&generation)
    }

    /// Every prefix's generation as Redis holds it, and the last generation
    /// of the sequence (prefixes and keys), read together.
    pub(crate) async fn generations(&self) -> Result<(Vec<(String, u64)>, u64), L2Error> {
        let (map, seq) = keys::generation_keys(&self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HGETALL").arg(map).cmd("GET").arg(seq);
        let (prefixes, last): (Vec<(String, u64)>, Option<u64>) = self
            .call("generations", |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok((prefixes, last.unwrap_or(0)))
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

    /// Deletes every value whose key (after the key prefix) matches `glob`
    /// (its stamp expires within its life): `SCAN MATCH` in steps of 500
    /// keys and `UNLINK`, on each master of a cluster. Returns how many
    /// values were deleted.
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
                    // Keys of one step lie in many slots: one call each.
                    for key in values {
                        self.remove(key).await?;
                    }
                } else if !values.is_empty() {
                    // Stamps expire within their life instead of going at
                    // once: a load that started before a write still meets
                    // the write's stamp.
                    let mut pipe = redis::pipe();
                    for key in values {
                        self.push_remove(&mut pipe, key);
                    }
                    self.call("purge", |mut conn| async move {
                        pipe.query_async::<()>(&mut conn).await
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
