//! The queries on SQLite, run on Tokio's blocking threads through
//! [`SqliteConnection::interact`](hasivu_pool::SqliteConnection::interact).

use std::collections::BTreeMap;

use hasivu_pool::{Pool, SqliteManager};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Answer, DbError, Idempotency, ItemRow, LoginRow, MenuItem, NewOrder, NewPayment, PURGE_BATCH,
    PaymentMethod, School, Student, UserProfile, now_secs, order_body, plan_order, schema,
    seed::{DEMO_PASSWORD_HASH, SeedData},
    sold_out, today,
};

async fn run<R, F>(pool: &Pool<SqliteManager>, f: F) -> Result<R, DbError>
where
    F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    R: Send + 'static,
{
    let mut conn = pool.get().await.map_err(DbError::unavailable)?;
    conn.interact(f)
        .await
        .map_err(DbError::from)?
        .map_err(DbError::from)
}

pub(super) async fn ping(pool: &Pool<SqliteManager>) -> Result<(), DbError> {
    run(pool, |db| {
        db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
    })
    .await
    .map(|_| ())
}

pub(super) async fn migrate_and_seed(
    pool: &Pool<SqliteManager>,
    data: Option<SeedData>,
) -> Result<bool, DbError> {
    run(pool, move |db| {
        db.execute_batch(schema::SQLITE)?;
        let Some(data) = data else {
            return Ok(false);
        };
        let seeded: i64 = db.query_row("SELECT COUNT(*) FROM schools", [], |r| r.get(0))?;
        if seeded > 0 {
            return Ok(false);
        }
        let tx = db.transaction()?;
        {
            let mut s = tx.prepare("INSERT INTO schools VALUES (?1, ?2, ?3, 1)")?;
            for school in &data.schools {
                s.execute(params![school.id, school.name, school.city])?;
            }
            let mut u = tx.prepare("INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)")?;
            let mut st = tx.prepare("INSERT INTO students VALUES (?1, ?2, ?3, ?4, ?5)")?;
            let hash = DEMO_PASSWORD_HASH.trim();
            for user in &data.users {
                u.execute(params![
                    user.id,
                    user.email,
                    hash,
                    user.name,
                    user.role,
                    user.tier,
                    user.school_id
                ])?;
                st.execute(params![
                    user.id,
                    user.id,
                    format!("STU-{:06}", user.id),
                    user.student_name,
                    user.grade
                ])?;
            }
            let mut m = tx.prepare(
                "INSERT INTO menu_items VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for i in &data.menu {
                m.execute(params![
                    i.id,
                    i.school_id,
                    i.weekday,
                    i.name,
                    i.description,
                    i.category,
                    i.price_cents,
                    i.calories,
                    i.allergens,
                    i.vegetarian,
                    i.portions_left
                ])?;
            }
            let mut p = tx.prepare("INSERT INTO payment_methods VALUES (?1, ?2, 1)")?;
            for (code, name) in &data.payment_methods {
                p.execute(params![code, name])?;
            }
        }
        tx.commit()?;
        Ok(true)
    })
    .await
}

pub(super) async fn login(
    pool: &Pool<SqliteManager>,
    email: &str,
) -> Result<Option<LoginRow>, DbError> {
    let email = email.to_owned();
    run(pool, move |db| {
        db.prepare_cached(schema::LOGIN)?
            .query_row(params![email, true], |r| {
                Ok(LoginRow {
                    id: r.get(0)?,
                    password_hash: r.get(1)?,
                    school_id: r.get(2)?,
                    role: r.get(3)?,
                    tier: r.get(4)?,
                })
            })
            .optional()
    })
    .await
}

pub(super) async fn user_profile(
    pool: &Pool<SqliteManager>,
    id: i64,
) -> Result<Option<UserProfile>, DbError> {
    run(pool, move |db| {
        db.prepare_cached(schema::USER_PROFILE)?
            .query_row(params![id, true], |r| {
                let student_id: Option<i64> = r.get(8)?;
                Ok(UserProfile {
                    id: r.get(0)?,
                    email: r.get(1)?,
                    name: r.get(2)?,
                    role: r.get(3)?,
                    tier: r.get(4)?,
                    school: School {
                        id: r.get(5)?,
                        name: r.get(6)?,
                        city: r.get(7)?,
                    },
                    student: match student_id {
                        Some(id) => Some(Student {
                            id,
                            student_code: r.get(9)?,
                            name: r.get(10)?,
                            grade: r.get(11)?,
                        }),
                        None => None,
                    },
                })
            })
            .optional()
    })
    .await
}

pub(super) async fn menu(
    pool: &Pool<SqliteManager>,
    school: i64,
    weekday: i64,
) -> Result<Vec<MenuItem>, DbError> {
    run(pool, move |db| {
        let mut s = db.prepare_cached(schema::MENU)?;
        let rows = s.query_map(params![school, weekday], |r| {
            let allergens: String = r.get(6)?;
            Ok(MenuItem {
                id: r.get(0)?,
                name: r.get(1)?,
                description: r.get(2)?,
                category: r.get(3)?,
                price_cents: r.get(4)?,
                calories: r.get(5)?,
                allergens: allergens
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect(),
                vegetarian: r.get(7)?,
                portions_left: r.get(8)?,
            })
        })?;
        rows.collect()
    })
    .await
}

pub(super) async fn schools(pool: &Pool<SqliteManager>) -> Result<Vec<School>, DbError> {
    run(pool, |db| {
        let mut s = db.prepare_cached(schema::SCHOOLS)?;
        let rows = s.query_map(params![true], |r| {
            Ok(School {
                id: r.get(0)?,
                name: r.get(1)?,
                city: r.get(2)?,
            })
        })?;
        rows.collect()
    })
    .await
}

pub(super) async fn payment_methods(
    pool: &Pool<SqliteManager>,
) -> Result<Vec<PaymentMethod>, DbError> {
    run(pool, |db| {
        let mut s = db.prepare_cached(schema::PAYMENT_METHODS)?;
        let rows = s.query_map(params![true], |r| {
            Ok(PaymentMethod {
                code: r.get(0)?,
                name: r.get(1)?,
            })
        })?;
        rows.collect()
    })
    .await
}

fn stored(db: &Connection, idem: &Idempotency) -> rusqlite::Result<Option<Answer>> {
    Ok(db
        .prepare_cached(schema::IDEM_GET)?
        .query_row(params![idem.key, idem.expired_at_or_before()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?
        .map(|row| Answer::replay(row, idem)))
}

fn store(db: &Connection, idem: &Idempotency, answer: &Answer) -> rusqlite::Result<()> {
    db.prepare_cached(schema::IDEM_PUT)?.execute(params![
        idem.key,
        idem.fingerprint,
        i64::from(answer.status),
        answer.body.to_string(),
        now_secs()
    ])?;
    Ok(())
}

pub(super) async fn create_order(
    pool: &Pool<SqliteManager>,
    order: NewOrder,
    idem: Option<Idempotency>,
) -> Result<Answer, DbError> {
    let today = today();
    run(pool, move |db| {
        // IMMEDIATE: the write lock first, so a concurrent duplicate waits
        // and then finds the stored answer.
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(idem) = &idem
            && let Some(answer) = stored(&tx, idem)?
        {
            return Ok(answer);
        }
        let mut rows = BTreeMap::new();
        for id in order.item_ids() {
            let row: Option<ItemRow> = tx
                .prepare_cached(schema::MENU_ITEM)?
                .query_row(params![id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            rows.extend(row.map(|row| (id, row)));
        }
        let plan = match plan_order(&order, &rows, today) {
            Ok(plan) => plan,
            Err(answer) => return Ok(answer),
        };
        // The write lock is held since BEGIN IMMEDIATE, so the rows read
        // are current; the conditional update keeps the count from going
        // negative all the same.
        for (id, quantity) in &plan.take {
            let taken = tx
                .prepare_cached(schema::TAKE_PORTIONS)?
                .execute(params![quantity, id])?;
            if taken == 0 {
                // Dropping the transaction rolls back what was taken.
                return Ok(sold_out(&rows[id].2, rows[id].4));
            }
        }
        let (lines, total) = (plan.lines, plan.total);
        let order_id: i64 = tx.prepare_cached(schema::INSERT_ORDER)?.query_row(
            params![
                order.user_id,
                order.school_id,
                total,
                order.notes,
                now_secs()
            ],
            |r| r.get(0),
        )?;
        for (id, _, qty, price) in &lines {
            tx.prepare_cached(schema::INSERT_ORDER_ITEM)?
                .execute(params![order_id, id, qty, price])?;
        }
        let answer = Answer::new(201, order_body(order_id, total, &lines));
        if let Some(idem) = &idem {
            store(&tx, idem, &answer)?;
        }
        tx.commit()?;
        Ok(answer)
    })
    .await
}

pub(super) async fn purge_idempotency(
    pool: &Pool<SqliteManager>,
    cutoff: i64,
) -> Result<u64, DbError> {
    run(pool, move |db| {
        db.prepare_cached(schema::IDEM_PURGE_SQLITE)?
            .execute(params![cutoff, PURGE_BATCH])
            .map(|n| n as u64)
    })
    .await
}

pub(super) async fn create_payment(
    pool: &Pool<SqliteManager>,
    payment: NewPayment,
    idem: Idempotency,
) -> Result<Answer, DbError> {
    run(pool, move |db| {
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(answer) = stored(&tx, &idem)? {
            return Ok(answer);
        }
        let order: Option<(i64, String, i64)> = tx
            .prepare_cached(schema::ORDER)?
            .query_row(params![payment.order_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let answer = match super::payment_decision(&payment, order) {
            Err(answer) => answer,
            Ok(amount) => {
                let id: i64 = tx.prepare_cached(schema::INSERT_PAYMENT)?.query_row(
                    params![payment.order_id, amount, payment.method, now_secs()],
                    |r| r.get(0),
                )?;
                tx.prepare_cached(schema::ORDER_PAID)?
                    .execute(params![payment.order_id])?;
                Answer::new(201, super::payment_body(id, &payment, amount))
            }
        };
        store(&tx, &idem, &answer)?;
        tx.commit()?;
        Ok(answer)
    })
    .await
}
