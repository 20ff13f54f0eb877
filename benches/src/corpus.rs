//! Deterministic bodies shaped like the HASIVU API's: menu JSON and an HTML
//! page.

use bytes::Bytes;

const NAMES: &[&str] = &[
    "Vegetable Biryani",
    "Paneer Butter Masala",
    "Dal Tadka",
    "Jeera Rice",
    "Chapati",
    "Curd Rice",
    "Mixed Fruit Salad",
    "Masala Dosa",
    "Idli Sambar",
    "Lemon Rice",
    "Gulab Jamun",
    "Mango Lassi",
];
const CATEGORIES: &[&str] = &["main", "side", "dessert", "drink", "breakfast"];
const ALLERGENS: &[&str] = &["milk", "nuts", "gluten", "soy", "sesame"];

/// A menu item as `/menu/daily` returns it (about 250 bytes).
fn item(i: usize) -> String {
    // A small LCG keeps the data varied but reproducible.
    let r = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    format!(
        r#"{{"id":{},"name":"{} {}","category":"{}","description":"Freshly prepared {} with seasonal ingredients, serving size {} g","price":{}.{:02},"calories":{},"allergens":["{}","{}"],"nutrition":{{"protein":{},"carbs":{},"fat":{}}},"available":{},"schoolId":{}}}"#,
        1000 + i,
        NAMES[i % NAMES.len()],
        i / NAMES.len() + 1,
        CATEGORIES[(r % 5) as usize],
        NAMES[(r as usize / 7) % NAMES.len()].to_lowercase(),
        150 + r % 200,
        20 + r % 60,
        r % 100,
        200 + r % 500,
        ALLERGENS[(r % 5) as usize],
        ALLERGENS[((r / 5) % 5) as usize],
        r % 30,
        20 + r % 70,
        r % 25,
        !r.is_multiple_of(7),
        1 + r % 3,
    )
}

/// A JSON menu document of at least `min_len` bytes.
pub fn menu_json(min_len: usize) -> Bytes {
    let mut out = String::from(r#"{"date":"2026-11-27","schoolId":1,"items":["#);
    let mut i = 0;
    while out.len() + 2 < min_len {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item(i));
        i += 1;
    }
    out.push_str("]}");
    Bytes::from(out)
}

/// An HTML page of at least `min_len` bytes listing menu items.
pub fn html_page(min_len: usize) -> Bytes {
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Daily menu</title>\
         <style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{padding:4px 8px}</style>\
         </head><body><h1>Today's menu</h1><table><thead><tr><th>Dish</th><th>Category</th>\
         <th>Price</th><th>Allergens</th></tr></thead><tbody>",
    );
    let mut i = 0;
    while out.len() + 40 < min_len {
        let r = (i as u64)
            .wrapping_mul(2862933555777941757)
            .wrapping_add(3037000493)
            >> 33;
        out.push_str(&format!(
            "<tr class=\"row-{}\"><td><a href=\"/menu/items/{}\">{} {}</a></td><td>{}</td><td>₹{}.{:02}</td><td>{}</td></tr>\n",
            i % 2,
            1000 + i,
            NAMES[i % NAMES.len()],
            i / NAMES.len() + 1,
            CATEGORIES[(r % 5) as usize],
            20 + r % 60,
            r % 100,
            ALLERGENS[(r % 5) as usize],
        ));
        i += 1;
    }
    out.push_str("</tbody></table></body></html>");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_validity() {
        for len in [1024, 25 * 1024, 200 * 1024] {
            let json = menu_json(len);
            assert!(
                json.len() >= len && json.len() < len + 400,
                "{}",
                json.len()
            );
            serde_json::from_slice::<serde_json::Value>(&json).unwrap();
        }
        let html = html_page(50 * 1024);
        assert!(html.len() >= 50 * 1024 - 40);
        assert_eq!(menu_json(5000), menu_json(5000), "deterministic");
    }
}
