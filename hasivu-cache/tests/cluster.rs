//! The cache on a real three-master Redis Cluster (started by the testkit).
#![cfg(feature = "cluster")]

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hasivu_cache::{Cache, EntryOptions};
use hasivu_testkit::RedisCluster;

fn cache(cluster: &RedisCluster) -> Cache {
    Cache::builder()
        .redis_cluster(cluster.urls())
        .l2_timeout(Duration::from_millis(500))
        .breaker(3, Duration::from_millis(500))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_values_across_all_masters() {
    let cluster = RedisCluster::start();
    let a = cache(&cluster);
    let b = cache(&cluster);
    let options = EntryOptions::new(Duration::from_secs(60));
    // Thirty keys spread over the three masters' slots.
    for i in 0..30 {
        a.set(&format!("user:profile:{i}"), i, &options)
            .await
            .unwrap();
    }
    for i in 0..30 {
        assert_eq!(
            b.get::<u32>(&format!("user:profile:{i}")).await.unwrap(),
            Some(i)
        );
    }
    assert_eq!(b.stats().l2_hits, 30);

    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let raw: String = redis::cmd("GET")
        .arg("user:profile:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw, "7", "plain JSON in the cluster too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_works_on_a_cluster() {
    let cluster = RedisCluster::start();
    let build = || {
        Cache::builder()
            .redis_cluster(cluster.urls())
            .distributed_lock(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let instances = [build(), build()];
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let cache = instances[i % 2].clone();
        let options = options.clone();
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("menu:daily:current", &options, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, io::Error>("menu".to_owned())
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "menu");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_does_not_fail_requests() {
    let mut cluster = RedisCluster::start();
    let a = cache(&cluster);
    let options = EntryOptions::new(Duration::from_secs(60));
    cluster.node_mut(2).stop();
    let calls = Arc::new(AtomicUsize::new(0));
    for i in 0..30 {
        let calls = Arc::clone(&calls);
        let value: u32 = a
            .get_or_load(&format!("user:profile:{i}"), &options, move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, io::Error>(i)
            })
            .await
            .unwrap();
        assert_eq!(
            value, i,
            "every request answered, from the loader if need be"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 30);
    cluster.node_mut(2).start_again();
    cluster.try_wait_ok().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_and_the_sharded_backplane_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let a = cache(&cluster);
    let b = cache(&cluster);
    let options = EntryOptions::new(Duration::from_secs(60));
    for cache in [&a, &b] {
        let started = std::time::Instant::now();
        while cache.stats().backplane_synced != Some(true) {
            assert!(started.elapsed() < Duration::from_secs(10), "no sync");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Keys over all three masters, each with its stamp in its own slot.
    for i in 0..30 {
        a.set(&format!("user:profile:{i}"), i, &options)
            .await
            .unwrap();
        a.set(&format!("menu:item:{i}"), i, &options).await.unwrap();
    }
    for i in 0..30 {
        assert_eq!(
            b.get::<u32>(&format!("user:profile:{i}")).await.unwrap(),
            Some(i)
        );
    }

    let done = a.invalidate("user:*").await.unwrap();
    assert!(done.propagated);
    let started = std::time::Instant::now();
    while b.get::<u32>("user:profile:7").await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(2), "no delivery");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(b.stats().backplane_received >= 1, "SSUBSCRIBE delivered it");
    for i in 0..30 {
        assert_eq!(
            b.get::<u32>(&format!("user:profile:{i}")).await.unwrap(),
            None
        );
        assert_eq!(
            b.get::<u32>(&format!("menu:item:{i}")).await.unwrap(),
            Some(i)
        );
    }

    // The purge walks every master.
    assert_eq!(a.purge("menu:item:*").await.unwrap(), 30);
    let c = cache(&cluster);
    assert_eq!(c.get::<u32>("menu:item:3").await.unwrap(), None);
}

/// One command to one node of the cluster (not through a cluster client).
async fn node_cmd<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// Subscribers of `channel` on one node (`PUBSUB SHARDNUMSUB`).
async fn shard_subscribers(url: &str, channel: &str) -> i64 {
    let reply: (String, i64) = node_cmd(url, &["PUBSUB", "SHARDNUMSUB", channel]).await;
    reply.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_backplane_slot_is_subscribed_again_on_its_new_master() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let a = cache(&cluster);
    let b = cache(&cluster);
    let options = EntryOptions::new(Duration::from_secs(60));
    for cache in [&a, &b] {
        let started = std::time::Instant::now();
        while cache.stats().backplane_synced != Some(true) {
            assert!(started.elapsed() < Duration::from_secs(10), "no sync");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let channel = "hasivu:backplane";
    let slot: i64 = node_cmd(&urls[0], &["CLUSTER", "KEYSLOT", channel]).await;
    // Node i serves the i-th third of the slots.
    let from = usize::try_from(slot / 5461).unwrap().min(2);
    let to = (from + 1) % 3;
    assert_eq!(shard_subscribers(&urls[from], channel).await, 2);

    // Move the channel's (empty) slot to another master, the way a
    // resharding or a failover does: the old master tells its shard
    // subscribers `sunsubscribe` and keeps their connections open.
    let slot = slot.to_string();
    let count: i64 = node_cmd(&urls[from], &["CLUSTER", "COUNTKEYSINSLOT", &slot]).await;
    assert_eq!(count, 0, "the test moves an empty slot");
    let from_id: String = node_cmd(&urls[from], &["CLUSTER", "MYID"]).await;
    let to_id: String = node_cmd(&urls[to], &["CLUSTER", "MYID"]).await;
    let () = node_cmd(
        &urls[to],
        &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
    )
    .await;
    let () = node_cmd(
        &urls[from],
        &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
    )
    .await;
    for url in [&urls[to], &urls[from], &urls[3 - from - to]] {
        let () = node_cmd(url, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).await;
    }

    // Both instances subscribe again where the slot now lives, and resync.
    let started = std::time::Instant::now();
    while shard_subscribers(&urls[to], channel).await != 2
        || a.stats().backplane_synced != Some(true)
        || b.stats().backplane_synced != Some(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the instances did not subscribe again on the slot's new master"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Messages reach B again: A's write and invalidation drop B's L1 copy.
    a.set("user:profile:1", 1, &options).await.unwrap();
    assert_eq!(b.get::<u32>("user:profile:1").await.unwrap(), Some(1));
    assert!(a.invalidate("user:*").await.unwrap().propagated);
    let started = std::time::Instant::now();
    while b.get::<u32>("user:profile:1").await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B still serves an invalidated value"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
