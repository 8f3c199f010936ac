//! The gateway as operators see it: `/readyz` tells the truth about the
//! tenant watch. (That a stopped gateway has stored every connection's
//! audit is checked on the real process, in room-gateway's own tests.)

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use switchboard_platform::nats::{Bus, StreamSettings};
use switchboard_test_support::NatsServer;

use crate::helpers::spawn_app_with;

async fn ready(http: &reqwest::Client, port: u16) -> (u16, Value) {
    let res = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn wait_ready(http: &reqwest::Client, port: u16, want: u16) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, body) = ready(http, port).await;
        if status == want {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {want}: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_says_not_ready_while_the_tenant_watch_is_down() {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(&nats.url, &[]).await;
    let http = reqwest::Client::new();
    wait_ready(&http, app.gateway_port, 200).await;

    // The tenants bucket goes away under the watch…
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.delete_stream("KV_SB_TENANTS").await.unwrap();
    let body = wait_ready(&http, app.gateway_port, 503).await;
    assert_ne!(body["checks"]["tenants"], "ok", "{body}");

    // …and comes back: the gateway watches it again and is ready.
    Bus::start(
        &nats.url,
        "test",
        &StreamSettings::from_source(&HashMap::new()).unwrap(),
    )
    .await
    .unwrap();
    wait_ready(&http, app.gateway_port, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_events_are_timed_hop_by_hop() {
    let app = spawn_app_with(
        &switchboard_test_support::nats_url(),
        &[("SB_HOP_SAMPLE", "1")],
    )
    .await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "u", serde_json::json!({"timed": ["read"]}))
        .await;
    crate::helpers::join(&mut c, "timed").await;
    let hops = || app.gateway_json(app.gateway_port, "/v1/stats/hops");
    hops().await; // forget earlier samples
    for i in 0..5 {
        let res = app
            .post_event(&t, "timed", serde_json::json!({"event": "t.x", "data": i}))
            .await;
        assert_eq!(res.status(), 201);
        c.next_of_type("event").await;
    }
    let hops = hops().await;
    assert!(hops["samples"].as_u64().unwrap() >= 5, "{hops}");
    for hop in [
        "http_to_stored",
        "stored_to_room",
        "http_to_room",
        "room_to_written",
        "written_per_member",
    ] {
        let h = &hops[hop];
        let (p50, p99) = (h["p50_us"].as_i64().unwrap(), h["p99_us"].as_i64().unwrap());
        assert!(0 <= p50 && p50 <= p99 && p99 < 10_000_000, "{hop}: {h}");
    }
    let again = app.gateway_json(app.gateway_port, "/v1/stats/hops").await;
    assert_eq!(
        again["samples"], 0,
        "each read takes the samples since the last"
    );
}
