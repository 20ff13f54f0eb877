//! Invalidation and writes: the public calls, how a change is applied
//! here and sent to Redis, the queue of changes that could not reach
//! Redis, and what the backplane does with messages from other instances.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    Cache, Codec, Error, Pattern,
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
    /// The generation of the invalidation in the shared sequence: what the
    /// prefixes were bumped to, and the stamp the invalidated keys keep (0
    /// when Redis could not be reached, or without Redis when there were
    /// no prefixes).
    pub generation: u64,
    /// Whether Redis took the invalidation and the other instances were
    /// told. When `false` (Redis down), the invalidation holds here at once
    /// and is replayed to Redis and the other instances when it is back.
    pub propagated: bool,
}

/// Invalidations and writes that could not reach Redis, each with the
/// number of the addition that last queued it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pending {
    prefixes: BTreeMap<String, u64>,
    /// Invalidated, written or removed keys: deleted from L2 (whatever it
    /// holds there is older) and announced on replay.
    keys: BTreeMap<String, u64>,
    /// Too much was queued: the replay invalidates everything.
    overflow: bool,
    /// Counts additions.
    added: u64,
}

impl Pending {
    fn len(&self) -> usize {
        self.prefixes.len() + self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0 && !self.overflow
    }

    fn add(&mut self, prefixes: &[&str], keys: &[&str]) {
        self.added += 1;
        if self.overflow {
            return;
        }
        let added = self.added;
        self.prefixes
            .extend(prefixes.iter().map(|p| ((*p).to_owned(), added)));
        self.keys
            .extend(keys.iter().map(|k| ((*k).to_owned(), added)));
        if self.len() > MAX_PENDING {
            *self = Pending {
                overflow: true,
                added,
                ..Pending::default()
            };
        }
    }

    /// Forgets what `replayed` (a copy taken before a replay that
    /// succeeded) held, unless it was queued again meanwhile.
    fn replayed(&mut self, replayed: &Pending) {
        if self.added == replayed.added {
            *self = Pending {
                added: self.added,
                ..Pending::default()
            };
        } else if !self.overflow {
            self.prefixes
                .retain(|prefix, added| replayed.prefixes.get(prefix) != Some(added));
            self.keys
                .retain(|key, added| replayed.keys.get(key) != Some(added));
        }
        // An overflow queued meanwhile stays: its replay covers everything.
    }

    /// Whether Redis may still hold a value of `key` older than a write
    /// made here.
    fn holds(&self, key: &str) -> bool {
        self.overflow || self.keys.contains_key(key)
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
    /// an older generation is a miss from now on, in L2 and in every
    /// instance's L1 (here at once, elsewhere when the backplane message
    /// arrives, within milliseconds); nothing is walked or deleted. Keys
    /// are removed from L1 and L2. A load of anything invalidated that
    /// started before returns its value to its callers but does not store
    /// it, on any instance. The memory of invalidated L2 entries is
    /// reclaimed by their TTL, or at once by [`purge`](Self::purge); that
    /// of L1 entries by their TTL or by eviction.
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

    /// Invalidations and writes waiting to be replayed to Redis (0 when in
    /// sync).
    pub fn pending_invalidations(&self) -> usize {
        let pending = self.inner.pending.lock().expect("pending lock");
        pending.len() + usize::from(pending.overflow)
    }
}

impl<C: Codec> Inner<C> {
    /// Invalidates `patterns` here and in Redis; returns the generation and
    /// whether Redis took it all. If this call is dropped before Redis
    /// answered, it holds here and is queued for the replay like a failure:
    /// a cancelled invalidation is still made.
    async fn invalidate_all(&self, patterns: &[Pattern]) -> (u64, bool) {
        let mut prefixes = Vec::new();
        let mut keys = Vec::new();
        for pattern in patterns {
            match pattern {
                Pattern::Prefix(prefix) => prefixes.push(prefix.as_str()),
                Pattern::Key(key) => keys.push(key.as_str()),
            }
        }
        // Keys leave L1 first, so that a call dropped half-way leaves none
        // here; prefixes are marked by the guard then (no await needed).
        let unsent = Unsent::new(self, &prefixes, &keys);
        self.generations.touch(keys.iter().copied());
        self.sweep(&prefixes, &keys).await;
        let message = self.message(Op::Invalidate, &prefixes, &keys);
        let outcome = self.change(&prefixes, &keys, None, message).await;
        unsent.sent();
        let (generation, propagated) = match outcome {
            Some(Ok(generation)) => {
                if !prefixes.is_empty() {
                    self.generations.apply(prefixes.iter().copied(), generation);
                }
                self.generations.observe(generation);
                (generation, true)
            }
            // Without Redis, a prefix takes the next local number.
            None if prefixes.is_empty() => (0, true),
            None => {
                let generation = self.generations.next_local_shared();
                self.generations.apply(prefixes.iter().copied(), generation);
                (generation, true)
            }
            Some(Err(())) => {
                self.generations.apply_pending(prefixes.iter().copied());
                self.queue(&prefixes, &keys);
                (0, false)
            }
        };
        // Once Redis has it (a load that wrote L2 before was deleted there,
        // one writing after is refused by the stamp): loads of the keys
        // running now, and lookups of L2 that read an old value, must not
        // keep what they read here.
        self.generations.touch(keys.iter().copied());
        self.sweep(&[], &keys).await;
        (generation, propagated)
    }

    /// A write of `key` (`set` with the value for L2 and its TTL, `remove`)
    /// in Redis and to the other instances: `key` leaves L1 first, and the
    /// write is counted here before and after Redis takes it, so that no
    /// load running meanwhile stores what it read. Queued for a replay when
    /// Redis cannot be reached, or when this call is dropped before Redis
    /// answered. The caller updates L1 after; the flag says whether it may
    /// keep a written value there: not when another write of the key came
    /// in while Redis took this one (which of the two Redis holds last,
    /// only Redis knows).
    pub(crate) async fn write(
        &self,
        op: Op,
        key: &str,
        value: Option<(&[u8], Duration)>,
    ) -> (Result<(), Error>, bool) {
        let unsent = Unsent::new(self, &[], std::slice::from_ref(&key));
        let mark = self.generations.touch([key]);
        self.l1.invalidate(key).await;
        let message = self.message(op, &[], &[key]);
        let written = value.map(|(bytes, ttl)| (key, bytes, ttl));
        let deleted: &[&str] = if written.is_some() { &[] } else { &[key] };
        let outcome = self.change(&[], deleted, written, message).await;
        unsent.sent();
        let alone = outcome.is_none() || !self.generations.written_since(key, mark);
        self.generations.touch([key]);
        let result = match outcome {
            Some(Ok(generation)) => {
                self.generations.observe(generation);
                Ok(())
            }
            None => Ok(()),
            Some(Err(())) => {
                // Strict or not, Redis and the others must hear of it later.
                self.queue(&[], &[key]);
                if self.strict {
                    Err(Error::L2(
                        "write did not reach redis (queued for a replay)".into(),
                    ))
                } else {
                    Ok(())
                }
            }
        };
        (result, alone)
    }

    /// One change in Redis: `prefixes` bumped, `deleted` keys deleted,
    /// `written` key written, `message` published, all under one new
    /// generation. `None` without Redis; `Some(Err(()))` when Redis failed
    /// (counted).
    async fn change(
        &self,
        prefixes: &[&str],
        deleted: &[&str],
        written: Option<(&str, &[u8], Duration)>,
        message: Message,
    ) -> Option<Result<u64, ()>> {
        #[cfg(feature = "redis")]
        if let Some(l2) = &self.l2 {
            let change = crate::l2_invalidation::Change {
                prefixes,
                deleted,
                written,
                message: Some(message),
            };
            return Some(match l2.change(change).await {
                Ok(generation) => {
                    sent();
                    Ok(generation)
                }
                Err(error) => {
                    self.stats.l2_error();
                    // Counts only: the keys are the callers' (often a
                    // client's), and an outage fails every change.
                    if let Some(suppressed) = l2.log_gate.admit() {
                        tracing::warn!(
                            %error,
                            prefixes = prefixes.len(),
                            keys = deleted.len(),
                            suppressed,
                            "change queued: redis unreachable"
                        );
                    }
                    Err(())
                }
            });
        }
        let _ = (prefixes, deleted, written, message);
        None
    }

    /// Queues what could not reach Redis for the replay.
    fn queue(&self, prefixes: &[&str], keys: &[&str]) {
        self.pending
            .lock()
            .expect("pending lock")
            .add(prefixes, keys);
    }

    /// Whether a write of `key` made here still waits for Redis, which
    /// then holds an older value: L2 is not read for it meanwhile. (A lock
    /// per L2 lookup: nothing next to the round trip it saves.)
    pub(crate) fn queued(&self, key: &str) -> bool {
        self.pending.lock().expect("pending lock").holds(key)
    }

    /// A backplane message from this instance (its generation is set by
    /// Redis when the change is made).
    fn message(&self, op: Op, prefixes: &[&str], keys: &[&str]) -> Message {
        Message {
            op,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            generation: 0,
            origin: self.origin,
            sent_ms: crate::message::now_ms(),
        }
    }

    /// Drops the `keys` from L1. Entries under `prefixes` need no walk:
    /// their generation makes them misses (see `Generations::current`);
    /// only the empty prefix, which covers everything, empties L1 at once
    /// to give its memory back.
    async fn sweep(&self, prefixes: &[&str], keys: &[&str]) {
        if prefixes.iter().any(|p| p.is_empty()) {
            self.l1.invalidate_all();
        }
        for key in keys {
            self.l1.invalidate(*key).await;
            #[cfg(test)]
            self.l1_visits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Forgets every L1 entry, including those of loads still running.
    async fn flush_l1(&self) {
        self.generations.flush_local();
        self.l1.invalidate_all();
    }

    /// Replays what could not reach Redis. The queue keeps it until Redis
    /// took it (a failed or dropped replay leaves it for the next one), and
    /// keeps L2 reads of its keys off meanwhile.
    #[cfg(feature = "redis")]
    async fn replay(&self, l2: &crate::l2::RedisL2) -> Result<(), crate::l2::L2Error> {
        let queued = self.pending.lock().expect("pending lock").clone();
        if queued.is_empty() {
            return Ok(());
        }
        self.replay_queued(l2, &queued).await?;
        self.pending.lock().expect("pending lock").replayed(&queued);
        Ok(())
    }

    /// One change for everything queued: the prefixes bumped, the keys
    /// deleted from L2 (whatever Redis holds for them is older than the
    /// writes made here), one message to the other instances.
    #[cfg(feature = "redis")]
    async fn replay_queued(
        &self,
        l2: &crate::l2::RedisL2,
        queued: &Pending,
    ) -> Result<(), crate::l2::L2Error> {
        let prefixes: Vec<&str> = if queued.overflow {
            vec![""]
        } else {
            queued.prefixes.keys().map(String::as_str).collect()
        };
        let keys: Vec<&str> = queued.keys.keys().map(String::as_str).collect();
        let message = self.message(Op::Invalidate, &prefixes, &keys);
        let change = crate::l2_invalidation::Change {
            prefixes: &prefixes,
            deleted: &keys,
            written: None,
            message: Some(message),
        };
        let generation = l2.change(change).await?;
        sent();
        if !prefixes.is_empty() {
            self.generations.apply(prefixes.iter().copied(), generation);
        }
        self.generations.observe(generation);
        tracing::info!(
            prefixes = prefixes.len(),
            keys = keys.len(),
            "replayed queued invalidations and writes"
        );
        Ok(())
    }
}

#[cfg(feature = "redis")]
impl<C: Codec> crate::backplane::Target for Inner<C> {
    /// O(keys in the message): prefixes only move generations.
    fn apply(&self, message: Message) -> futures_util::future::BoxFuture<'_, ()> {
        use futures_util::FutureExt;
        async move {
            if message.origin == self.origin {
                return;
            }
            let prefixes: Vec<&str> = message.prefixes.iter().map(String::as_str).collect();
            let keys: Vec<&str> = message.keys.iter().map(String::as_str).collect();
            // Loads of these keys running here must not store what they
            // read (whether they end before this message or after).
            self.generations.touch(keys.iter().copied());
            if !prefixes.is_empty() {
                self.generations
                    .apply(prefixes.iter().copied(), message.generation);
            }
            self.sweep(&prefixes, &keys).await;
            // Loads starting from now stamp their values at least with it.
            self.generations.observe(message.generation);
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
            let (generations, last) = l2.generations().await?;
            self.generations.merge_shared(generations);
            // Key writes missed while away count too: loads from now on are
            // stamped after them.
            self.generations.observe(last);
            self.flush_l1().await;
            Ok(())
        }
        .boxed()
    }
}

/// A change on its way to Redis: queued for the replay if the call making
/// it is dropped before Redis answered (the change may or may not have
/// landed; replaying it is harmless either way).
struct Unsent<'a, C: Codec> {
    inner: &'a Inner<C>,
    prefixes: &'a [&'a str],
    keys: &'a [&'a str],
    armed: bool,
}

impl<'a, C: Codec> Unsent<'a, C> {
    fn new(inner: &'a Inner<C>, prefixes: &'a [&'a str], keys: &'a [&'a str]) -> Self {
        Self {
            inner,
            prefixes,
            keys,
            armed: true,
        }
    }

    /// Redis answered (or there is no Redis): the caller takes it from here.
    fn sent(mut self) {
        self.armed = false;
    }
}

impl<C: Codec> Drop for Unsent<'_, C> {
    fn drop(&mut self) {
        #[cfg(feature = "redis")]
        if self.armed && self.inner.l2.is_some() {
            if !self.prefixes.is_empty() {
                self.inner
                    .generations
                    .apply_pending(self.prefixes.iter().copied());
            }
            self.inner.queue(self.prefixes, self.keys);
        }
    }
}

/// Counts a backplane message sent.
pub(crate) fn sent() {
    metrics::counter!("hasivu_cache_backplane_messages_total", "direction" => "sent").increment(1);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::EntryOptions;

    /// Applying an invalidation, one's own or one from the backplane, costs
    /// the same whatever L1 holds: no walk over L1 per message, so a burst
    /// of messages does not back up behind a big L1.
    #[tokio::test]
    async fn applying_an_invalidation_does_not_walk_l1() {
        let cache = Cache::builder().build().unwrap();
        let options = EntryOptions::new(Duration::from_secs(60));
        for i in 0..5_000_u32 {
            cache
                .set(&format!("menu:item:{i}"), i, &options)
                .await
                .unwrap();
        }
        cache.set("user:1", 1_u32, &options).await.unwrap();
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
            assert_eq!(visits(), 1, "a backplane message walked L1 (1: its key)");
        }
        // Yet what they cover is gone, and nothing else.
        assert_eq!(cache.get::<u32>("user:1").await.unwrap(), None);
        #[cfg(feature = "redis")]
        for gone in ["menu:item:7", "menu:item:1", "menu:item:1234"] {
            assert_eq!(cache.get::<u32>(gone).await.unwrap(), None, "{gone}");
        }
        assert_eq!(cache.get::<u32>("menu:item:2").await.unwrap(), Some(2));
        assert_eq!(
            cache.get::<u32>("menu:item:4999").await.unwrap(),
            Some(4999)
        );
    }

    #[test]
    fn a_replay_forgets_what_it_covered_only() {
        let mut pending = Pending::default();
        pending.add(&["a:"], &["k1", "k2"]);
        let replayed = pending.clone();
        // Queued again (k2) or anew (k3, b:) while the replay ran.
        pending.add(&["b:"], &["k2", "k3"]);
        pending.replayed(&replayed);
        assert!(!pending.prefixes.contains_key("a:"));
        assert!(pending.prefixes.contains_key("b:"));
        assert!(!pending.holds("k1"));
        assert!(pending.holds("k2"), "written again during the replay");
        assert!(pending.holds("k3"));
        // Nothing new: everything goes.
        let replayed = pending.clone();
        pending.replayed(&replayed);
        assert!(pending.is_empty());
        // An overflow during the replay stays.
        pending.add(&[], &["k4"]);
        let replayed = pending.clone();
        let many: Vec<String> = (0..=MAX_PENDING).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        pending.add(&[], &many);
        pending.replayed(&replayed);
        assert!(pending.overflow && !pending.is_empty());
    }

    #[test]
    fn pending_is_bounded() {
        let mut pending = Pending::default();
        pending.add(&["a:"], &["k", "w"]);
        assert_eq!(pending.len(), 3);
        assert!(pending.holds("k") && !pending.holds("a:1"));
        let many: Vec<String> = (0..MAX_PENDING).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        pending.add(&[], &many);
        assert!(pending.overflow);
        assert!(pending.holds("anything"), "after an overflow, every key");
        assert_eq!(pending.len(), 0);
        assert!(!pending.is_empty());
        pending.add(&["b:"], &[]);
        assert_eq!(pending.len(), 0, "nothing more is kept once it overflowed");
    }

    /// A late replay (its copy taken before an earlier replay cleared the
    /// queue) does not clear what was queued since, even once as many
    /// additions were counted again: the count never restarts.
    #[test]
    fn the_addition_count_never_restarts() {
        let mut pending = Pending::default();
        pending.add(&[], &["k1"]);
        pending.add(&[], &["k2"]);
        let late = pending.clone();
        pending.replayed(&pending.clone());
        assert!(pending.is_empty());
        pending.add(&[], &["k3"]);
        pending.add(&[], &["k4"]);
        pending.replayed(&late);
        assert!(pending.holds("k3") && pending.holds("k4"));
        // Across an overflow too.
        let mut pending = Pending::default();
        pending.add(&[], &["k1"]);
        pending.add(&[], &["k2"]);
        let late = pending.clone();
        let many: Vec<String> = (0..=MAX_PENDING).map(|i| format!("m{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        pending.add(&[], &many);
        // As many additions after the copy as before it (counted on from
        // the overflow, not from zero).
        pending.add(&[], &["k5"]);
        pending.add(&[], &["k6"]);
        pending.replayed(&late);
        assert!(pending.overflow, "the overflow queued after the copy stays");
    }

    #[test]
    fn the_bound_is_exact() {
        let mut pending = Pending::default();
        let keys: Vec<String> = (0..MAX_PENDING).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        pending.add(&[], &keys);
        assert!(!pending.overflow, "{MAX_PENDING} fit");
        pending.add(&["p:"], &[]);
        assert!(pending.overflow, "one more does not");
    }

    /// Without Redis: invalidations hold at once, report what they did,
    /// and count what is queued (nothing).
    #[tokio::test]
    async fn without_redis_invalidations_apply_here_at_once() {
        let cache = Cache::builder().build().unwrap();
        let born = cache.inner.generations.token().born();
        let done = cache.invalidate_key("menu:1").await.unwrap();
        assert!(done.propagated);
        assert_eq!(done.generation, 0, "keys alone take no generation");
        assert_eq!(
            cache.inner.generations.token().born(),
            born,
            "keys alone leave L1's prefix count alone"
        );
        let first = cache.invalidate("menu:*").await.unwrap();
        let second = cache.invalidate("user:*").await.unwrap();
        assert!(first.generation > 0 && second.generation > first.generation);
        assert_eq!(cache.pending_invalidations(), 0);
    }

    /// The queue's count, including an overflow (which counts one).
    #[tokio::test]
    async fn queued_changes_are_counted() {
        let cache = Cache::builder().build().unwrap();
        cache.inner.queue(&["a:"], &["k1", "k2"]);
        assert_eq!(cache.pending_invalidations(), 3);
        assert!(cache.inner.queued("k1"));
        assert!(!cache.inner.queued("k3"));
        let many: Vec<String> = (0..=MAX_PENDING).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        cache.inner.queue(&[], &many);
        assert_eq!(cache.pending_invalidations(), 1, "an overflow counts one");
        assert!(cache.inner.queued("anything"));
    }

    /// A resync (the backplane is back after missing messages) reads the
    /// generations from Redis and flushes L1: what an invalidation this
    /// instance never heard of covers is gone from both.
    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resync_reads_the_generations_and_flushes_l1() {
        use crate::backplane::Target;
        let redis = hasivu_testkit::RedisServer::start();
        let cache = Cache::builder().redis(redis.url()).build().unwrap();
        let started = std::time::Instant::now();
        while cache.stats().backplane_synced != Some(true) {
            assert!(started.elapsed() < Duration::from_secs(10), "no sync");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let options = EntryOptions::new(Duration::from_secs(60));
        cache.set("menu:1", 1_u32, &options).await.unwrap();
        cache.set("user:1", 2_u32, &options).await.unwrap();
        // Another service bumps `menu:` and its message is lost.
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let last: u64 = redis::cmd("GET")
            .arg("hasivu:{generations}:seq")
            .query_async(&mut conn)
            .await
            .unwrap();
        redis::pipe()
            .cmd("HSET")
            .arg("hasivu:{generations}")
            .arg("menu:")
            .arg(last + 1000)
            .cmd("SET")
            .arg("hasivu:{generations}:seq")
            .arg(last + 1000)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            cache.get::<u32>("menu:1").await.unwrap(),
            Some(1),
            "not heard of"
        );
        cache.inner.resync().await.unwrap();
        assert_eq!(cache.get::<u32>("menu:1").await.unwrap(), None);
        assert_eq!(
            cache.get::<u32>("user:1").await.unwrap(),
            Some(2),
            "from L2"
        );
        // Loads from now on are stamped after the bump: kept in L2.
        let loaded = cache
            .get_or_load("menu:2", &options, || async {
                Ok::<_, std::io::Error>(3_u32)
            })
            .await
            .unwrap();
        assert_eq!(loaded, 3);
        let other = Cache::builder().redis(redis.url()).build().unwrap();
        assert_eq!(other.get::<u32>("menu:2").await.unwrap(), Some(3));
    }

    /// Every change that reached Redis counts one message sent.
    #[cfg(feature = "redis")]
    #[test]
    fn changes_count_the_messages_they_send() {
        let recorder = SentRecorder::default();
        let redis = hasivu_testkit::RedisServer::start();
        metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let cache = Cache::builder().redis(redis.url()).build().unwrap();
                let options = EntryOptions::new(Duration::from_secs(60));
                cache.set("a", 1, &options).await.unwrap();
                cache.remove("a").await.unwrap();
                cache.invalidate_key("b").await.unwrap();
                cache.invalidate("c:*").await.unwrap();
            });
        });
        assert_eq!(recorder.sent.load(Ordering::Relaxed), 4);
    }

    /// Counts `hasivu_cache_backplane_messages_total{direction="sent"}`.
    #[derive(Debug, Default)]
    struct SentRecorder {
        sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl metrics::Recorder for SentRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let sent = key.name() == "hasivu_cache_backplane_messages_total"
                && key
                    .labels()
                    .any(|l| l.key() == "direction" && l.value() == "sent");
            if sent {
                metrics::Counter::from_arc(std::sync::Arc::clone(&self.sent))
            } else {
                metrics::Counter::noop()
            }
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    /// In strict mode, an invalidation that reached everything it had to
    /// (here: no Redis) is no error.
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn strict_mode_errs_only_when_redis_was_missed() {
        let cache = Cache::builder().strict(true).build().unwrap();
        assert!(cache.invalidate("menu:*").await.unwrap().propagated);
        assert!(cache.invalidate_key("menu:1").await.is_ok());
    }
}
