//! The fault proxy in front of a real redis-server, spoken to in raw RESP.

use std::time::{Duration, Instant};

use hasivu_testkit::{FaultProxy, RedisServer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// Long enough that a forwarded answer always arrives, short enough that a
/// test of a hang stays quick.
const ANSWER: Duration = Duration::from_secs(5);
const HANG: Duration = Duration::from_millis(300);

async fn ping(conn: &mut TcpStream) -> std::io::Result<String> {
    conn.write_all(b"PING\r\n").await?;
    read_line(conn).await
}

async fn read_line(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        if conn.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        out.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    TcpStream::connect(proxy.addr()).await.unwrap()
}

#[tokio::test]
async fn forwards_and_adds_latency() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let mut conn = connect(&proxy).await;
    assert_eq!(ping(&mut conn).await.unwrap(), "+PONG\r\n");
    assert_eq!(proxy.open_connections(), 1);
    proxy.latency(Duration::from_millis(100));
    let start = Instant::now();
    assert_eq!(ping(&mut conn).await.unwrap(), "+PONG\r\n");
    // Once up, once down.
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    proxy.heal();
    assert_eq!(ping(&mut conn).await.unwrap(), "+PONG\r\n");
    // Counted once written, which may be just after the client read it.
    wait_for(|| proxy.forwarded_bytes() >= 3 * (6 + 7)).await;
    drop(conn);
    wait_for(|| proxy.open_connections() == 0).await;
}

#[tokio::test]
async fn a_stall_holds_the_bytes_until_healed() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let mut conn = connect(&proxy).await;
    assert_eq!(ping(&mut conn).await.unwrap(), "+PONG\r\n");
    proxy.stall();
    conn.write_all(b"PING\r\n").await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        timeout(HANG, conn.read(&mut byte)).await.is_err(),
        "nothing is answered during a stall"
    );
    assert_eq!(proxy.open_connections(), 1, "and nothing is closed");
    proxy.heal();
    let line = timeout(ANSWER, read_line(&mut conn))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        line, "+PONG\r\n",
        "the held request is answered once healed"
    );
}

#[tokio::test]
async fn half_open_connections_stay_dead_and_new_ones_work_after_healing() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let mut old = connect(&proxy).await;
    assert_eq!(ping(&mut old).await.unwrap(), "+PONG\r\n");
    proxy.half_open();
    assert!(timeout(HANG, ping(&mut old)).await.is_err());
    let mut during = connect(&proxy).await;
    assert!(timeout(HANG, ping(&mut during)).await.is_err());
    proxy.heal();
    assert!(
        timeout(HANG, ping(&mut old)).await.is_err(),
        "a half-open connection never comes back"
    );
    assert_eq!(proxy.open_connections(), 2, "and nobody closed it");
    let mut fresh = connect(&proxy).await;
    let line = timeout(ANSWER, ping(&mut fresh)).await.unwrap().unwrap();
    assert_eq!(line, "+PONG\r\n");
}

#[tokio::test]
async fn a_connection_idle_through_a_half_open_spell_is_dead_after_healing() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let mut idle = connect(&proxy).await;
    assert_eq!(ping(&mut idle).await.unwrap(), "+PONG\r\n");
    // No byte crosses the connection while half-open.
    proxy.half_open();
    proxy.heal();
    assert!(
        timeout(HANG, ping(&mut idle)).await.is_err(),
        "a connection open when the peer vanished stays dead"
    );
    let mut fresh = connect(&proxy).await;
    let line = timeout(ANSWER, ping(&mut fresh)).await.unwrap().unwrap();
    assert_eq!(line, "+PONG\r\n");
}

#[tokio::test]
async fn a_reset_kills_open_connections_only() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let mut old = connect(&proxy).await;
    assert_eq!(ping(&mut old).await.unwrap(), "+PONG\r\n");
    proxy.reset();
    let error = timeout(ANSWER, async {
        loop {
            // The RST may land after a write or two is buffered.
            if let Err(e) = ping(&mut old).await {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{error:?}"
    );
    let mut fresh = connect(&proxy).await;
    assert_eq!(ping(&mut fresh).await.unwrap(), "+PONG\r\n");
}

#[tokio::test]
async fn close_after_cuts_a_connection_at_the_byte_count() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let mut conn = connect(&proxy).await;
    assert_eq!(ping(&mut conn).await.unwrap(), "+PONG\r\n");
    // PING (6 bytes) goes up, then 3 of +PONG's 7 come down, then the cut.
    proxy.close_after(Some(9));
    conn.write_all(b"PING\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = timeout(ANSWER, conn.read_to_end(&mut got)).await.unwrap();
    assert!(read.is_err() || got.len() <= 3, "{read:?} {got:?}");
    assert_eq!(&got[..], &b"+PONG\r\n"[..got.len()]);
    proxy.close_after(None);
    let mut fresh = connect(&proxy).await;
    assert_eq!(ping(&mut fresh).await.unwrap(), "+PONG\r\n");
}

#[tokio::test]
async fn refusing_resets_new_connections_and_keeps_open_ones() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    let mut open = connect(&proxy).await;
    assert_eq!(ping(&mut open).await.unwrap(), "+PONG\r\n");
    proxy.refuse();
    // The reset may even beat the end of `connect`.
    if let Ok(mut refused) = TcpStream::connect(proxy.addr()).await {
        assert!(timeout(ANSWER, ping(&mut refused)).await.unwrap().is_err());
    }
    assert_eq!(ping(&mut open).await.unwrap(), "+PONG\r\n");
    proxy.heal();
    let mut fresh = connect(&proxy).await;
    assert_eq!(ping(&mut fresh).await.unwrap(), "+PONG\r\n");
}

#[test]
fn urls_point_at_the_proxy() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr());
    assert_eq!(proxy.upstream(), redis.addr());
    assert_eq!(proxy.redis_url(), format!("redis://{}/", proxy.addr()));
    let pg = format!("postgres://u@127.0.0.1:{}/db", redis.addr().port());
    assert_eq!(
        proxy.postgres_url(&pg),
        format!("postgres://u@127.0.0.1:{}/db", proxy.addr().port())
    );
}

async fn wait_for(condition: impl Fn() -> bool) {
    timeout(ANSWER, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition within the deadline");
}
