use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{join, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn published_event_reaches_a_client_in_the_room() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    let joined = join(&mut c, "lobby").await;
    assert_eq!(joined["seq"], 0);
    assert_eq!(joined["room"], "lobby");

    let res = app
        .post_event(
            &t,
            "lobby",
            json!({"event": "chat.message", "data": {"text": "hi", "n": [1, 2]}}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["id"], first["id"]);
    assert_eq!(ev["room"], "lobby");
    assert_eq!(ev["event"], "chat.message");
    assert_eq!(ev["data"], json!({"text": "hi", "n": [1, 2]}));
    assert_eq!(ev["source"], "api");
    assert_eq!(ev["seq"], first["seq"]);
    assert!(first["seq"].as_u64().unwrap() > 0);
    assert_eq!(ev["prev"], 0);
    assert!(ev["ts"].as_str().unwrap().ends_with('Z'));

    let second: Value = app
        .post_event(
            &t,
            "lobby",
            json!({"event": "chat.message", "data": null, "source": "bot-7"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let ev2 = c.next_of_type("event").await;
    assert_eq!(ev2["id"], second["id"]);
    assert_eq!(
        ev2["prev"], first["seq"],
        "prev chains to the room's previous event"
    );
    assert_eq!(ev2["source"], "bot-7");
}

#[tokio::test(flavor = "multi_thread")]
async fn joined_reports_the_rooms_latest_seq_and_only_newer_events_follow() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let a: Value = app
        .post_event(&t, "news", json!({"event": "news.item", "data": 1}))
        .await
        .json()
        .await
        .unwrap();
    let mut c = app.connect(&t, "u1", json!({"news": ["read"]})).await;
    let joined = join(&mut c, "news").await;
    assert_eq!(joined["seq"], a["seq"]);
    let b: Value = app
        .post_event(&t, "news", json!({"event": "news.item", "data": 2}))
        .await
        .json()
        .await
        .unwrap();
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["id"], b["id"]);
    assert_eq!(ev["prev"], a["seq"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_events_are_stored_in_order_and_delivered_to_each_room() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"r:*": ["read"]})).await;
    join(&mut c, "r:1").await;
    join(&mut c, "r:2").await;
    let res = app
        .http
        .post(format!("{}/v1/tenants/{}/events", app.ingest, t.id))
        .bearer_auth(&t.api_key)
        .json(&json!({"events": [
            {"room": "r:1", "event": "a.b", "data": 1},
            {"room": "r:2", "event": "a.b", "data": 2},
            {"room": "r:1", "event": "a.c", "data": 3},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let seqs: Vec<u64> = items.iter().map(|i| i["seq"].as_u64().unwrap()).collect();
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[2]);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.next_of_type("event").await);
    }
    for i in 0..3 {
        let f = got
            .iter()
            .find(|f| f["id"] == items[i]["id"])
            .expect("every event arrives");
        assert_eq!(f["seq"], seqs[i]);
        assert_eq!(f["data"], json!(i + 1));
    }
    let third = got.iter().find(|f| f["id"] == items[2]["id"]).unwrap();
    assert_eq!(
        third["prev"], seqs[0],
        "r:1's second event follows r:1's first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_twice_stores_one_event() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    join(&mut c, "lobby").await;
    let post = || {
        app.http
            .post(format!(
                "{}/v1/tenants/{}/rooms/lobby/events",
                app.ingest, t.id
            ))
            .bearer_auth(&t.api_key)
            .header("Idempotency-Key", "order-42")
            .json(&json!({"event": "order.paid", "data": {"total": 10}}))
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post().await.unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "a retry gets the same id and seq");

    let ev = c.next_of_type("event").await;
    assert_eq!(ev["id"], first["id"]);
    c.assert_silent(Duration::from_millis(500)).await;

    // The same key with another body is refused, not silently merged.
    let other = app
        .http
        .post(format!(
            "{}/v1/tenants/{}/rooms/lobby/events",
            app.ingest, t.id
        ))
        .bearer_auth(&t.api_key)
        .header("Idempotency-Key", "order-42")
        .json(&json!({"event": "order.paid", "data": {"total": 11}}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422);

    // The batch endpoint keeps its keys too.
    let batch = || {
        app.http
            .post(format!("{}/v1/tenants/{}/events", app.ingest, t.id))
            .bearer_auth(&t.api_key)
            .header("Idempotency-Key", "batch-1")
            .json(&json!({"events": [{"room": "lobby", "event": "x.y", "data": 1}]}))
            .send()
    };
    let b1: Value = batch().await.unwrap().json().await.unwrap();
    let b2: Value = batch().await.unwrap().json().await.unwrap();
    assert_eq!(b1, b2);
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["id"], b1["items"][0]["id"]);
    assert_eq!(ev["prev"], first["seq"]);
    c.assert_silent(Duration::from_millis(500)).await;
}

/// JetStream's deduplication forgets an event id after `SB_DEDUP_WINDOW`;
/// from then on only the idempotency record can answer a retry. The record is
/// written here as it would be for a request answered long ago whose event id
/// JetStream no longer remembers (so a publish would store it again).
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_older_than_the_dedup_window_gets_the_recorded_answer_and_stores_nothing() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    join(&mut c, "lobby").await;
    let body = r#"{"event":"order.paid","data":{"total":10}}"#;
    let first = json!({"id": "evt_answered_long_ago", "seq": 4242});
    let repo = ingest::repository::Repository::connect(app.database_url(), 1).unwrap();
    let hash = ingest::domain::secrets::request_hash(body.as_bytes());
    repo.claim_key(&t.id, "room:lobby", "order-old", &hash)
        .await
        .unwrap();
    repo.complete_key(&t.id, "room:lobby", "order-old", &first)
        .await
        .unwrap();

    let post = |body: &'static str| {
        app.http
            .post(format!(
                "{}/v1/tenants/{}/rooms/lobby/events",
                app.ingest, t.id
            ))
            .bearer_auth(&t.api_key)
            .header("Idempotency-Key", "order-old")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let again = post(body).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    c.assert_silent(Duration::from_millis(500)).await;

    let other = post(r#"{"event":"order.paid","data":{"total":11}}"#)
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    c.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_http_input_gets_a_problem_naming_the_field() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let url = format!("{}/v1/tenants/{}/rooms/lobby/events", app.ingest, t.id);

    let res = app
        .http
        .post(&url)
        .bearer_auth(&t.api_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let missing: Value = app
        .post_event(&t, "lobby", json!({"data": 1}))
        .await
        .json()
        .await
        .unwrap();
    // JSON that breaks a rule is 422, naming the field: a missing one too.
    assert_eq!(missing["status"], 422);
    assert_eq!(missing["field"], "event", "{missing}");

    let cases = [
        ("bad.room", json!({"event": "a.b"}), "room"),
        ("lobby", json!({"event": "Bad-Name"}), "event"),
        ("lobby", json!({"event": "a.b", "source": ""}), "source"),
        (
            "lobby",
            json!({"event": "a.b", "source": "has space"}),
            "source",
        ),
        ("lobby", json!({"event": "a.b", "colour": "red"}), "colour"),
        (
            "lobby",
            json!({"event": "a.b", "ephemeral": "yes"}),
            "ephemeral",
        ),
    ];
    for (room, body, field) in cases {
        let res = app.post_event(&t, room, body).await;
        assert_eq!(res.status(), 422, "{field}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["field"], field);
        assert!(p["rule"].as_str().is_some_and(|r| !r.is_empty()));
    }

    let res = app
        .http
        .post(format!("{}/v1/tenants/{}/events", app.ingest, t.id))
        .bearer_auth(&t.api_key)
        .json(&json!({"events": [{"room": "a", "event": "a.b"}, {"room": "a", "event": "9"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["field"], "events[1].event");

    let res = app
        .http
        .post(format!("{}/v1/tenants/{}/events", app.ingest, t.id))
        .bearer_auth(&t.api_key)
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);

    // No key, a wrong key, another tenant's key.
    let res = app
        .http
        .post(&url)
        .json(&json!({"event": "a.b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .post(&url)
        .bearer_auth("sk_nope")
        .json(&json!({"event": "a.b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let other = app.create_tenant().await;
    let res = app
        .http
        .post(&url)
        .bearer_auth(&other.api_key)
        .json(&json!({"event": "a.b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}
