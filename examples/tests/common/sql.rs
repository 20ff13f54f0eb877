//! Plain SQL on the API's own database, for tests that look behind the
//! HTTP answers (the same text runs on SQLite and PostgreSQL).

use hasivu_examples::api::db::Db;

/// The first column of the first row, as an integer.
pub async fn scalar(db: &Db, sql: &str) -> i64 {
    let sql = sql.to_owned();
    match db {
        Db::Sqlite(pool) => pool
            .get()
            .await
            .unwrap()
            .interact(move |c| c.query_row(&sql, [], |r| r.get::<_, i64>(0)))
            .await
            .unwrap()
            .unwrap(),
        Db::Postgres(pool) => pool
            .get()
            .await
            .unwrap()
            .client()
            .query_one(&sql, &[])
            .await
            .unwrap()
            .get(0),
    }
}

/// Runs a statement; the number of rows it changed.
pub async fn execute(db: &Db, sql: &str) -> u64 {
    let sql = sql.to_owned();
    match db {
        Db::Sqlite(pool) => pool
            .get()
            .await
            .unwrap()
            .interact(move |c| c.execute(&sql, []))
            .await
            .unwrap()
            .unwrap() as u64,
        Db::Postgres(pool) => pool
            .get()
            .await
            .unwrap()
            .client()
            .execute(&sql, &[])
            .await
            .unwrap(),
    }
}
