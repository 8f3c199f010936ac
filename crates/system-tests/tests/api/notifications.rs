use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, join, spawn_app, spawn_app_with_clock};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const NIGHT_IN_NEW_YORK: &str = "2026-01-15T08:00:00Z"; // 03:00 EST
const NOON_IN_NEW_YORK: &str = "2026-01-15T17:00:00Z";
const QUIET_ENDS: &str = "2026-01-15T12:00:00Z"; // 07:00 EST

async fn set_quiet_hours(app: &TestApp, t: &Tenant, user: &str) {
    let (status, body) = app
        .call(
            t,
            Method::PUT,
            &format!("/users/{user}/notification-preferences"),
            Some(json!({
                "channels": ["websocket"],
                "min_priority": "low",
                "agent_types": [],
                "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "America/New_York"},
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn notify(app: &TestApp, t: &Tenant, user: &str, message: &str) -> Value {
    let (status, body) = app
        .call(
            t,
            Method::POST,
            &format!("/users/{user}/notifications"),
            Some(json!({"message": message, "severity": "warning", "data": {"k": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body
}

async fn next_notification(c: &mut switchboard_test_support::WsClient) -> Value {
    loop {
        let f = c.next_of_type("event").await;
        if f["event"] == "notification" {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn preferences_start_as_the_defaults_and_round_trip() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let path = "/users/u1/notification-preferences";
    let (status, body) = app.call(&t, Method::GET, path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": ["websocket"], "min_priority": "low", "agent_types": [], "quiet_hours": null})
    );
    let prefs = json!({
        "channels": ["websocket", "email"],
        "min_priority": "high",
        "agent_types": ["sales"],
        "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Berlin"},
    });
    let (status, body) = app.call(&t, Method::PUT, path, Some(prefs.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(body, prefs);
    let (_, body) = app.call(&t, Method::GET, path, None).await;
    assert_eq!(body, prefs);

    for (bad, field) in [
        (
            json!({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Mars/Olympus"}}),
            "quiet_hours.tz",
        ),
        (
            json!({"quiet_hours": {"start": "25:00", "end": "07:00", "tz": "UTC"}}),
            "quiet_hours.start",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "7", "tz": "UTC"}}),
            "quiet_hours.end",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "22:00", "tz": "UTC"}}),
            "quiet_hours.end",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "07:00"}}),
            "quiet_hours.tz",
        ),
        (json!({"min_priority": "urgent"}), "min_priority"),
        (json!({"channels": ["pigeon"]}), "channels[0]"),
        (json!({"agent_types": [""]}), "agent_types[0]"),
        (json!({"sound": true}), "sound"),
    ] {
        let (status, p) = app.call(&t, Method::PUT, path, Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}: {p}");
        assert_eq!(p["field"], field, "{bad}");
    }
    let (status, p) = app
        .call(
            &t,
            Method::GET,
            "/users/a%20b/notification-preferences",
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "user");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_inside_quiet_hours_is_held_and_delivered_when_they_end() {
    let clock = ingest::Clock::manual(at(NIGHT_IN_NEW_YORK));
    let app = spawn_app_with_clock(clock.clone()).await;
    let t = app.create_tenant().await;
    set_quiet_hours(&app, &t, "u1").await;
    let mut c = app.connect(&t, "u1", json!({"user:u1": ["read"]})).await;
    join(&mut c, "user:u1").await;

    let body = notify(&app, &t, "u1", "the night shift").await;
    assert_eq!(body["status"], "held");
    assert_eq!(at(body["deliver_at"].as_str().unwrap()), at(QUIET_ENDS));
    c.assert_silent(Duration::from_millis(300)).await;

    // A minute before the end: still held.
    clock.set(at(QUIET_ENDS) - chrono::Duration::minutes(1));
    c.assert_silent(Duration::from_millis(500)).await;

    clock.set(at(QUIET_ENDS) + chrono::Duration::seconds(1));
    let ev = next_notification(&mut c).await;
    assert_eq!(ev["room"], "user:u1");
    assert_eq!(ev["data"]["id"], body["id"]);
    assert_eq!(ev["data"]["message"], "the night shift");
    assert_eq!(ev["data"]["severity"], "warning");
    assert_eq!(ev["data"]["data"], json!({"k": 1}));
    assert_eq!(ev["data"]["held"], true);
    assert_eq!(
        at(ev["data"]["created_at"].as_str().unwrap()),
        at(NIGHT_IN_NEW_YORK)
    );
    // Delivered once.
    clock.advance(chrono::Duration::minutes(5));
    c.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_outside_quiet_hours_is_delivered_at_once() {
    let clock = ingest::Clock::manual(at(NOON_IN_NEW_YORK));
    let app = spawn_app_with_clock(clock).await;
    let t = app.create_tenant().await;
    set_quiet_hours(&app, &t, "u1").await;
    let mut c = app.connect(&t, "u1", json!({"user:u1": ["read"]})).await;
    join(&mut c, "user:u1").await;

    let body = notify(&app, &t, "u1", "lunch is served").await;
    assert_eq!(body["status"], "delivered");
    assert!(body.get("deliver_at").is_none());
    let ev = next_notification(&mut c).await;
    assert_eq!(ev["data"]["id"], body["id"]);
    assert_eq!(ev["data"]["held"], false);

    for (bad, field) in [
        (json!({"message": "x", "severity": "loud"}), "severity"),
        (json!({"severity": "info"}), "message"),
        (json!({"message": "", "severity": "info"}), "message"),
    ] {
        let (status, p) = app
            .call(
                &t,
                Method::POST,
                "/users/u1/notifications",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {p}");
        assert_eq!(p["field"], field);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn held_notifications_survive_a_restart_of_ingest() {
    let app_clock = ingest::Clock::manual(at(NIGHT_IN_NEW_YORK));
    let mut app = spawn_app_with_clock(app_clock).await;
    let t = app.create_tenant().await;
    set_quiet_hours(&app, &t, "u1").await;
    let mut c = app.connect(&t, "u1", json!({"user:u1": ["read"]})).await;
    join(&mut c, "user:u1").await;
    let body = notify(&app, &t, "u1", "kept overnight").await;
    assert_eq!(body["status"], "held");

    // A new ingest process, whose clock says the quiet hours are over.
    app.restart_ingest(ingest::Clock::manual(
        at(QUIET_ENDS) + chrono::Duration::minutes(1),
    ))
    .await;
    let ev = next_notification(&mut c).await;
    assert_eq!(ev["data"]["id"], body["id"]);
    assert_eq!(ev["data"]["held"], true);
    // The new instance serves the API too.
    let (status, _) = app
        .call(&t, Method::GET, "/users/u1/notification-preferences", None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_suggestions_notify_their_user_as_the_preferences_say() {
    let clock = ingest::Clock::manual(at(NOON_IN_NEW_YORK));
    let app = spawn_app_with_clock(clock.clone()).await;
    let t = app.create_tenant().await;
    let (status, _) = app
        .call(
            &t,
            Method::PUT,
            "/users/u1/notification-preferences",
            Some(json!({"min_priority": "high", "agent_types": ["sales"],
                        "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "America/New_York"}})),
        )
        .await;
    assert_eq!(status, 200);
    let mut c = app.connect(&t, "u1", json!({"user:u1": ["read"]})).await;
    join(&mut c, "user:u1").await;

    let s = |agent: &str, priority: &str, title: &str| {
        json!({"agent_type": agent, "title": title, "description": "", "estimated_revenue": 0,
               "confidence_score": 0.5, "priority": priority, "user_id": "u1"})
    };
    let (status, body) = app
        .call(
            &t,
            Method::POST,
            "/suggestions",
            Some(json!({"suggestions": [
                s("sales", "low", "too low"),
                s("marketing", "critical", "wrong agent"),
                s("sales", "critical", "this one"),
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let wanted = &body["items"][2];
    let ev = next_notification(&mut c).await;
    assert_eq!(ev["data"]["message"], "this one");
    assert_eq!(ev["data"]["severity"], "critical");
    assert_eq!(ev["data"]["data"]["suggestion_id"], wanted["id"]);
    assert_eq!(ev["data"]["held"], false);

    // At night the same kind of suggestion is held until morning.
    clock.set(at(NIGHT_IN_NEW_YORK) + chrono::Duration::days(1));
    let (status, _) = app
        .call(
            &t,
            Method::POST,
            "/suggestions",
            Some(json!({"suggestions": [s("sales", "high", "overnight")]})),
        )
        .await;
    assert_eq!(status, 201);
    loop {
        match c.next_frame_within(Duration::from_millis(500)).await {
            Some(Ok(f)) => assert_ne!(f["event"], "notification", "held, not sent: {f}"),
            Some(Err(close)) => panic!("closed: {close:?}"),
            None => break,
        }
    }
    clock.set(at(QUIET_ENDS) + chrono::Duration::days(1));
    let ev = next_notification(&mut c).await;
    assert_eq!(ev["data"]["message"], "overnight");
    assert_eq!(ev["data"]["held"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ingest_instances_deliver_a_held_notification_once() {
    let clock = ingest::Clock::manual(at(NIGHT_IN_NEW_YORK));
    let mut app = spawn_app_with_clock(clock.clone()).await;
    // A second instance on the same database, whose delivery loop races the
    // first one's when the quiet hours end.
    let second = app.spawn_extra_ingest(clock.clone()).await;
    let t = app.create_tenant().await;
    set_quiet_hours(&app, &t, "u1").await;
    let mut c = app.connect(&t, "u1", json!({"user:u1": ["read"]})).await;
    join(&mut c, "user:u1").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(notify(&app, &t, "u1", &format!("n{i}")).await["id"].clone());
    }
    let res = app
        .http
        .post(format!(
            "{second}/v1/tenants/{}/users/u1/notifications",
            t.id
        ))
        .bearer_auth(&t.api_key)
        .json(&json!({"message": "via the second", "severity": "info"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "held");
    ids.push(body["id"].clone());

    clock.set(at(QUIET_ENDS));
    let mut got = Vec::new();
    for _ in 0..ids.len() {
        got.push(next_notification(&mut c).await["data"]["id"].clone());
    }
    c.assert_silent(Duration::from_millis(700)).await;
    got.sort_by_key(|v| v.to_string());
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(got, ids, "each held notification exactly once");
}
