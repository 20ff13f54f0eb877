//! Deterministic demo data: the same rows at every start, on both databases.

/// The password of every seeded user.
pub const DEMO_PASSWORD: &str = "hasivu-demo";

/// The argon2id hash of [`DEMO_PASSWORD`] (m = 19 MiB, t = 2, p = 1, the
/// OWASP minimum), computed once and stored with every seeded user, so that
/// seeding costs no hashing and start-up stays fast. Logins verify against
/// it for real.
pub const DEMO_PASSWORD_HASH: &str = include_str!("demo_password_hash.txt");

/// The demo accounts printed at start: email, role, tier.
pub const DEMO_ACCOUNTS: [(&str, &str, &str); 4] = [
    ("admin@hasivu.example", "admin", "admin"),
    ("parent@hasivu.example", "parent", "free"),
    ("premium@hasivu.example", "parent", "premium"),
    ("staff@hasivu.example", "staff", "free"),
];

/// Says at start what became of the demo data: `wanted` is the
/// `HASIVU_SEED_DEMO` decision, `seeded` whether rows were inserted,
/// `persistent` whether the database outlives the process. Seeding a
/// database that outlives the process is a warning: anyone who reads the
/// README can log in to it.
pub fn announce(database: &str, wanted: bool, seeded: bool, persistent: bool) {
    let accounts = DEMO_ACCOUNTS.map(|(email, _, _)| email).join(", ");
    match (wanted, seeded) {
        (_, true) if persistent => tracing::warn!(
            database,
            accounts,
            password = DEMO_PASSWORD,
            "demo data seeded (HASIVU_SEED_DEMO=true): every demo account uses the published password; never do this to a database with real users"
        ),
        (_, true) => tracing::info!(
            database,
            accounts,
            password = DEMO_PASSWORD,
            "demo data seeded into the in-memory database: every demo account uses the published password"
        ),
        (true, false) => tracing::info!(
            database,
            "demo data not seeded: the database already holds data (demo accounts seeded earlier keep the published password)"
        ),
        (false, _) => tracing::info!(
            database,
            "demo data not seeded (HASIVU_SEED_DEMO is off for this database): schema migrated, no accounts created"
        ),
    }
}

/// A school row.
#[derive(Clone, Debug)]
pub struct SchoolRow {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// City.
    pub city: String,
}

/// A user row with its student.
#[derive(Clone, Debug)]
pub struct UserRow {
    /// Id (also the student's id).
    pub id: i64,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `admin`, `staff` or `parent`.
    pub role: String,
    /// Rate-limit tier.
    pub tier: String,
    /// School.
    pub school_id: i64,
    /// The student's name.
    pub student_name: String,
    /// The student's grade.
    pub grade: i64,
}

/// A menu item row.
#[derive(Clone, Debug)]
pub struct MenuRow {
    /// Id.
    pub id: i64,
    /// School.
    pub school_id: i64,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: i64,
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
    /// Comma-separated allergens.
    pub allergens: String,
    /// Vegetarian.
    pub vegetarian: bool,
    /// Portions left.
    pub portions_left: i64,
}

/// Everything to insert.
#[derive(Clone, Debug)]
pub struct SeedData {
    /// Schools.
    pub schools: Vec<SchoolRow>,
    /// Users and students.
    pub users: Vec<UserRow>,
    /// Menu items for every school and weekday.
    pub menu: Vec<MenuRow>,
    /// Payment methods: code, name.
    pub payment_methods: Vec<(String, String)>,
}

const SCHOOLS: [(&str, &str); 3] = [
    ("Vidya Niketan Public School", "Bengaluru"),
    ("Sri Sharada Vidyalaya", "Mysuru"),
    ("Green Valley International", "Mangaluru"),
];
const FIRST: [&str; 10] = [
    "Asha", "Ravi", "Meera", "Kiran", "Divya", "Arjun", "Lakshmi", "Rahul", "Priya", "Vikram",
];
const LAST: [&str; 8] = [
    "Rao", "Shetty", "Hegde", "Nair", "Iyer", "Gowda", "Kamath", "Bhat",
];
const DISHES: [(&str, &str, bool); 20] = [
    ("Ragi Mudde", "main", true),
    ("Bisi Bele Bath", "main", true),
    ("Vegetable Pulao", "main", true),
    ("Curd Rice", "main", true),
    ("Lemon Rice", "main", true),
    ("Chapati with Dal", "main", true),
    ("Idli Sambar", "breakfast", true),
    ("Masala Dosa", "breakfast", true),
    ("Upma", "breakfast", true),
    ("Poha", "breakfast", true),
    ("Egg Curry with Rice", "main", false),
    ("Chicken Biryani", "main", false),
    ("Fish Curry Meals", "main", false),
    ("Sprouts Salad", "side", true),
    ("Cucumber Raita", "side", true),
    ("Banana", "fruit", true),
    ("Seasonal Fruit Bowl", "fruit", true),
    ("Buttermilk", "drink", true),
    ("Ragi Malt", "drink", true),
    ("Payasam", "dessert", true),
];
const STYLES: [&str; 5] = [
    "Classic",
    "Home-style",
    "Mildly Spiced",
    "Millet",
    "Festive",
];
const ALLERGENS: [&str; 5] = ["", "dairy", "gluten", "nuts", "dairy,nuts"];

impl SeedData {
    /// Every menu item with `portions` portions a day instead of the
    /// seeded 200–499 (a load test that orders without pause sells those
    /// out within a minute; see `HASIVU_PORTIONS`).
    pub fn with_portions(mut self, portions: u32) -> Self {
        for item in &mut self.menu {
            item.portions_left = i64::from(portions);
        }
        self
    }

    /// The data for `users` users and `items` menu items per school and day.
    pub fn generate(users: u32, items: u32) -> Self {
        let schools = SCHOOLS
            .iter()
            .enumerate()
            .map(|(i, (name, city))| SchoolRow {
                id: i as i64 + 1,
                name: (*name).to_owned(),
                city: (*city).to_owned(),
            })
            .collect::<Vec<_>>();
        let users = (1..=i64::from(users.max(DEMO_ACCOUNTS.len() as u32)))
            .map(|id| {
                let n = id as usize;
                let first = FIRST[n % FIRST.len()];
                let last = LAST[(n / FIRST.len()) % LAST.len()];
                let (email, role, tier) = match DEMO_ACCOUNTS.get(n - 1) {
                    Some((email, role, tier)) => {
                        ((*email).to_owned(), (*role).to_owned(), (*tier).to_owned())
                    }
                    None => (
                        format!("user{id}@hasivu.example"),
                        "parent".to_owned(),
                        if id % 10 == 0 { "premium" } else { "free" }.to_owned(),
                    ),
                };
                UserRow {
                    id,
                    email,
                    name: format!("{first} {last}"),
                    role,
                    tier,
                    school_id: if n <= DEMO_ACCOUNTS.len() {
                        1
                    } else {
                        (id % 3) + 1
                    },
                    student_name: format!("{} {last}", FIRST[(n * 7 + 3) % FIRST.len()]),
                    grade: (id % 10) + 1,
                }
            })
            .collect();
        let mut menu = Vec::new();
        let mut id = 0;
        for school in &schools {
            for weekday in 0..7 {
                for i in 0..i64::from(items) {
                    id += 1;
                    let (dish, category, vegetarian) =
                        DISHES[((i + weekday * 3 + school.id) as usize) % DISHES.len()];
                    let style = STYLES[(i as usize / DISHES.len()) % STYLES.len()];
                    menu.push(MenuRow {
                        id,
                        school_id: school.id,
                        weekday,
                        name: format!("{style} {dish}"),
                        description: format!(
                            "{dish}, freshly prepared in the {} kitchen; {category} portion for grades 1-10, no added preservatives.",
                            school.city
                        ),
                        category: category.to_owned(),
                        price_cents: 2500 + (id * 37) % 6000,
                        calories: 120 + (id * 53) % 480,
                        allergens: ALLERGENS[(id as usize) % ALLERGENS.len()].to_owned(),
                        vegetarian,
                        portions_left: 200 + (id * 11) % 300,
                    });
                }
            }
        }
        let payment_methods = [
            ("card", "Debit or credit card"),
            ("upi", "UPI"),
            ("wallet", "HASIVU wallet"),
        ]
        .iter()
        .map(|(c, n)| ((*c).to_owned(), (*n).to_owned()))
        .collect();
        Self {
            schools,
            users,
            menu,
            payment_methods,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_is_deterministic_and_sized_as_documented() {
        let a = SeedData::generate(1000, 100);
        let b = SeedData::generate(1000, 100);
        assert_eq!(a.users.len(), 1000);
        assert_eq!(a.schools.len(), 3);
        assert_eq!(a.menu.len(), 3 * 7 * 100);
        assert_eq!(a.users[1].email, "parent@hasivu.example");
        assert_eq!(a.menu[57].name, b.menu[57].name);
        assert!(a.menu.iter().all(|m| (200..500).contains(&m.portions_left)));
        let plenty = a.with_portions(1_000_000);
        assert!(plenty.menu.iter().all(|m| m.portions_left == 1_000_000));
    }
}
