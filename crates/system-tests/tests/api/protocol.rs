use serde_json::json;
use switchboard_test_support::tungstenite::Message;

use crate::helpers::{join, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_get_error_frames_and_the_connection_goes_on() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;

    c.send_text("{not json").await;
    let e = c.next_frame().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );

    c.send_text("[1,2]").await;
    assert_eq!(c.next_frame().await["code"], "bad_request");

    c.send_json(json!({"op": "dance", "id": "d1"})).await;
    let e = c.next_frame().await;
    assert_eq!(e["code"], "bad_request");
    assert_eq!(e["field"], "op");
    assert_eq!(e["ref"], "d1");
    assert!(e["message"].as_str().unwrap().contains("dance"));

    c.send_json(json!({"id": 1})).await;
    assert_eq!(c.next_frame().await["field"], "op");

    c.send_json(json!({"op": "join", "room": "has.dot", "id": 2}))
        .await;
    let e = c.next_frame().await;
    assert_eq!(e["code"], "bad_request");
    assert_eq!(e["field"], "room");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("^[A-Za-z0-9_:@=-]{1,128}$")
    );

    c.send_json(json!({"op": "join", "id": 3})).await;
    let e = c.next_frame().await;
    assert_eq!(e["field"], "room");
    assert_eq!(e["ref"], 3);

    c.send_json(json!({"op": "join", "room": "lobby", "types": ["Bad*"]}))
        .await;
    assert_eq!(c.next_frame().await["field"], "types");

    c.send_json(json!({"op": "leave", "room": "lobby", "id": 4}))
        .await;
    let e = c.next_frame().await;
    assert_eq!(e["code"], "not_joined");
    assert_eq!(e["ref"], 4);

    c.send_json(json!({"op": "ping", "id": "p"})).await;
    let pong = c.next_frame().await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["ref"], "p");
    assert!(pong["ts"].is_string());

    join(&mut c, "lobby").await;
    c.send_json(json!({"op": "leave", "room": "lobby", "id": 5}))
        .await;
    let left = c.next_frame().await;
    assert_eq!(
        (left["type"].as_str(), left["room"].as_str()),
        (Some("left"), Some("lobby"))
    );
    assert_eq!(left["ref"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_over_max_frame_bytes_closes_with_1009() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({})).await;
    let huge = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(70_000));
    let _ = c.send_raw(Message::text(huge)).await;
    assert_eq!(c.closed_with().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_limit_which_events_a_member_gets() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"tasks": ["read"]})).await;
    c.send_json(json!({"op": "join", "room": "tasks", "types": ["task.*"], "id": 1}))
        .await;
    assert_eq!(c.next_frame().await["type"], "joined");
    app.post_event(&t, "tasks", json!({"event": "chat.message"}))
        .await;
    let wanted: serde_json::Value = app
        .post_event(&t, "tasks", json!({"event": "task.progress"}))
        .await
        .json()
        .await
        .unwrap();
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["id"], wanted["id"]);

    c.send_json(json!({"op": "filter", "room": "tasks", "types": [], "id": 2}))
        .await;
    let ok = c.next_frame().await;
    assert_eq!(
        (ok["type"].as_str(), ok["ref"].as_i64()),
        (Some("ok"), Some(2))
    );
    let any: serde_json::Value = app
        .post_event(&t, "tasks", json!({"event": "chat.message"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c.next_of_type("event").await["id"], any["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_deliver_the_same_events_in_the_same_order() {
    let mut app = spawn_app().await;
    let t = app.create_tenant().await;
    let second = app.spawn_gateway().await;
    let mut a = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    let tok = t.token("u2", json!({"lobby": ["read"]}));
    let mut b = switchboard_test_support::WsClient::connect(
        &format!("ws://127.0.0.1:{second}/v1/ws"),
        &tok,
    )
    .await
    .unwrap();
    b.next_of_type("welcome").await;
    join(&mut a, "lobby").await;
    join(&mut b, "lobby").await;
    for i in 0..20 {
        app.post_event(&t, "lobby", json!({"event": "n.m", "data": i}))
            .await;
    }
    for c in [&mut a, &mut b] {
        let mut prev = 0;
        for i in 0..20 {
            let ev = c.next_of_type("event").await;
            assert_eq!(ev["data"], i);
            assert_eq!(ev["prev"], prev);
            prev = ev["seq"].as_u64().unwrap();
        }
    }
}

/// A message sent in fragments (RFC 6455 continuation frames) counts as one
/// message; fragments that add up to more than `max_frame_bytes` close 1009.
#[tokio::test(flavor = "multi_thread")]
async fn fragmented_messages_are_joined_and_bounded() {
    use switchboard_test_support::tungstenite::protocol::frame::Frame;
    use switchboard_test_support::tungstenite::protocol::frame::coding::{Data, OpCode};

    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    let fragment = |text: &str, op: Data, fin: bool| {
        Message::Frame(Frame::message(text.to_owned(), OpCode::Data(op), fin))
    };
    c.send_raw(fragment(r#"{"op":"join","#, Data::Text, false))
        .await
        .unwrap();
    c.send_raw(fragment(r#""room":"lobby","#, Data::Continue, false))
        .await
        .unwrap();
    c.send_raw(fragment(r#""id":7}"#, Data::Continue, true))
        .await
        .unwrap();
    let joined = c.next_frame().await;
    assert_eq!(
        (joined["type"].as_str(), joined["ref"].as_i64()),
        (Some("joined"), Some(7))
    );

    let part = "x".repeat(40_000);
    let _ = c.send_raw(fragment(&part, Data::Text, false)).await;
    let _ = c.send_raw(fragment(&part, Data::Continue, true)).await;
    assert_eq!(c.closed_with().await, Some(1009));
}
