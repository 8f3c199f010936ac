//! The batch endpoint stores a request's events — pipelined, or with
//! `SB_BATCH_ATOMIC` all or none as one atomic JetStream batch — and every
//! event reaches its room with a seq and a `prev` of its own.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use switchboard_test_support::NatsServer;

use switchboard_test_support::nats_url;

use crate::helpers::{join, spawn_app_with};

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_stored_and_each_event_keeps_its_own_seq_and_prev() {
    for atomic in [false, true] {
        each_event_keeps_its_own_seq_and_prev(atomic).await;
    }
}

async fn each_event_keeps_its_own_seq_and_prev(atomic: bool) {
    let app = spawn_app_with(&nats_url(), &[("SB_BATCH_ATOMIC", &atomic.to_string())]).await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "u1", json!({"a": ["read"], "b": ["read"]}))
        .await;
    join(&mut c, "a").await;
    join(&mut c, "b").await;
    let rooms = ["a", "b", "a", "a", "b", "b", "a"];
    let events: Vec<Value> = rooms
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"room": r, "event": "batch.item", "data": i}))
        .collect();
    let answer = app.post_batch(&t, events).await;
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), rooms.len());
    // Rooms are delivered each in its own order.
    let mut got = std::collections::HashMap::new();
    for _ in 0..rooms.len() {
        let ev = c.next_of_type("event").await;
        got.insert(ev["data"].as_u64().unwrap() as usize, ev);
    }
    let mut last = std::collections::HashMap::new();
    for (i, room) in rooms.iter().enumerate() {
        let ev = &got[&i];
        assert_eq!(ev["room"], *room);
        assert_eq!(ev["id"], items[i]["id"]);
        assert_eq!(ev["seq"], items[i]["seq"], "item {i}");
        let prev = last.insert(*room, ev["seq"].as_u64().unwrap()).unwrap_or(0);
        assert_eq!(
            ev["prev"], prev,
            "item {i}: prev is the room's previous event"
        );
    }
    let seqs: Vec<u64> = items.iter().map(|i| i["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "in request order: {seqs:?}"
    );
    if atomic {
        // One atomic batch: consecutive in the stream.
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_the_server_refuses_stores_none_of_its_events() {
    let nats =
        NatsServer::start_with_config(Some("jetstream { limits { batch { max_msgs: 3 } } }")).await;
    let app = spawn_app_with(&nats.url, &[("SB_BATCH_ATOMIC", "true")]).await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"a": ["read"]})).await;
    join(&mut c, "a").await;
    let batch = |n: usize| {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"room": "a", "event": "batch.item", "data": i}))
            .collect();
        app.http
            .post(format!("{}/v1/tenants/{}/events", app.ingest, t.id))
            .bearer_auth(&t.api_key)
            .json(&json!({ "events": events }))
            .send()
    };
    let refused = batch(4).await.unwrap();
    assert_eq!(refused.status(), 503);
    c.assert_silent(Duration::from_millis(500)).await;
    let stored = batch(3).await.unwrap();
    assert_eq!(stored.status(), 201);
    for i in 0..3 {
        assert_eq!(c.next_of_type("event").await["data"], i);
    }
    // Nothing of the refused batch is in the stream either.
    let mut late = app.connect(&t, "u2", json!({"a": ["read"]})).await;
    late.send_json(json!({"op": "join", "room": "a", "since": 0}))
        .await;
    let joined = late.next_of_type("joined").await;
    assert_eq!(joined["missed"], 3, "{joined}");
}

/// A keyed batch whose record is gone (a PostgreSQL crash can lose one
/// committed in its last moments) is retried inside the dedup window:
/// JetStream refuses the batch whole, and the answer is rebuilt from the
/// first attempt's sequences.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_batch_retried_after_its_record_was_lost_gets_the_first_answer_and_stores_nothing()
{
    for atomic in [false, true] {
        keyed_batch_retried_after_its_record_was_lost(atomic).await;
    }
}

async fn keyed_batch_retried_after_its_record_was_lost(atomic: bool) {
    let app = spawn_app_with(&nats_url(), &[("SB_BATCH_ATOMIC", &atomic.to_string())]).await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"a": ["read"]})).await;
    join(&mut c, "a").await;
    let send = || {
        app.http
            .post(format!("{}/v1/tenants/{}/events", app.ingest, t.id))
            .bearer_auth(&t.api_key)
            .header("Idempotency-Key", "nightly-1")
            .json(&json!({"events": [
                {"room": "a", "event": "x.y", "data": 1},
                {"room": "a", "event": "x.y", "data": 2}
            ]}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    c.next_of_type("event").await;
    c.next_of_type("event").await;
    let mut conn = AsyncPgConnection::establish(app.database_url())
        .await
        .unwrap();
    diesel::sql_query("DELETE FROM idempotency_keys")
        .execute(&mut conn)
        .await
        .unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        first,
        "atomic: {atomic}"
    );
    c.assert_silent(Duration::from_millis(500)).await;
}
