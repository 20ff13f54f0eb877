//! The schema, in both dialects. Migrations are idempotent and run at every
//! start (`CREATE … IF NOT EXISTS`), so a fresh database and an existing one
//! both end up at the current version.

/// SQLite.
pub const SQLITE: &str = "
CREATE TABLE IF NOT EXISTS schools (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    name TEXT NOT NULL, role TEXT NOT NULL, tier TEXT NOT NULL,
    school_id INTEGER NOT NULL REFERENCES schools(id), active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS students (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL UNIQUE REFERENCES users(id),
    student_code TEXT NOT NULL, name TEXT NOT NULL, grade INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS menu_items (
    id INTEGER PRIMARY KEY, school_id INTEGER NOT NULL REFERENCES schools(id),
    weekday INTEGER NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
    category TEXT NOT NULL, price_cents INTEGER NOT NULL, calories INTEGER NOT NULL,
    allergens TEXT NOT NULL, vegetarian INTEGER NOT NULL, portions_left INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS menu_items_school_day ON menu_items (school_id, weekday);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL REFERENCES users(id),
    school_id INTEGER NOT NULL, status TEXT NOT NULL, total_cents INTEGER NOT NULL,
    notes TEXT, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS order_items (
    order_id INTEGER NOT NULL REFERENCES orders(id), menu_item_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, order_id INTEGER NOT NULL UNIQUE REFERENCES orders(id),
    amount_cents INTEGER NOT NULL, method TEXT NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS payment_methods (
    code TEXT PRIMARY KEY, name TEXT NOT NULL, active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL,
    body TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
";

/// PostgreSQL.
pub const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS schools (
    id BIGINT PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, active BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    name TEXT NOT NULL, role TEXT NOT NULL, tier TEXT NOT NULL,
    school_id BIGINT NOT NULL REFERENCES schools(id), active BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS students (
    id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL UNIQUE REFERENCES users(id),
    student_code TEXT NOT NULL, name TEXT NOT NULL, grade BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS menu_items (
    id BIGINT PRIMARY KEY, school_id BIGINT NOT NULL REFERENCES schools(id),
    weekday BIGINT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
    category TEXT NOT NULL, price_cents BIGINT NOT NULL, calories BIGINT NOT NULL,
    allergens TEXT NOT NULL, vegetarian BOOLEAN NOT NULL, portions_left BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS menu_items_school_day ON menu_items (school_id, weekday);
CREATE TABLE IF NOT EXISTS orders (
    id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES users(id),
    school_id BIGINT NOT NULL, status TEXT NOT NULL, total_cents BIGINT NOT NULL,
    notes TEXT, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS order_items (
    order_id BIGINT NOT NULL REFERENCES orders(id), menu_item_id BIGINT NOT NULL,
    quantity BIGINT NOT NULL, price_cents BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS payments (
    id BIGSERIAL PRIMARY KEY, order_id BIGINT NOT NULL UNIQUE REFERENCES orders(id),
    amount_cents BIGINT NOT NULL, method TEXT NOT NULL, status TEXT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS payment_methods (
    code TEXT PRIMARY KEY, name TEXT NOT NULL, active BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status BIGINT NOT NULL,
    body TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
";

/// The user with their school and student, in one query (report 1.1).
/// Parameters are numbered in order of appearance, so the same text runs on
/// both databases.
pub const USER_PROFILE: &str = "
SELECT u.id, u.email, u.name, u.role, u.tier, s.id, s.name, s.city,
       st.id, st.student_code, st.name, st.grade
FROM users u
JOIN schools s ON s.id = u.school_id
LEFT JOIN students st ON st.user_id = u.id
WHERE u.id = $1 AND u.active = $2";

/// A login row by email.
pub const LOGIN: &str =
    "SELECT id, password_hash, school_id, role, tier FROM users WHERE email = $1 AND active = $2";

/// A school's menu for one weekday.
pub const MENU: &str = "
SELECT id, name, description, category, price_cents, calories, allergens, vegetarian, portions_left
FROM menu_items WHERE school_id = $1 AND weekday = $2 ORDER BY id";

/// Active schools.
pub const SCHOOLS: &str = "SELECT id, name, city FROM schools WHERE active = $1 ORDER BY id";

/// Active payment methods.
pub const PAYMENT_METHODS: &str =
    "SELECT code, name FROM payment_methods WHERE active = $1 ORDER BY code";

/// A stored idempotent answer, unless it expired (stored at or before `$2`).
pub const IDEM_GET: &str =
    "SELECT fingerprint, status, body FROM idempotency_keys WHERE key = $1 AND created_at > $2";
/// Stores an idempotent answer, replacing an expired one under the same key.
pub const IDEM_PUT: &str = "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, status = excluded.status,
    body = excluded.body, created_at = excluded.created_at";
/// Deletes a batch of expired idempotency rows (stored at or before `$1`,
/// at most `$2`); SQLite has one writer at a time.
pub const IDEM_PURGE_SQLITE: &str = "DELETE FROM idempotency_keys WHERE key IN (
    SELECT key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2)";
/// The same on PostgreSQL, skipping rows another transaction holds (an
/// instance purging at the same time, or a request replacing its expired
/// key), so that a purge never waits for anyone.
pub const IDEM_PURGE_POSTGRES: &str = "DELETE FROM idempotency_keys WHERE key IN (
    SELECT key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)";
/// One menu item, for an order line.
pub const MENU_ITEM: &str =
    "SELECT school_id, weekday, name, price_cents, portions_left FROM menu_items WHERE id = $1";
/// Takes portions if there are enough: changes no row otherwise, so the
/// count never goes below zero whatever ran before.
pub const TAKE_PORTIONS: &str = "UPDATE menu_items SET portions_left = portions_left - $1 WHERE id = $2 AND portions_left >= $1";
/// A new order.
pub const INSERT_ORDER: &str = "INSERT INTO orders (user_id, school_id, status, total_cents, notes, created_at) VALUES ($1, $2, 'pending', $3, $4, $5) RETURNING id";
/// A line of an order.
pub const INSERT_ORDER_ITEM: &str = "INSERT INTO order_items (order_id, menu_item_id, quantity, price_cents) VALUES ($1, $2, $3, $4)";
/// An order, for a payment.
pub const ORDER: &str = "SELECT user_id, status, total_cents FROM orders WHERE id = $1";
/// A payment.
pub const INSERT_PAYMENT: &str = "INSERT INTO payments (order_id, amount_cents, method, status, created_at) VALUES ($1, $2, $3, 'succeeded', $4) RETURNING id";
/// Marks an order paid.
pub const ORDER_PAID: &str = "UPDATE orders SET status = 'paid' WHERE id = $1";
