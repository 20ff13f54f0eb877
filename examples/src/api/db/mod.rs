//! Data access: the same queries on SQLite (the zero-setup default) and
//! PostgreSQL, through `hasivu-pool` pools registered in a
//! [`PoolManager`](hasivu_pool::PoolManager).
//!
//! Every query is a prepared statement, cached per connection (rusqlite's
//! statement cache, [`PostgresConnection::prepare_cached`](hasivu_pool::PostgresConnection::prepare_cached)).
//! The user profile is one join (report section 1.1) rather than three
//! round trips.

pub mod postgres;
pub mod schema;
pub mod seed;
pub mod sqlite;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hasivu_pool::{Pool, PostgresManager, SqliteManager};
use serde::Serialize;
use serde_json::{Value, json};

/// A database failure, with the backend's message.
#[derive(Debug)]
pub struct DbError {
    message: String,
    unavailable: bool,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {}

impl DbError {
    /// The error with its sources: PostgreSQL's own message (`deadlock
    /// detected`) is the source of a `db error`. A lost connection or a
    /// server shutting down or starting up makes it
    /// [unavailable](Self::is_unavailable).
    pub(crate) fn from<E: std::error::Error + 'static>(error: E) -> Self {
        let mut message = error.to_string();
        let mut unavailable = lost_connection(&error);
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            unavailable |= lost_connection(cause);
            source = cause.source();
        }
        Self {
            message,
            unavailable,
        }
    }

    /// No connection could be had from the pool (breaker open, acquire or
    /// create timeout, backend refusing): the database is unavailable.
    pub(crate) fn unavailable<E: std::error::Error + 'static>(error: E) -> Self {
        Self {
            unavailable: true,
            ..Self::from(error)
        }
    }

    /// The database could not be reached or went away: a 503 the client
    /// may retry (with the same `Idempotency-Key`), not a 500.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// A connection error, or PostgreSQL's classes 08 (connection exception)
/// and 57 (operator intervention: shutting down, starting up).
fn lost_connection(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<std::io::Error>() {
        return true;
    }
    e.downcast_ref::<tokio_postgres::Error>().is_some_and(|e| {
        e.is_closed()
            || e.code()
                .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57"))
    })
}

/// The database: one pool of either kind.
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite through `SqliteManager`.
    Sqlite(Pool<SqliteManager>),
    /// PostgreSQL through `PostgresManager`.
    Postgres(Pool<PostgresManager>),
}

/// What the login needs.
#[derive(Clone, Debug)]
pub struct LoginRow {
    /// User id.
    pub id: i64,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// School.
    pub school_id: i64,
    /// Role.
    pub role: String,
    /// Tier.
    pub tier: String,
}

/// A school.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct School {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// City.
    pub city: String,
}

/// A student.
#[derive(Clone, Debug, Serialize)]
pub struct Student {
    /// Id.
    pub id: i64,
    /// School-issued code.
    pub student_code: String,
    /// Name.
    pub name: String,
    /// Grade.
    pub grade: i64,
}

/// A user with school and student.
#[derive(Clone, Debug, Serialize)]
pub struct UserProfile {
    /// Id.
    pub id: i64,
    /// Email.
    pub email: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Tier.
    pub tier: String,
    /// School.
    pub school: School,
    /// Student, if any.
    pub student: Option<Student>,
}

/// A menu item.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct MenuItem {
    /// Id.
    pub id: i64,
    /// Dish.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Price in paise.
    pub price_cents: i64,
    /// Calories.
    pub calories: i64,
    /// Allergens.
    pub allergens: Vec<String>,
    /// Vegetarian.
    pub vegetarian: bool,
    /// Portions left today.
    pub portions_left: i64,
}

/// A payment method.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PaymentMethod {
    /// Code (`card`, `upi`, `wallet`).
    pub code: String,
    /// Name.
    pub name: String,
}

/// An order line.
#[derive(Clone, Debug)]
pub struct OrderLine {
    /// Menu item.
    pub menu_item_id: i64,
    /// Portions.
    pub quantity: i64,
}

/// A validated order.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// Who orders.
    pub user_id: i64,
    /// Their school.
    pub school_id: i64,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Free text.
    pub notes: Option<String>,
}

/// A validated payment.
#[derive(Clone, Debug)]
pub struct NewPayment {
    /// Who pays.
    pub user_id: i64,
    /// For which order.
    pub order_id: i64,
    /// Method code.
    pub method: String,
}

/// An `Idempotency-Key` scoped to a user and route, with a fingerprint of
/// the request it came with.
#[derive(Clone, Debug)]
pub struct Idempotency {
    /// `user:<id>:<route>:<key>`.
    pub key: String,
    /// A hash of the request body.
    pub fingerprint: String,
    /// How long the stored answer is replayed; an older one is ignored
    /// and replaced (`HASIVU_IDEMPOTENCY_TTL_SECS`).
    pub ttl: Duration,
}

impl Idempotency {
    /// Rows stored at or before this second have expired.
    pub(crate) fn expired_at_or_before(&self) -> i64 {
        expiry_cutoff(self.ttl)
    }
}

/// The `created_at` at or before which an idempotency row is expired.
fn expiry_cutoff(ttl: Duration) -> i64 {
    now_secs().saturating_sub(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// Expired idempotency rows deleted per statement, so that a purge never
/// holds many locks or a long transaction.
pub(crate) const PURGE_BATCH: i64 = 1000;

/// The answer of a write: stored with its idempotency key and replayed.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Whether this is a replay of a stored answer.
    pub replayed: bool,
}

impl Answer {
    pub(crate) fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            replayed: false,
        }
    }

    /// A stored answer, or 422 when the key came with another request.
    pub(crate) fn replay(stored: (String, i64, String), want: &Idempotency) -> Self {
        let (stored_fingerprint, status, body) = stored;
        if stored_fingerprint != want.fingerprint {
            return Self::new(
                422,
                crate::api::problem::body(
                    422,
                    "idempotency key reused",
                    "this Idempotency-Key was used with a different request",
                    None,
                ),
            );
        }
        Self {
            status: u16::try_from(status).unwrap_or(500),
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
            replayed: true,
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Today (UTC) as days since the epoch.
pub fn today() -> i64 {
    now_secs().div_euclid(86_400)
}

/// 0 = Monday … 6 = Sunday for a day number.
pub fn weekday(day: i64) -> i64 {
    // 1970-01-01 was a Thursday.
    (day + 3).rem_euclid(7)
}

/// `YYYY-MM-DD` for a day number (Howard Hinnant's civil-from-days).
pub fn iso_date(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A menu item as an order sees it: `(school_id, weekday, name,
/// price_cents, portions_left)`.
pub(crate) type ItemRow = (i64, i64, String, i64, i64);

/// What an accepted order takes and says.
#[derive(Debug)]
pub(crate) struct OrderPlan {
    /// Per request line: menu item, name, quantity, price.
    pub(crate) lines: Vec<(i64, String, i64, i64)>,
    /// The sum of quantity × price.
    pub(crate) total: i64,
    /// Portions per menu item, summed over the lines, in ascending id
    /// order: the order in which every transaction locks and updates
    /// items, so that two orders never wait for each other in a cycle.
    pub(crate) take: BTreeMap<i64, i64>,
}

impl NewOrder {
    /// The distinct menu items of the order, in ascending id order (the
    /// locking order, see [`OrderPlan::take`]).
    pub(crate) fn item_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lines.iter().map(|l| l.menu_item_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Order rules shared by both databases, given the rows of the order's
/// items (read under the order's lock): each line must name an item on
/// today's menu of the caller's school (400 naming the first bad line),
/// and each item must have the portions of all its lines together (409).
pub(crate) fn plan_order(
    order: &NewOrder,
    rows: &BTreeMap<i64, ItemRow>,
    today: i64,
) -> Result<OrderPlan, Answer> {
    let mut lines = Vec::with_capacity(order.lines.len());
    let mut take = BTreeMap::new();
    let mut total = 0;
    for (index, line) in order.lines.iter().enumerate() {
        let path = format!("items[{index}].menu_item_id");
        let Some((school, day, name, price, _)) = rows.get(&line.menu_item_id) else {
            return Err(Answer::new(
                400,
                crate::api::problem::invalid(&path, "no such menu item"),
            ));
        };
        if *school != order.school_id || *day != weekday(today) {
            return Err(Answer::new(
                400,
                crate::api::problem::invalid(&path, "not on today's menu of your school"),
            ));
        }
        total += price * line.quantity;
        *take.entry(line.menu_item_id).or_insert(0) += line.quantity;
        lines.push((line.menu_item_id, name.clone(), line.quantity, *price));
    }
    for (id, wanted) in &take {
        let (_, _, name, _, left) = &rows[id];
        if left < wanted {
            return Err(sold_out(name, *left));
        }
    }
    Ok(OrderPlan { lines, total, take })
}

/// The 409 of an item without enough portions left.
pub(crate) fn sold_out(name: &str, left: i64) -> Answer {
    Answer::new(
        409,
        crate::api::problem::body(
            409,
            "sold out",
            &format!("only {} portions of {name} left", left.max(0)),
            None,
        ),
    )
}

/// The body of a created order.
pub(crate) fn order_body(order_id: i64, total: i64, lines: &[(i64, String, i64, i64)]) -> Value {
    json!({
        "order_id": order_id,
        "status": "pending",
        "total_cents": total,
        "items": lines.iter().map(|(id, name, qty, price)| json!({
            "menu_item_id": id, "name": name, "quantity": qty, "price_cents": price,
        })).collect::<Vec<_>>(),
    })
}

impl Db {
    /// Checks the database answers.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::ping(pool).await,
            Self::Postgres(pool) => postgres::ping(pool).await,
        }
    }

    /// Creates or updates the schema, then inserts `data` when there is
    /// some and the database is empty (no school); returns whether it
    /// inserted. `None` migrates only.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn migrate_and_seed(&self, data: Option<seed::SeedData>) -> Result<bool, DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::migrate_and_seed(pool, data).await,
            Self::Postgres(pool) => postgres::migrate_and_seed(pool, data).await,
        }
    }

    /// The login row for an email.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn login(&self, email: &str) -> Result<Option<LoginRow>, DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::login(pool, email).await,
            Self::Postgres(pool) => postgres::login(pool, email).await,
        }
    }

    /// A user with school and student.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn user_profile(&self, id: i64) -> Result<Option<UserProfile>, DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::user_profile(pool, id).await,
            Self::Postgres(pool) => postgres::user_profile(pool, id).await,
        }
    }

    /// Today's menu of every active school, by school id.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn menus(&self, weekday: i64) -> Result<Vec<(i64, Vec<MenuItem>)>, DbError> {
        let schools = self.schools().await?;
        let mut menus = Vec::with_capacity(schools.len());
        for school in schools {
            let items = match self {
                Self::Sqlite(pool) => sqlite::menu(pool, school.id, weekday).await?,
                Self::Postgres(pool) => postgres::menu(pool, school.id, weekday).await?,
            };
            menus.push((school.id, items));
        }
        Ok(menus)
    }

    /// Active schools.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn schools(&self) -> Result<Vec<School>, DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::schools(pool).await,
            Self::Postgres(pool) => postgres::schools(pool).await,
        }
    }

    /// Active payment methods.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn payment_methods(&self) -> Result<Vec<PaymentMethod>, DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::payment_methods(pool).await,
            Self::Postgres(pool) => postgres::payment_methods(pool).await,
        }
    }

    /// Creates an order in one transaction, with its idempotency record.
    ///
    /// # Errors
    ///
    /// The backend's error; business refusals are [`Answer`]s.
    pub async fn create_order(
        &self,
        order: NewOrder,
        idem: Option<Idempotency>,
    ) -> Result<Answer, DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::create_order(pool, order, idem).await,
            Self::Postgres(pool) => postgres::create_order(pool, order, idem).await,
        }
    }

    /// Pays an order in one transaction, at most once.
    ///
    /// # Errors
    ///
    /// The backend's error; business refusals are [`Answer`]s.
    pub async fn create_payment(
        &self,
        payment: NewPayment,
        idem: Idempotency,
    ) -> Result<Answer, DbError> {
        match self {
            Self::Sqlite(pool) => sqlite::create_payment(pool, payment, idem).await,
            Self::Postgres(pool) => postgres::create_payment(pool, payment, idem).await,
        }
    }

    /// Deletes the idempotency rows older than `ttl`, in batches of
    /// bounded size; returns how many it deleted.
    ///
    /// # Errors
    ///
    /// The backend's error (rows deleted by earlier batches stay deleted).
    pub async fn purge_idempotency(&self, ttl: Duration) -> Result<u64, DbError> {
        let cutoff = expiry_cutoff(ttl);
        let mut deleted = 0;
        loop {
            let batch = match self {
                Self::Sqlite(pool) => sqlite::purge_idempotency(pool, cutoff).await?,
                Self::Postgres(pool) => postgres::purge_idempotency(pool, cutoff).await?,
            };
            deleted += batch;
            if batch < PURGE_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    /// Deletes expired idempotency rows ([`purge_idempotency`](Self::purge_idempotency))
    /// at once and then every `ttl` (at most every hour, at least every
    /// second), on a task that ends when `owner` is dropped. A failed purge
    /// is logged and tried again at the next tick.
    pub fn spawn_idempotency_purge<T: Send + Sync + 'static>(
        &self,
        ttl: Duration,
        owner: std::sync::Weak<T>,
    ) -> tokio::task::JoinHandle<()> {
        let db = self.clone();
        let every = ttl.clamp(Duration::from_secs(1), Duration::from_secs(3600));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if owner.strong_count() == 0 {
                    return;
                }
                match db.purge_idempotency(ttl).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
                    Err(error) => tracing::warn!(%error, "expired idempotency keys not deleted"),
                }
            }
        })
    }

    /// The pool's status.
    pub fn status(&self) -> hasivu_pool::PoolStatus {
        match self {
            Self::Sqlite(pool) => pool.status(),
            Self::Postgres(pool) => pool.status(),
        }
    }

    /// Opens connections up to the pool's minimum idle count.
    pub async fn warm(&self) {
        match self {
            Self::Sqlite(pool) => {
                let n = pool.config().min_idle;
                let conns = futures_util::future::join_all((0..n).map(|_| pool.get())).await;
                drop(conns);
            }
            Self::Postgres(pool) => {
                let n = pool.config().min_idle;
                let conns = futures_util::future::join_all((0..n).map(|_| pool.get())).await;
                drop(conns);
            }
        }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// Payment rules shared by both databases: the amount to charge, or the
/// refusal. `order` is `(user_id, status, total_cents)`.
pub(crate) fn payment_decision(
    payment: &NewPayment,
    order: Option<(i64, String, i64)>,
) -> Result<i64, Answer> {
    match order {
        Some((user, _, _)) if user != payment.user_id => Err(not_found_order()),
        None => Err(not_found_order()),
        Some((_, status, _)) if status == "paid" => Err(Answer::new(
            409,
            crate::api::problem::body(
                409,
                "already paid",
                "this order has been paid already",
                None,
            ),
        )),
        Some((_, _, total)) => Ok(total),
    }
}

fn not_found_order() -> Answer {
    Answer::new(
        404,
        crate::api::problem::body(404, "order not found", "no such order of yours", None),
    )
}

/// The body of a payment.
pub(crate) fn payment_body(id: i64, payment: &NewPayment, amount: i64) -> Value {
    json!({
        "payment_id": id,
        "order_id": payment.order_id,
        "amount_cents": amount,
        "method": payment.method,
        "status": "succeeded",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_weekdays() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(weekday(0), 3); // Thursday
        assert_eq!(iso_date(19_723), "2024-01-01");
        assert_eq!(weekday(19_723), 0); // a Monday
    }
}
