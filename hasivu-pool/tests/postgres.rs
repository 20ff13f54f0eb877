//! The PostgreSQL adapter against a real server: queries through the pool
//! from many tasks, statements prepared per connection, an outage in the
//! middle of a test, and network faults through a proxy (a stall, a
//! half-open connection).
#![cfg(feature = "postgres")]

use std::time::{Duration, Instant};

use hasivu_pool::{Pool, PoolConfig, PoolError, PostgresManager, PostgresManagerError};
use hasivu_testkit::{FaultProxy, PostgresServer};

/// Short timeouts so an outage is seen and healed within a test, and a
/// long acquire timeout so "fast" cannot mean "timed out".
fn config() -> PoolConfig {
    PoolConfig::default()
        .max_size(3)
        .min_idle(1)
        .acquire_timeout(Duration::from_secs(30))
        .create_timeout(Duration::from_secs(2))
        .validate_after(Duration::ZERO)
        .retry_initial(Duration::from_millis(50))
        .retry_max(Duration::from_millis(400))
        .breaker_threshold(2)
        .leak_threshold(None)
}

fn pool(pg: &PostgresServer) -> Pool<PostgresManager> {
    Pool::builder(PostgresManager::from_url(&pg.url()).expect("a valid url"))
        .name("postgres")
        .config(config())
        .build()
}

/// The error behind a failed acquire, as text.
fn backend_text(error: &PoolError<PostgresManagerError>) -> String {
    match error {
        PoolError::Backend(e)
        | PoolError::Unavailable {
            last_error: Some(e),
            ..
        } => e.to_string(),
        other => panic!("expected the backend's error, got {other:?}"),
    }
}

async fn select_one(pool: &Pool<PostgresManager>) -> Result<i32, PoolError<PostgresManagerError>> {
    let conn = pool.get().await?;
    let row = conn.query_one("SELECT 1", &[]).await.expect("SELECT 1");
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_create_insert_and_select_through_three_connections() {
    let pg = PostgresServer::start();
    let pool = pool(&pg);
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE events (id SERIAL PRIMARY KEY, task INT4 NOT NULL, note TEXT)")
        .await
        .unwrap();

    let tasks: Vec<_> = (0..48)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.get().await.expect("a connection");
                let insert = conn
                    .prepare_cached("INSERT INTO events (task, note) VALUES ($1, $2) RETURNING id")
                    .await
                    .expect("prepared");
                let id: i32 = conn
                    .query_one(&insert, &[&task, &format!("from task {task}")])
                    .await
                    .expect("inserted")
                    .get(0);
                let note: String = conn
                    .query_one("SELECT note FROM events WHERE id = $1", &[&id])
                    .await
                    .expect("selected")
                    .get(0);
                assert_eq!(note, format!("from task {task}"));
                // A transaction on a pooled connection.
                let tx = conn.transaction().await.expect("begun");
                tx.execute("UPDATE events SET note = note || '!' WHERE id = $1", &[&id])
                    .await
                    .expect("updated");
                tx.commit().await.expect("committed");
                conn.cached_statements()
            })
        })
        .collect();
    for task in tasks {
        let cached = task.await.expect("task finished");
        assert_eq!(cached, 1, "one statement, prepared once per connection");
    }

    let conn = pool.get().await.unwrap();
    let row = conn
        .query_one(
            "SELECT count(*), count(DISTINCT task), bool_and(note LIKE '%!') FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 48);
    assert_eq!(row.get::<_, i64>(1), 48);
    assert!(row.get::<_, bool>(2));
    drop(conn);
    let status = pool.status();
    assert!(status.size <= 3, "{status:?}");
    assert!(status.creates <= 3, "connections are reused: {status:?}");
    assert_eq!(status.in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_acquires_fail_fast_with_the_real_error_then_the_pool_heals() {
    let mut pg = PostgresServer::start();
    let pool = pool(&pg);
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kept (v INT4); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    // The pool at its maximum (so the background refill adds nothing):
    // two idle connections, and one checked out across the outage.
    let all: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.get())).await;
    drop(all);
    assert_eq!(pool.status().idle, 3);
    let held = pool.get().await.unwrap();

    tokio::task::block_in_place(|| pg.stop());

    // The connection in use fails with the server's own words and is
    // retired when it comes back.
    let error = held
        .query_one("SELECT 1", &[])
        .await
        .expect_err("server gone");
    assert!(held.is_closed(), "{error}");
    drop(held);

    // Idle connections are found closed by validation and retired instead
    // of being handed out; the new connection is refused, and the caller
    // hears so at once, not after the 30 s acquire timeout.
    let started = Instant::now();
    let error = pool.get().await.expect_err("postgres is down");
    let first = started.elapsed();
    let text = backend_text(&error);
    assert!(
        text.to_lowercase().contains("refused"),
        "the real cause: {text}"
    );
    assert!(first < Duration::from_secs(1), "failed fast: {first:?}");
    let status = pool.status();
    assert_eq!(
        status.closes.broken, 3,
        "the held connection and the dead idle ones were retired: {status:?}"
    );
    assert_eq!(status.idle, 0);

    let mut slowest = first;
    let mut unavailable = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let error = pool.get().await.expect_err("still down");
        slowest = slowest.max(started.elapsed());
        assert!(backend_text(&error).to_lowercase().contains("refused"));
        if matches!(error, PoolError::Unavailable { .. }) {
            unavailable += 1;
        }
    }
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(unavailable > 0, "the breaker opened");
    eprintln!(
        "with postgres down: first acquire failed in {first:?} ({error}), slowest of 11 in {slowest:?}"
    );

    tokio::task::block_in_place(|| pg.start_again());
    let restarted = Instant::now();
    loop {
        match select_one(&pool).await {
            Ok(one) => {
                assert_eq!(one, 1);
                break;
            }
            Err(error) => {
                assert!(
                    restarted.elapsed() < Duration::from_secs(5),
                    "not healed after 5 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let healed = restarted.elapsed();
    eprintln!("postgres back: the pool healed in {healed:?}");
    assert!(!pool.status().breaker_open);
    let conn = pool.get().await.unwrap();
    let kept: i32 = conn
        .query_one("SELECT v FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 7, "same server, same data, same pool");
}

/// A pool connecting through `proxy`, with a short check timeout.
fn proxied_pool(
    pg: &PostgresServer,
    proxy: &FaultProxy,
    name: &str,
    acquire: Duration,
) -> Pool<PostgresManager> {
    let url = proxy.postgres_url(&pg.url());
    Pool::builder(PostgresManager::from_url(&url).expect("a valid url"))
        .name(name)
        .config(
            config()
                .min_idle(0)
                .acquire_timeout(acquire)
                .validate_timeout(Duration::from_millis(200)),
        )
        .build()
}

/// Gets `n` connections at once and returns them, retrying (a loaded
/// machine may be slow to connect) for up to 10 s.
async fn warm(pool: &Pool<PostgresManager>, n: usize) {
    let started = Instant::now();
    loop {
        let all: Vec<_> = futures_util::future::join_all((0..n).map(|_| pool.get())).await;
        if all.iter().all(Result::is_ok) {
            return;
        }
        drop(all);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ACQUIRE: Duration = Duration::from_millis(500);
/// Room for a loaded machine's scheduling on top of the acquire timeout;
/// a hang would last forever.
const SLACK: Duration = Duration::from_secs(2);

/// Waits (polling, up to 10 s) until `select_one` answers through `pool`.
async fn until_served(pool: &Pool<PostgresManager>) -> Duration {
    let started = Instant::now();
    loop {
        match select_one(pool).await {
            Ok(one) => {
                assert_eq!(one, 1);
                return started.elapsed();
            }
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "not serving again after 10 s: {error}; {:?}",
                    pool.status()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stalled_acquires_are_bounded_and_the_same_pool_serves_after_healing() {
    let pg = PostgresServer::start();
    let proxy = FaultProxy::start(pg.addr());
    let pool = proxied_pool(&pg, &proxy, "postgres-stalled", ACQUIRE);
    warm(&pool, 3).await;
    until_served(&pool).await;

    // The network stops moving bytes without closing anything: idle
    // connections hang in their check, new ones in their handshake.
    proxy.stall();
    for round in 0..2 {
        let acquires = (0..6).map(|_| async {
            let started = Instant::now();
            let outcome = pool.get().await.map(|_| ());
            (outcome, started.elapsed())
        });
        for (outcome, waited) in futures_util::future::join_all(acquires).await {
            assert!(outcome.is_err(), "nothing answers while stalled");
            assert!(
                waited < ACQUIRE + SLACK,
                "round {round}: an acquire hung for {waited:?} (acquire timeout {ACQUIRE:?}): {outcome:?}"
            );
        }
    }
    let status = pool.status();
    assert_eq!(status.in_use, 0, "{status:?}");
    assert!(status.size <= 3, "{status:?}");

    proxy.heal();
    let healed = until_served(&pool).await;
    eprintln!("postgres stalled then healed: served again {healed:?} after healing");
    let status = pool.status();
    assert_eq!(status.in_use, 0, "{status:?}");
    assert!(status.size <= 3, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_idle_connection_is_caught_by_its_check_and_replaced() {
    let pg = PostgresServer::start();
    let proxy = FaultProxy::start(pg.addr());
    let pool = proxied_pool(&pg, &proxy, "postgres-half-open", Duration::from_secs(30));
    warm(&pool, 1).await;
    assert_eq!(pool.status().idle, 1);

    // The idle connection's peer vanishes without a FIN or RST: the client
    // cannot tell. New connections work again.
    proxy.half_open();
    proxy.heal();
    assert_eq!(
        select_one(&pool).await.unwrap(),
        1,
        "served by a new connection"
    );
    let status = pool.status();
    assert_eq!(
        status.closes.broken, 1,
        "the dead one was retired: {status:?}"
    );
    assert_eq!(status.creates, 2, "and replaced: {status:?}");
    assert_eq!(status.in_use, 0, "{status:?}");
}
