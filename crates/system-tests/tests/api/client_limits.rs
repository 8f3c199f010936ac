//! What a client may send: the message rate (refusals answer the message
//! they refuse; a changed limit reaches live connections), the size of
//! `data` (the same limit as ingest's), and `key`s (a retry is the same
//! message, or it is refused).

use std::time::Duration;

use serde_json::json;
use switchboard_test_support::tungstenite::Message;

use crate::helpers::{join, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_errors_answer_the_message_they_refuse() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({})).await;
    for i in 0..115 {
        c.send_raw(Message::text(json!({"op": "ping", "id": i}).to_string()))
            .await
            .unwrap();
    }
    let mut refused = Vec::new();
    let mut answered = 0;
    while answered < 115 {
        let f = c.next_frame().await;
        answered += 1;
        match f["type"].as_str() {
            Some("pong") => {}
            Some("error") => {
                assert_eq!(f["code"], "rate_limited");
                refused.push(f["ref"].as_i64().expect("the refused message's id as ref"));
            }
            _ => panic!("unexpected {f}"),
        }
    }
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|&i| i >= 100),
        "the burst of 100 passes: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_message_limit_reaches_a_connection_that_is_already_open() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({})).await;
    let res = app
        .http
        .patch(format!("{}/v1/admin/tenants/{}", app.ingest, t.id))
        .bearer_auth(&app.admin_token)
        .json(&json!({"limits": {"client_msgs_per_s": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Within a second, like every other limit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..6 {
        c.send_json(json!({"op": "ping", "id": i})).await;
    }
    let mut limited = 0;
    for _ in 0..6 {
        if c.next_frame().await["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(
        limited >= 3,
        "1/s with a burst of 2: {limited} of 6 refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_over_the_event_size_limit_is_refused_as_ingest_refuses_it() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "u1", json!({"doc": ["read", "publish", "send"]}))
        .await;
    join(&mut c, "doc").await;
    let big = "x".repeat(62_000);
    for op in ["publish", "send"] {
        c.send_json(json!({"op": op, "room": "doc", "event": "client.big", "data": big, "id": op}))
            .await;
        let e = c.next_of_type("error").await;
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str(), e["ref"].as_str()),
            (Some("bad_request"), Some("data"), Some(op)),
            "{e}"
        );
        assert!(e["message"].as_str().unwrap().contains("61440"), "{e}");
    }
    // Ingest draws the line in the same place.
    let res = app
        .post_event(&t, "doc", json!({"event": "x.big", "data": big}))
        .await;
    assert_eq!(res.status(), 422);
    c.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_reused_with_other_data_is_refused_naming_the_key() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "u1", json!({"doc": ["read", "publish", "send"]}))
        .await;
    join(&mut c, "doc").await;
    for op in ["publish", "send"] {
        let msg = |data: i64, id: &str| json!({"op": op, "room": "doc", "event": "client.edit", "data": {"v": data}, "key": "k1", "id": id});
        c.send_json(msg(1, "first")).await;
        let first = c.next_of_type("ack").await;
        c.send_json(msg(1, "retry")).await;
        let retry = c.next_of_type("ack").await;
        assert_eq!(
            retry["id"], first["id"],
            "{op}: a retry is the same message"
        );
        assert_eq!(retry["seq"], first["seq"]);
        c.send_json(msg(2, "other")).await;
        let e = c.next_of_type("error").await;
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str(), e["ref"].as_str()),
            (Some("bad_request"), Some("key"), Some("other")),
            "{op}: {e}"
        );
    }
}
