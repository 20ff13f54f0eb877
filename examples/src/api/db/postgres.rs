//! The queries on PostgreSQL, with statements prepared once per connection
//! ([`PostgresConnection::prepare_cached`](hasivu_pool::PostgresConnection::prepare_cached)).

use std::collections::BTreeMap;

use hasivu_pool::{Pool, PostgresManager};
use tokio_postgres::{Row, types::ToSql};

use super::{
    Answer, DbError, Idempotency, ItemRow, LoginRow, MenuItem, NewOrder, NewPayment, PURGE_BATCH,
    PaymentMethod, School, Student, UserProfile, now_secs, order_body, plan_order, schema,
    seed::{DEMO_PASSWORD_HASH, SeedData},
    sold_out, today,
};

async fn query(
    pool: &Pool<PostgresManager>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, DbError> {
    let mut conn = pool.get().await.map_err(DbError::unavailable)?;
    let statement = conn.prepare_cached(sql).await.map_err(DbError::from)?;
    conn.client()
        .query(&statement, params)
        .await
        .map_err(DbError::from)
}

pub(super) async fn ping(pool: &Pool<PostgresManager>) -> Result<(), DbError> {
    query(pool, "SELECT 1", &[]).await.map(|_| ())
}

pub(super) async fn migrate_and_seed(
    pool: &Pool<PostgresManager>,
    data: Option<SeedData>,
) -> Result<bool, DbError> {
    let mut conn = pool.get().await.map_err(DbError::unavailable)?;
    let client = conn.client_mut();
    // One migrating instance at a time.
    let tx = client.transaction().await.map_err(DbError::from)?;
    tx.execute("SELECT pg_advisory_xact_lock(4242)", &[])
        .await
        .map_err(DbError::from)?;
    tx.batch_execute(schema::POSTGRES)
        .await
        .map_err(DbError::from)?;
    let seeded: i64 = tx
        .query_one("SELECT COUNT(*) FROM schools", &[])
        .await
        .map_err(DbError::from)?
        .get(0);
    let Some(data) = data.filter(|_| seeded == 0) else {
        tx.commit().await.map_err(DbError::from)?;
        return Ok(false);
    };
    let ids: Vec<i64> = data.schools.iter().map(|s| s.id).collect();
    let names: Vec<&str> = data.schools.iter().map(|s| s.name.as_str()).collect();
    let cities: Vec<&str> = data.schools.iter().map(|s| s.city.as_str()).collect();
    tx.execute(
        "INSERT INTO schools SELECT id, name, city, true FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(id, name, city)",
        &[&ids, &names, &cities],
    )
    .await
    .map_err(DbError::from)?;
    let u = &data.users;
    let ids: Vec<i64> = u.iter().map(|x| x.id).collect();
    let emails: Vec<&str> = u.iter().map(|x| x.email.as_str()).collect();
    let names: Vec<&str> = u.iter().map(|x| x.name.as_str()).collect();
    let roles: Vec<&str> = u.iter().map(|x| x.role.as_str()).collect();
    let tiers: Vec<&str> = u.iter().map(|x| x.tier.as_str()).collect();
    let schools: Vec<i64> = u.iter().map(|x| x.school_id).collect();
    let hash = DEMO_PASSWORD_HASH.trim();
    tx.execute(
        "INSERT INTO users SELECT id, email, $2, name, role, tier, school_id, true
         FROM unnest($1::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
         AS t(id, email, name, role, tier, school_id)",
        &[&ids, &hash, &emails, &names, &roles, &tiers, &schools],
    )
    .await
    .map_err(DbError::from)?;
    let codes: Vec<String> = u.iter().map(|x| format!("STU-{:06}", x.id)).collect();
    let snames: Vec<&str> = u.iter().map(|x| x.student_name.as_str()).collect();
    let grades: Vec<i64> = u.iter().map(|x| x.grade).collect();
    tx.execute(
        "INSERT INTO students SELECT id, id, code, name, grade
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS t(id, code, name, grade)",
        &[&ids, &codes, &snames, &grades],
    )
    .await
    .map_err(DbError::from)?;
    let m = &data.menu;
    let col = |f: fn(&super::seed::MenuRow) -> i64| m.iter().map(f).collect::<Vec<i64>>();
    let (ids, schools, days, prices, cals, left) = (
        col(|x| x.id),
        col(|x| x.school_id),
        col(|x| x.weekday),
        col(|x| x.price_cents),
        col(|x| x.calories),
        col(|x| x.portions_left),
    );
    let names: Vec<&str> = m.iter().map(|x| x.name.as_str()).collect();
    let descs: Vec<&str> = m.iter().map(|x| x.description.as_str()).collect();
    let cats: Vec<&str> = m.iter().map(|x| x.category.as_str()).collect();
    let allergens: Vec<&str> = m.iter().map(|x| x.allergens.as_str()).collect();
    let veg: Vec<bool> = m.iter().map(|x| x.vegetarian).collect();
    tx.execute(
        "INSERT INTO menu_items SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[],
         $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::bool[], $11::bigint[])",
        &[&ids, &schools, &days, &names, &descs, &cats, &prices, &cals, &allergens, &veg, &left],
    )
    .await
    .map_err(DbError::from)?;
    for (code, name) in &data.payment_methods {
        tx.execute(
            "INSERT INTO payment_methods VALUES ($1, $2, true)",
            &[code, name],
        )
        .await
        .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(true)
}

pub(super) async fn login(
    pool: &Pool<PostgresManager>,
    email: &str,
) -> Result<Option<LoginRow>, DbError> {
    let rows = query(pool, schema::LOGIN, &[&email, &true]).await?;
    Ok(rows.first().map(|r| LoginRow {
        id: r.get(0),
        password_hash: r.get(1),
        school_id: r.get(2),
        role: r.get(3),
        tier: r.get(4),
    }))
}

pub(super) async fn user_profile(
    pool: &Pool<PostgresManager>,
    id: i64,
) -> Result<Option<UserProfile>, DbError> {
    let rows = query(pool, schema::USER_PROFILE, &[&id, &true]).await?;
    Ok(rows.first().map(|r| UserProfile {
        id: r.get(0),
        email: r.get(1),
        name: r.get(2),
        role: r.get(3),
        tier: r.get(4),
        school: School {
            id: r.get(5),
            name: r.get(6),
            city: r.get(7),
        },
        student: r.get::<_, Option<i64>>(8).map(|id| Student {
            id,
            student_code: r.get(9),
            name: r.get(10),
            grade: r.get(11),
        }),
    }))
}

pub(super) async fn menu(
    pool: &Pool<PostgresManager>,
    school: i64,
    weekday: i64,
) -> Result<Vec<MenuItem>, DbError> {
    let rows = query(pool, schema::MENU, &[&school, &weekday]).await?;
    Ok(rows
        .iter()
        .map(|r| MenuItem {
            id: r.get(0),
            name: r.get(1),
            description: r.get(2),
            category: r.get(3),
            price_cents: r.get(4),
            calories: r.get(5),
            allergens: r
                .get::<_, String>(6)
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            vegetarian: r.get(7),
            portions_left: r.get(8),
        })
        .collect())
}

pub(super) async fn schools(pool: &Pool<PostgresManager>) -> Result<Vec<School>, DbError> {
    let rows = query(pool, schema::SCHOOLS, &[&true]).await?;
    Ok(rows
        .iter()
        .map(|r| School {
            id: r.get(0),
            name: r.get(1),
            city: r.get(2),
        })
        .collect())
}

pub(super) async fn payment_methods(
    pool: &Pool<PostgresManager>,
) -> Result<Vec<PaymentMethod>, DbError> {
    let rows = query(pool, schema::PAYMENT_METHODS, &[&true]).await?;
    Ok(rows
        .iter()
        .map(|r| PaymentMethod {
            code: r.get(0),
            name: r.get(1),
        })
        .collect())
}

async fn stored(
    tx: &tokio_postgres::Transaction<'_>,
    idem: &Idempotency,
) -> Result<Option<Answer>, DbError> {
    // Concurrent requests with one key queue here until the first commits.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&idem.key])
        .await
        .map_err(DbError::from)?;
    let rows = tx
        .query(schema::IDEM_GET, &[&idem.key, &idem.expired_at_or_before()])
        .await
        .map_err(DbError::from)?;
    Ok(rows
        .first()
        .map(|r| Answer::replay((r.get(0), r.get(1), r.get(2)), idem)))
}

async fn store(
    tx: &tokio_postgres::Transaction<'_>,
    idem: &Idempotency,
    answer: &Answer,
) -> Result<(), DbError> {
    tx.execute(
        schema::IDEM_PUT,
        &[
            &idem.key,
            &idem.fingerprint,
            &i64::from(answer.status),
            &answer.body.to_string(),
            &now_secs(),
        ],
    )
    .await
    .map_err(DbError::from)?;
    Ok(())
}

pub(super) async fn create_order(
    pool: &Pool<PostgresManager>,
    order: NewOrder,
    idem: Option<Idempotency>,
) -> Result<Answer, DbError> {
    let today = today();
    let mut conn = pool.get().await.map_err(DbError::unavailable)?;
    // Locked: two orders cannot both take the last portions.
    let item_stmt = conn
        .prepare_cached(&format!("{} FOR UPDATE", schema::MENU_ITEM))
        .await
        .map_err(DbError::from)?;
    let tx = conn
        .client_mut()
        .transaction()
        .await
        .map_err(DbError::from)?;
    if let Some(idem) = &idem
        && let Some(answer) = stored(&tx, idem).await?
    {
        return Ok(answer);
    }
    // Every order locks its items in ascending id order: two orders of
    // the same items wait for each other in turn, never in a cycle
    // (which PostgreSQL breaks by aborting one of them).
    let mut rows = BTreeMap::new();
    for id in order.item_ids() {
        let found = tx.query(&item_stmt, &[&id]).await.map_err(DbError::from)?;
        let row: Option<ItemRow> = found
            .first()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)));
        rows.extend(row.map(|row| (id, row)));
    }
    let plan = match plan_order(&order, &rows, today) {
        Ok(plan) => plan,
        Err(answer) => return Ok(answer),
    };
    for (id, quantity) in &plan.take {
        let taken = tx
            .execute(schema::TAKE_PORTIONS, &[quantity, id])
            .await
            .map_err(DbError::from)?;
        if taken == 0 {
            // Dropping the transaction rolls back what was taken.
            return Ok(sold_out(&rows[id].2, rows[id].4));
        }
    }
    let (lines, total) = (plan.lines, plan.total);
    let order_id: i64 = tx
        .query_one(
            schema::INSERT_ORDER,
            &[
                &order.user_id,
                &order.school_id,
                &total,
                &order.notes,
                &now_secs(),
            ],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    for (id, _, qty, price) in &lines {
        tx.execute(schema::INSERT_ORDER_ITEM, &[&order_id, id, qty, price])
            .await
            .map_err(DbError::from)?;
    }
    let answer = Answer::new(201, order_body(order_id, total, &lines));
    if let Some(idem) = &idem {
        store(&tx, idem, &answer).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(answer)
}

pub(super) async fn purge_idempotency(
    pool: &Pool<PostgresManager>,
    cutoff: i64,
) -> Result<u64, DbError> {
    let mut conn = pool.get().await.map_err(DbError::unavailable)?;
    let statement = conn
        .prepare_cached(schema::IDEM_PURGE_POSTGRES)
        .await
        .map_err(DbError::from)?;
    conn.client()
        .execute(&statement, &[&cutoff, &PURGE_BATCH])
        .await
        .map_err(DbError::from)
}

pub(super) async fn create_payment(
    pool: &Pool<PostgresManager>,
    payment: NewPayment,
    idem: Idempotency,
) -> Result<Answer, DbError> {
    let mut conn = pool.get().await.map_err(DbError::unavailable)?;
    let tx = conn
        .client_mut()
        .transaction()
        .await
        .map_err(DbError::from)?;
    if let Some(answer) = stored(&tx, &idem).await? {
        return Ok(answer);
    }
    let rows = tx
        .query(
            "SELECT user_id, status, total_cents FROM orders WHERE id = $1 FOR UPDATE",
            &[&payment.order_id],
        )
        .await
        .map_err(DbError::from)?;
    let order = rows.first().map(|r| (r.get(0), r.get(1), r.get(2)));
    let answer = match super::payment_decision(&payment, order) {
        Err(answer) => answer,
        Ok(amount) => {
            let id: i64 = tx
                .query_one(
                    schema::INSERT_PAYMENT,
                    &[&payment.order_id, &amount, &payment.method, &now_secs()],
                )
                .await
                .map_err(DbError::from)?
                .get(0);
            tx.execute(schema::ORDER_PAID, &[&payment.order_id])
                .await
                .map_err(DbError::from)?;
            Answer::new(201, super::payment_body(id, &payment, amount))
        }
    };
    store(&tx, &idem, &answer).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(answer)
}
