//! (e) The menus: after the last order, every instance serves each
//! school's menu as PostgreSQL has it, within the menu's TTL.

use std::{collections::BTreeMap, time::Duration};

use reqwest::Client;
use serde_json::Value;

use crate::{
    cluster::Instance,
    load::{Clock, Session},
    verdict::Verdicts,
};

/// (e) After the last order, within the menu's TTL, every
/// instance serves each school's menu as the database has it (items and
/// portions left), in every coding, asked directly.
pub(crate) async fn menus(
    v: &mut Verdicts,
    instances: &[Instance],
    sessions: &[Session],
    db: &tokio_postgres::Client,
    clock: Clock,
    last_order: f64,
    deadline: f64,
) {
    let mut schools: BTreeMap<i64, &Session> = BTreeMap::new();
    for s in sessions {
        schools.entry(s.school).or_insert(s);
    }
    let plain = Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Decodes whatever the API negotiates (br first).
    let encoded = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut checks = Vec::new();
    for instance in instances {
        for (school, session) in &schools {
            for (coding, http) in [("identity", &plain), ("br", &encoded)] {
                checks.push(async move {
                    loop {
                        let why = match stale_items(http, instance, session, db).await {
                            Ok(()) => {
                                return (
                                    instance.name,
                                    *school,
                                    coding,
                                    Ok(clock.now() - last_order),
                                );
                            }
                            Err(why) => why,
                        };
                        if clock.now() > deadline {
                            return (instance.name, *school, coding, Err(why));
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
            }
        }
    }
    let mut figures = Vec::new();
    for (name, school, coding, fresh) in futures_util::future::join_all(checks).await {
        match fresh {
            Ok(after) => figures.push(format!("{name}/{school}/{coding} {after:.1}")),
            Err(last) => {
                figures.push(format!("{name}/{school}/{coding} STALE"));
                v.fail(format!(
                    "(e) instance {name} served school {school}'s menu ({coding}) unlike the \
                     database until {:.1} s after the last order: {last}",
                    deadline - last_order
                ));
            }
        }
    }
    v.line(format!(
        "menus        as the database has them, s after the last order \
         (instance/school/coding; deadline {:.0} s): {}",
        deadline - last_order,
        figures.join(", ")
    ));
}

/// `Ok` when the instance's menu for the session's school matches the
/// database; else what differs.
async fn stale_items(
    http: &Client,
    instance: &Instance,
    session: &Session,
    db: &tokio_postgres::Client,
) -> Result<(), String> {
    let response = http
        .get(instance.url("/menu/daily"))
        .bearer_auth(&session.token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let served: BTreeMap<i64, i64> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| Some((item["id"].as_i64()?, item["portions_left"].as_i64()?)))
        .collect();
    let Some(first) = served.keys().next() else {
        return Err("no items".to_owned());
    };
    let rows = db
        .query(
            "SELECT id, portions_left FROM menu_items WHERE school_id = $1
             AND weekday = (SELECT weekday FROM menu_items WHERE id = $2)",
            &[&session.school, first],
        )
        .await
        .map_err(|e| e.to_string())?;
    let stored: BTreeMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if served == stored {
        return Ok(());
    }
    let differ: Vec<String> = stored
        .iter()
        .filter(|(id, left)| served.get(id) != Some(left))
        .take(3)
        .map(|(id, left)| format!("item {id}: served {:?}, database {left}", served.get(id)))
        .collect();
    Err(format!(
        "{} of {} items differ (X-Cache {cache}), e.g. {}",
        stored
            .iter()
            .filter(|(id, left)| served.get(id) != Some(left))
            .count(),
        stored.len(),
        differ.join(", ")
    ))
}
