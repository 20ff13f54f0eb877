//! The SQLite adapter: a shared in-memory database and a WAL file database
//! used from many tasks at once, and connections lost to a panic or an
//! abandoned call that do not cost the pool its slot.
#![cfg(feature = "sqlite")]

use std::time::{Duration, Instant};

use hasivu_pool::{Pool, PoolConfig, SqliteError, SqliteManager};

fn config() -> PoolConfig {
    PoolConfig::default()
        .max_size(4)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(30))
        .leak_threshold(None)
}

fn pool(manager: SqliteManager, config: PoolConfig) -> Pool<SqliteManager> {
    Pool::builder(manager).name("sqlite").config(config).build()
}

/// 16 tasks, each inserting 25 rows one statement at a time and reading
/// its own count back, through a pool of 4.
async fn writers_and_readers(pool: &Pool<SqliteManager>) {
    let mut conn = pool.get().await.unwrap();
    conn.interact(|db| {
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (task INTEGER NOT NULL, n INTEGER NOT NULL)",
        )
    })
    .await
    .unwrap()
    .unwrap();
    drop(conn);
    let tasks: Vec<_> = (0..16i64)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for n in 0..25i64 {
                    let mut conn = pool.get().await.expect("a connection");
                    let seen: i64 = conn
                        .interact(move |db| {
                            db.execute("INSERT INTO items (task, n) VALUES (?1, ?2)", [task, n])?;
                            db.query_row(
                                "SELECT count(*) FROM items WHERE task = ?1",
                                [task],
                                |row| row.get(0),
                            )
                        })
                        .await
                        .expect("no panic")
                        .expect("sqlite ok");
                    assert_eq!(seen, n + 1, "task {task} reads its own writes");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished");
    }
    // A different connection than most writers used sees every row.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(pool.get().await.unwrap());
    }
    for conn in &mut conns {
        let total: i64 = conn
            .interact(|db| db.query_row("SELECT count(*) FROM items", [], |row| row.get(0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(total, 16 * 25);
    }
    drop(conns);
    let status = pool.status();
    assert_eq!(status.size, 4, "{status:?}");
    assert_eq!(status.creates, 4, "connections are reused: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_in_memory_database_serves_concurrent_writers_and_readers() {
    let pool = pool(SqliteManager::new(":memory:"), config());
    writers_and_readers(&pool).await;

    // A second manager with a name of its own sees a different database;
    // one with the same name sees the same one.
    let other = self::pool(SqliteManager::memory("elsewhere"), config());
    let mut conn = other.get().await.unwrap();
    let exists: i64 = conn
        .interact(|db| {
            db.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'items'",
                [],
                |row| row.get(0),
            )
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exists, 0);
    conn.interact(|db| db.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1)"))
        .await
        .unwrap()
        .unwrap();
    let same = self::pool(SqliteManager::memory("elsewhere"), config());
    let v: i64 = same
        .get()
        .await
        .unwrap()
        .interact(|db| db.query_row("SELECT v FROM t", [], |row| row.get(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_database_outlives_the_pools_connections() {
    let pool = pool(SqliteManager::memory("outlives"), config().max_size(1));
    let mut conn = pool.get().await.unwrap();
    conn.interact(|db| db.execute_batch("CREATE TABLE kept (v); INSERT INTO kept VALUES (42)"))
        .await
        .unwrap()
        .unwrap();
    // The only connection is closed: SQLite would drop the database with
    // it, but the manager keeps one open.
    conn.mark_broken();
    drop(conn);
    tokio::task::yield_now().await;
    assert_eq!(pool.status().size, 0);
    let v: i64 = pool
        .get()
        .await
        .unwrap()
        .interact(|db| db.query_row("SELECT v FROM kept", [], |row| row.get(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 42);
    assert_eq!(pool.status().creates, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_file_database_serves_concurrent_writers_and_readers_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    let manager = SqliteManager::new(&path)
        .busy_timeout(Duration::from_secs(5))
        .init(|db| db.execute_batch("PRAGMA synchronous = NORMAL"));
    let pool = pool(manager.clone(), config());
    writers_and_readers(&pool).await;
    let mut conn = pool.get().await.unwrap();
    let (mode, busy): (String, i64) = conn
        .interact(|db| {
            Ok::<_, rusqlite::Error>((
                db.query_row("PRAGMA journal_mode", [], |row| row.get(0))?,
                db.query_row("PRAGMA busy_timeout", [], |row| row.get(0))?,
            ))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(busy, 5000);
    drop(conn);
    let report = pool.drain(Duration::from_secs(5)).await;
    assert_eq!(report.still_checked_out, 0);

    // A new pool on the same file reads what the first one wrote.
    let pool = self::pool(manager, config());
    let total: i64 = pool
        .get()
        .await
        .unwrap()
        .interact(|db| db.query_row("SELECT count(*) FROM items", [], |row| row.get(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, 16 * 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_closure_costs_its_connection_but_not_the_pool_slot() {
    let pool = pool(SqliteManager::memory("panics"), config().max_size(1));
    let mut conn = pool.get().await.unwrap();
    conn.interact(|db| db.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1)"))
        .await
        .unwrap()
        .unwrap();
    let error = conn
        .interact(|_db| -> i64 { panic!("boom in a closure") })
        .await
        .expect_err("the panic is reported");
    assert!(
        matches!(&error, SqliteError::Panicked(message) if message == "boom in a closure"),
        "{error}"
    );
    assert!(conn.is_broken());
    // Using it again says why it cannot.
    assert!(matches!(
        conn.interact(|_db| ()).await,
        Err(SqliteError::Lost)
    ));
    drop(conn);

    // The only slot is free again at once, with a fresh connection to the
    // same database.
    let started = Instant::now();
    let mut conn = pool.get().await.expect("the slot was given back");
    assert!(started.elapsed() < Duration::from_secs(1));
    let v: i64 = conn
        .interact(|db| db.query_row("SELECT v FROM t", [], |row| row.get(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 1);
    drop(conn);
    let status = pool.status();
    assert_eq!(status.closes.broken, 1, "{status:?}");
    assert_eq!(status.creates, 2);
    assert_eq!(status.size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_costs_its_connection_but_not_the_pool_slot() {
    let pool = pool(SqliteManager::memory("abandoned"), config().max_size(1));
    let mut conn = pool.get().await.unwrap();
    let slow = conn.interact(|db| {
        std::thread::sleep(Duration::from_millis(300));
        db.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(20), slow)
            .await
            .is_err(),
        "the caller gave up"
    );
    assert!(conn.is_broken());
    drop(conn);
    let started = Instant::now();
    let mut conn = pool.get().await.expect("the slot was given back");
    assert!(started.elapsed() < Duration::from_secs(1));
    let one: i64 = conn
        .interact(|db| db.query_row("SELECT 1", [], |row| row.get(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one, 1);
    assert_eq!(pool.status().closes.broken, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_file_fails_with_sqlites_error() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(
        SqliteManager::new(dir.path().join("missing-dir").join("x.db")),
        config(),
    );
    let error = pool.get().await.expect_err("cannot open");
    let text = error.to_string();
    assert!(text.contains("unable to open database file"), "{text}");
}
