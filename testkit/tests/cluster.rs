//! The testkit's Redis Cluster: a real cluster client against three masters.

use hasivu_testkit::RedisCluster;
use redis::{AsyncCommands, cluster::ClusterClient};

async fn node_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn cluster_info(url: &str) -> String {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut node_connection(url).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn cluster_serves_keys_in_every_slot_range() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    assert_eq!(cluster.nodes().len(), 3);
    for (url, node) in urls.iter().zip(cluster.nodes()) {
        assert_eq!(url, &format!("redis://127.0.0.1:{}/", node.port()));
        let info = cluster_info(url).await;
        assert!(info.contains("cluster_state:ok"), "{url}: {info}");
        assert!(info.contains("cluster_size:3"), "{url}: {info}");
        assert!(
            info.contains("cluster_slots_assigned:16384"),
            "{url}: {info}"
        );
    }

    let client = ClusterClient::new(urls.clone()).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    // {b}, {c} and {a} hash to slots 3300, 7365 and 15495: one per master.
    let keys = ["{a}k", "{b}k", "{c}k"];
    for key in keys {
        let () = conn.set(key, format!("value of {key}")).await.unwrap();
    }
    for key in keys {
        let value: String = conn.get(key).await.unwrap();
        assert_eq!(value, format!("value of {key}"));
    }
    for url in &urls {
        let size: i64 = redis::cmd("DBSIZE")
            .query_async(&mut node_connection(url).await)
            .await
            .unwrap();
        assert_eq!(size, 1, "each master holds one of the keys ({url})");
    }
}

#[tokio::test]
async fn cluster_master_stop_and_start_again() {
    let mut cluster = RedisCluster::start();
    let urls = cluster.urls();

    cluster.node_mut(2).stop();
    assert!(!cluster.node_mut(2).is_running());
    let survivor = &urls[0];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let info = cluster_info(survivor).await;
        if info.contains("cluster_state:fail") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster never noticed the stopped master: {info}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    cluster.node_mut(2).start_again();
    cluster.try_wait_ok().unwrap();
    let client = ClusterClient::new(urls).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let () = conn.set("{a}k", "back").await.unwrap();
    let value: String = conn.get("{a}k").await.unwrap();
    assert_eq!(value, "back");
}
