use serde_json::json;
use switchboard_test_support::WsClient;

use crate::helpers::{join, spawn_app, spawn_gateway_with_stop};

async fn metric(http: &reqwest::Client, port: u16, name: &str) -> f64 {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_is_subscribed_while_it_has_members_and_dropped_after_the_last_leaves() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let port = app.gateway_port;
    let rooms = "switchboard_gateway_rooms ";
    let mut a = app.connect(&t, "a", json!({"lobby": ["read"]})).await;
    let mut b = app.connect(&t, "b", json!({"lobby": ["read"]})).await;
    join(&mut a, "lobby").await;
    join(&mut b, "lobby").await;
    assert_eq!(metric(&app.http, port, rooms).await, 1.0);
    a.send_json(json!({"op": "leave", "room": "lobby"})).await;
    assert_eq!(a.next_frame().await["type"], "left");
    assert_eq!(metric(&app.http, port, rooms).await, 1.0);
    drop(b);
    for _ in 0..100 {
        if metric(&app.http, port, rooms).await == 0.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the room stayed subscribed after its last member left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_gateway_sends_reconnect_and_closes_with_1012() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let (port, stop) = spawn_gateway_with_stop().await;
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let mut c = WsClient::connect(&url, &t.token("u1", json!({"lobby": ["read"]})))
        .await
        .unwrap();
    assert_eq!(c.next_frame().await["type"], "welcome");
    join(&mut c, "lobby").await;
    stop.fire();
    let reconnect = c.next_of_type("reconnect").await;
    let after = reconnect["after_ms"].as_u64().unwrap();
    assert!(after < 2000, "after_ms within SB_DRAIN_SECS: {after}");
    assert_eq!(c.closed_with().await, Some(1012));
}
