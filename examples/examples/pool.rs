//! Using only the connection pool: an in-memory SQLite database shared by
//! the pool's connections, queried from many tasks; the status shows the
//! fair queue at work.
//!
//! `cargo run -p hasivu-examples --example pool`

use hasivu_pool::{Pool, PoolConfig, SqliteManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder(SqliteManager::new(":memory:"))
        .name("sqlite")
        .config(PoolConfig::default().max_size(4).min_idle(1))
        .build();
    pool.get()
        .await?
        .interact(|db| db.execute_batch("CREATE TABLE meals (id INTEGER PRIMARY KEY, name TEXT)"))
        .await??;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.get().await?;
                conn.interact(move |db| {
                    db.execute(
                        "INSERT INTO meals (name) VALUES (?1)",
                        [format!("meal {i}")],
                    )
                })
                .await??;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .collect();
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    let count: i64 = pool
        .get()
        .await?
        .interact(|db| db.query_row("SELECT COUNT(*) FROM meals", [], |row| row.get(0)))
        .await??;
    println!("{count} meals; {:?}", pool.status());
    Ok(())
}
