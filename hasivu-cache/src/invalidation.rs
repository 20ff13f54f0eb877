//! Invalidation: the public calls, the local sweep of L1, the queue of
//! invalidations that could not reach Redis, and what the backplane does
//! with messages from other instances.

use std::{collections::BTreeSet, sync::Arc};

use crate::{
    Cache, Codec, EntryOptions, Error, Pattern,
    cache::Inner,
    message::{Message, Op},
};

/// The most keys and prefixes kept for a replay; past it, the replay
/// invalidates everything (the empty prefix), which is correct, only wider.
const MAX_PENDING: usize = 10_000;

/// What a call to [`Cache::invalidate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invalidation {
    /// Everything invalidated: the pattern and what the rules added, minus
    /// patterns covered by others. Also what a CDN purge needs (surrogate
    /// keys, cache tags).
    pub patterns: Vec<Pattern>,
    /// The generation the prefixes were bumped to (0 when there were none,
    /// or when Redis could not be reached).
    pub generation: u64,
    /// Whether Redis took the invalidation and the other instances were
    /// told. When `false` (Redis down), the invalidation holds here at once
    /// and is replayed to Redis and the other instances when it is back.
    pub propagated: bool,
}

/// Invalidations and write announcements that could not reach Redis.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    prefixes: BTreeSet<String>,
    /// Invalidated keys: removed from L2 and announced on replay.
    keys: BTreeSet<String>,
    /// Written or removed keys: announced on replay.
    announced: BTreeSet<String>,
    /// Too much was queued: the replay invalidates everything.
    overflow: bool,
}

impl Pending {
    fn len(&self) -> usize {
        self.prefixes.len() + self.keys.len() + self.announced.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0 && !self.overflow
    }

    fn add(&mut self, prefixes: &[&str], keys: &[&str], announced: &[&str]) {
        if self.overflow {
            return;
        }
        self.prefixes
            .extend(prefixes.iter().map(|p| (*p).to_owned()));
        self.keys.extend(keys.iter().map(|k| (*k).to_owned()));
        self.announced
            .extend(announced.iter().map(|k| (*k).to_owned()));
        if self.len() > MAX_PENDING {
            *self = Pending {
                overflow: true,
                ..Pending::default()
            };
        }
    }

    fn merge(&mut self, other: Pending) {
        if other.overflow {
            self.overflow = true;
        }
        let prefixes: Vec<&str> = other.prefixes.iter().map(String::as_str).collect();
        let keys: Vec<&str> = other.keys.iter().map(String::as_str).collect();
        let announced: Vec<&str> = other.announced.iter().map(String::as_str).collect();
        self.add(&prefixes, &keys, &announced);
    }
}

impl<C: Codec> Cache<C> {
    /// Invalidates what `pattern` selects, and what the
    /// [rules](crate::InvalidationRules) add, on every instance.
    ///
    /// `pattern` is a key (`menu:daily:current`) or a prefix followed by
    /// one final `*` (`user:*`); see [`Pattern`] for the syntax and
    /// [`escape_glob`](crate::escape_glob) to build one from a key holding
    /// `*`, `?`, `[`, `]` or `\`.
    ///
    /// A prefix costs O(1) whatever it covers: its generation is bumped
    /// (one Lua call for the whole cascade), so every entry written under
    /// an older generation is a miss from now on, in L2 and on every
    /// instance; L1 entries under it are swept here and, through the
    /// backplane, on the other instances within milliseconds. Keys are
    /// removed from L1 and L2. The memory of invalidated L2 entries is
    /// reclaimed by their TTL, or at once by [`purge`](Self::purge).
    ///
    /// Call it after the write to the database has committed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hasivu_cache::{Cache, EntryOptions, InvalidationRules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), hasivu_cache::Error> {
    /// let cache = Cache::builder()
    ///     .rules(InvalidationRules::report_defaults())
    ///     .build()?;
    /// let options = EntryOptions::new(Duration::from_secs(300));
    /// cache.set("user:profile:42", "Asha".to_owned(), &options).await?;
    /// cache.set("auth:sessions:42", "token".to_owned(), &options).await?;
    ///
    /// // `user:*` cascades to `auth:sessions:*`.
    /// let done = cache.invalidate("user:*").await?;
    /// assert_eq!(done.patterns.len(), 2);
    /// assert_eq!(cache.get::<String>("user:profile:42").await?, None);
    /// assert_eq!(cache.get::<String>("auth:sessions:42").await?, None);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Pattern`] when `pattern` is another kind of glob (see
    /// [`purge`](Self::purge)). In strict mode, [`Error::L2`] when Redis
    /// could not be reached; otherwise that is reported in
    /// [`Invalidation::propagated`] and the invalidation is replayed later.
    pub async fn invalidate(&self, pattern: &str) -> Result<Invalidation, Error> {
        let pattern = Pattern::parse(pattern).map_err(Error::Pattern)?;
        self.invalidate_pattern(&pattern).await
    }

    /// Invalidates one key, taken literally (no glob syntax), and what the
    /// rules add: a rule whose pattern covers the key fires.
    ///
    /// # Errors
    ///
    /// As [`invalidate`](Self::invalidate).
    pub async fn invalidate_key(&self, key: &str) -> Result<Invalidation, Error> {
        self.invalidate_pattern(&Pattern::Key(key.to_owned())).await
    }

    /// Invalidates a parsed [`Pattern`] and its cascade.
    ///
    /// # Errors
    ///
    /// As [`invalidate`](Self::invalidate).
    pub async fn invalidate_pattern(&self, pattern: &Pattern) -> Result<Invalidation, Error> {
        let patterns = self.inner.rules.cascade(pattern);
        let (generation, propagated) = self.inner.invalidate_all(&patterns).await;
        metrics::counter!("hasivu_cache_invalidations_total", "cache" => self.inner.name.clone())
            .increment(1);
        if !propagated && self.inner.strict {
            return Err(Error::L2(
                "invalidation did not reach redis (queued)".into(),
            ));
        }
        Ok(Invalidation {
            patterns,
            generation,
            propagated,
        })
    }

    /// Maintenance: deletes from Redis every entry whose key matches `glob`
    /// (full Redis glob syntax: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\`
    /// escapes; the key prefix is prepended, escaped). Walks the keyspace
    /// with `SCAN` in steps and deletes with `UNLINK`, on every master of a
    /// cluster; never `KEYS`. Returns how many entries were deleted; 0
    /// without Redis.
    ///
    /// It reclaims memory and does not touch any L1: to make entries miss
    /// everywhere, [`invalidate`](Self::invalidate) them (O(1)), then purge
    /// at leisure. Keys under `hasivu:` belong to the cache and are kept.
    ///
    /// # Errors
    ///
    /// [`Error::L2`] when Redis fails during the walk (what was deleted
    /// stays deleted).
    pub async fn purge(&self, glob: &str) -> Result<u64, Error> {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.inner.l2 {
            return l2.purge(glob).await.map_err(|e| Error::L2(e.into()));
        }
        let _ = glob;
        Ok(0)
    }

    /// Invalidations waiting to be replayed to Redis (0 when in sync).
    pub fn pending_invalidations(&self) -> usize {
        let pending = self.inner.pending.lock().expect("pending lock");
        pending.len() + usize::from(pending.overflow)
    }
}

impl<C: Codec> Inner<C> {
    /// Invalidates `patterns` here and in Redis; returns the generation and
    /// whether Redis took it all.
    async fn invalidate_all(&self, patterns: &[Pattern]) -> (u64, bool) {
        let mut prefixes = Vec::new();
        let mut keys = Vec::new();
        for pattern in patterns {
            match pattern {
                Pattern::Prefix(prefix) => prefixes.push(prefix.as_str()),
                Pattern::Key(key) => keys.push(key.as_str()),
            }
        }
        let mut generation = 0;
        let mut propagated = true;
        if !prefixes.is_empty() {
            match self.bump(&prefixes).await {
                Some(next) => {
                    generation = next;
                    self.generations.apply(prefixes.iter().copied(), next);
                }
                None => {
                    propagated = false;
                    self.generations.apply_pending(prefixes.iter().copied());
                }
            }
        }
        self.sweep(&prefixes, &keys).await;
        if propagated {
            propagated = self
                .share(Op::Invalidate, &prefixes, &keys, generation)
                .await;
        }
        if !propagated {
            self.pending
                .lock()
                .expect("pending lock")
                .add(&prefixes, &keys, &[]);
        }
        (generation, propagated)
    }

    /// A new generation for `prefixes`: from Redis when there is an L2,
    /// else from the local sequence. `None` when Redis failed.
    async fn bump(&self, prefixes: &[&str]) -> Option<u64> {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            return match l2.bump(prefixes).await {
                Ok(generation) => Some(generation),
                Err(error) => {
                    self.stats.l2_error();
                    tracing::warn!(%error, ?prefixes, "invalidation queued: redis unreachable");
                    None
                }
            };
        }
        let _ = prefixes;
        Some(self.generations.next_local_shared())
    }

    /// Removes invalidated keys from L2 and tells the other instances;
    /// `false` when Redis failed. Without Redis there is nobody to tell.
    async fn share(&self, op: Op, prefixes: &[&str], keys: &[&str], generation: u64) -> bool {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            if op == Op::Invalidate {
                for key in keys {
                    if l2.remove(key).await.is_err() {
                        self.stats.l2_error();
                        return false;
                    }
                }
            }
            let payload = self.message(op, prefixes, keys, generation);
            return match l2.publish(&payload).await {
                Ok(()) => {
                    sent();
                    true
                }
                Err(_) => {
                    self.stats.l2_error();
                    false
                }
            };
        }
        let _ = (op, prefixes, keys, generation);
        true
    }

    /// A backplane message from this instance, serialized.
    pub(crate) fn message(
        &self,
        op: Op,
        prefixes: &[&str],
        keys: &[&str],
        generation: u64,
    ) -> Vec<u8> {
        let message = Message {
            op,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            generation,
            origin: self.origin,
            sent_ms: crate::message::now_ms(),
        };
        serde_json::to_vec(&message).expect("a message serializes")
    }

    /// Queues the announcement of a write of `key` for the replay (Redis
    /// could not be told); in strict mode, the error to return.
    pub(crate) fn announce_later(&self, key: &str) -> Result<(), Error> {
        self.pending
            .lock()
            .expect("pending lock")
            .add(&[], &[], &[key]);
        if self.strict {
            return Err(Error::L2(
                "write not announced to other instances (queued)".into(),
            ));
        }
        Ok(())
    }

    /// Tells the other instances that `key` was written or removed, so they
    /// drop it from L1; queued for a replay when Redis is unreachable.
    pub(crate) async fn announce(
        &self,
        op: Op,
        key: &str,
        _options: &EntryOptions,
    ) -> Result<(), Error> {
        if self.share(op, &[], &[key], 0).await {
            return Ok(());
        }
        self.announce_later(key)
    }

    /// Drops from L1 every entry under `prefixes` and the `keys`.
    async fn sweep(&self, prefixes: &[&str], keys: &[&str]) {
        if prefixes.iter().any(|p| p.is_empty()) {
            self.l1.invalidate_all();
        } else if !prefixes.is_empty() {
            let doomed: Vec<Arc<str>> = self
                .l1
                .iter()
                .filter(|(key, _)| {
                    #[cfg(test)]
                    self.l1_visits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    prefixes.iter().any(|p| key.starts_with(p))
                })
                .map(|(key, _)| Arc::clone(&*key))
                .collect();
            for key in doomed {
                self.l1.invalidate(&key).await;
            }
        }
        for key in keys {
            self.l1.invalidate(*key).await;
        }
    }

    /// Forgets every L1 entry, including those of loads still running.
    async fn flush_l1(&self) {
        self.generations.flush_local();
        self.l1.invalidate_all();
    }

    /// Replays what could not reach Redis; on failure it stays queued.
    #[cfg(feature = "redis")]
    async fn replay(&self, l2: &crate::l2::RedisL2) -> Result<(), crate::l2::L2Error> {
        let queued = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        if queued.is_empty() {
            return Ok(());
        }
        let outcome = self.replay_queued(l2, &queued).await;
        if outcome.is_err() {
            self.pending.lock().expect("pending lock").merge(queued);
        }
        outcome
    }

    #[cfg(feature = "redis")]
    async fn replay_queued(
        &self,
        l2: &crate::l2::RedisL2,
        queued: &Pending,
    ) -> Result<(), crate::l2::L2Error> {
        let mut prefixes: Vec<&str> = queued.prefixes.iter().map(String::as_str).collect();
        if queued.overflow {
            prefixes = vec![""];
        }
        let keys: Vec<&str> = queued.keys.iter().map(String::as_str).collect();
        let mut generation = 0;
        if !prefixes.is_empty() {
            generation = l2.bump(&prefixes).await?;
            self.generations.apply(prefixes.iter().copied(), generation);
        }
        for key in &keys {
            l2.remove(key).await?;
        }
        let mut announce: Vec<&str> = keys;
        announce.extend(queued.announced.iter().map(String::as_str));
        let message = Message {
            op: Op::Invalidate,
            keys: announce.iter().map(|k| (*k).to_owned()).collect(),
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            generation,
            origin: self.origin,
            sent_ms: crate::message::now_ms(),
        };
        l2.publish(&serde_json::to_vec(&message).expect("a message serializes"))
            .await?;
        tracing::info!(
            prefixes = prefixes.len(),
            keys = message.keys.len(),
            "replayed queued invalidations"
        );
        Ok(())
    }
}

#[cfg(feature = "redis")]
impl<C: Codec> crate::backplane::Target for Inner<C> {
    fn apply(&self, message: Message) -> futures_util::future::BoxFuture<'_, ()> {
        use futures_util::FutureExt;
        async move {
            if message.origin == self.origin {
                return;
            }
            let prefixes: Vec<&str> = message.prefixes.iter().map(String::as_str).collect();
            let keys: Vec<&str> = message.keys.iter().map(String::as_str).collect();
            if !prefixes.is_empty() {
                self.generations
                    .apply(prefixes.iter().copied(), message.generation);
            }
            self.sweep(&prefixes, &keys).await;
            self.stats.backplane_received();
        }
        .boxed()
    }

    fn retry(&self) -> futures_util::future::BoxFuture<'_, ()> {
        use futures_util::FutureExt;
        async move {
            if let Some(l2) = &self.l2
                && self.replay(l2).await.is_err()
            {
                tracing::debug!("queued invalidations still cannot reach redis");
            }
        }
        .boxed()
    }

    fn resync(&self) -> futures_util::future::BoxFuture<'_, Result<(), crate::l2::L2Error>> {
        use futures_util::FutureExt;
        async move {
            let Some(l2) = &self.l2 else {
                return Ok(());
            };
            self.replay(l2).await?;
            let generations = l2.generations().await?;
            self.generations.merge_shared(generations);
            self.flush_l1().await;
            Ok(())
        }
        .boxed()
    }
}

/// Counts a backplane message sent.
pub(crate) fn sent() {
    metrics::counter!("hasivu_cache_backplane_messages_total", "direction" => "sent").increment(1);
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering, time::Duration};

    use super::*;

    /// Applying an invalidation, one's own or one from the backplane, costs
    /// the same whatever L1 holds: no walk over L1 per message, so a burst
    /// of messages does not back up behind a big L1.
    #[tokio::test]
    async fn applying_an_invalidation_does_not_walk_l1() {
        let cache = Cache::builder().build().unwrap();
        let options = EntryOptions::new(Duration::from_secs(60));
        for i in 0..5_000 {
            cache
                .set(&format!("menu:item:{i}"), i, &options)
                .await
                .unwrap();
        }
        cache.set("user:1", 1, &options).await.unwrap();
        cache.inner.l1.run_pending_tasks().await;
        let visits = || cache.inner.l1_visits.load(Ordering::Relaxed);

        cache.invalidate("user:*").await.unwrap();
        assert_eq!(visits(), 0, "a local invalidation walked L1");
        #[cfg(feature = "redis")]
        {
            use crate::backplane::Target;
            cache
                .inner
                .apply(Message {
                    op: Op::Invalidate,
                    keys: vec!["menu:item:7".into()],
                    prefixes: vec!["order:".into(), "menu:item:1".into()],
                    generation: 1,
                    origin: cache.inner.origin + 1,
                    sent_ms: 0,
                })
                .await;
            assert_eq!(visits(), 0, "a backplane message walked L1");
        }
        // Yet what they cover is gone, and nothing else.
        assert_eq!(cache.get::<u32>("user:1").await.unwrap(), None);
        #[cfg(feature = "redis")]
        for gone in ["menu:item:7", "menu:item:1", "menu:item:1234"] {
            assert_eq!(cache.get::<u32>(gone).await.unwrap(), None, "{gone}");
        }
        assert_eq!(cache.get::<u32>("menu:item:2").await.unwrap(), Some(2));
        assert_eq!(cache.get::<u32>("menu:item:4999").await.unwrap(), Some(4999));
    }

    #[test]
    fn pending_is_bounded() {
        let mut pending = Pending::default();
        pending.add(&["a:"], &["k"], &["w"]);
        assert_eq!(pending.len(), 3);
        let many: Vec<String> = (0..MAX_PENDING).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        pending.add(&[], &many, &[]);
        assert!(pending.overflow);
        assert_eq!(pending.len(), 0);
        assert!(!pending.is_empty());
        pending.add(&["b:"], &[], &[]);
        assert_eq!(pending.len(), 0, "nothing more is kept once it overflowed");
    }
}
