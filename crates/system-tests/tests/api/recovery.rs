//! `recovered` tells the truth of the stream, gaps are healed or end in a
//! `reconnect` (never silently skipped), and a room that missed events while
//! its gateway was cut off from NATS gets them once it is back.
//!
//! Tests that change stream limits or restart the broker run on a NATS of
//! their own ([`NatsServer`]).

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_platform::nats::{Bus, StreamSettings, publish_room_event};
use switchboard_proto::{RoomName, TenantId, pb};
use switchboard_test_support::NatsServer;

use crate::helpers::{Tenant, TestApp, join, spawn_app, spawn_app_with};

async fn post(app: &TestApp, t: &Tenant, room: &str, data: Value) -> u64 {
    let res = app
        .post_event(t, room, json!({"event": "r.item", "data": data}))
        .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn joined_says_recovered_only_when_since_was_given_and_is_an_event_of_the_room() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let latest = post(&app, &t, "log", json!(1)).await;
    let mut c = app.connect(&t, "u", json!({"log": ["read"]})).await;

    // Without since: neither recovered nor missed.
    let joined = join(&mut c, "log").await;
    assert_eq!(joined["seq"], latest);
    assert!(
        joined.get("recovered").is_none() && joined.get("missed").is_none(),
        "{joined}"
    );

    // A since beyond the room's latest is no event of this room.
    c.send_json(json!({"op": "join", "room": "log", "since": latest + 1_000, "id": 2}))
        .await;
    let joined = c.next_of_type("joined").await;
    assert_eq!(
        (joined["recovered"].as_bool(), joined["missed"].as_u64()),
        (Some(false), Some(0)),
        "{joined}"
    );

    // The room's latest itself: recovered, nothing missed.
    c.send_json(json!({"op": "join", "room": "log", "since": latest, "id": 3}))
        .await;
    let joined = c.next_of_type("joined").await;
    assert_eq!(
        (joined["recovered"].as_bool(), joined["missed"].as_u64()),
        (Some(true), Some(0))
    );
    c.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_that_aged_out_make_a_since_unrecoverable() {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(
        &nats.url,
        &[("SB_ROOM_HISTORY_AGE", "2s"), ("SB_DEDUP_WINDOW", "1s")],
    )
    .await;
    let t = app.create_tenant().await;
    let old = post(&app, &t, "aging", json!("old")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    post(&app, &t, "aging", json!("new")).await;
    let mut c = app.connect(&t, "u", json!({"aging": ["read"]})).await;
    for since in [0, old] {
        c.send_json(json!({"op": "join", "room": "aging", "since": since}))
            .await;
        let joined = c.next_of_type("joined").await;
        assert_eq!(
            (joined["recovered"].as_bool(), joined["missed"].as_u64()),
            (Some(false), Some(0)),
            "since {since}: the stream no longer holds all of it: {joined}"
        );
    }
    c.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_the_stream_cannot_fill_ends_in_reconnect_never_in_a_silent_skip() {
    let nats = NatsServer::start().await;
    // The stream keeps 3 events per room, and the gateway's live queue holds
    // one message: a burst loses live events whose stored copies are gone
    // by the time the gap is seen.
    let app = spawn_app_with(
        &nats.url,
        &[("SB_ROOM_HISTORY", "3"), ("SB_LIVE_QUEUE", "1")],
    )
    .await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u", json!({"burst": ["read"]})).await;
    let joined = join(&mut c, "burst").await;
    let events: Vec<Value> = (0..300)
        .map(|i| json!({"room": "burst", "event": "b.n", "data": i}))
        .collect();
    app.post_batch(&t, events).await;
    let mut held = joined["seq"].as_u64().unwrap();
    let mut next = 0;
    loop {
        match c.next_frame_within(Duration::from_secs(10)).await {
            Some(Ok(f)) if f["type"] == "event" => {
                assert_eq!(f["data"], next, "an event was skipped: {f}");
                assert_eq!(f["prev"], held);
                held = f["seq"].as_u64().unwrap();
                next += 1;
                if next == 300 {
                    break; // nothing was lost
                }
            }
            Some(Ok(f)) if f["type"] == "reconnect" => {
                assert_eq!(c.closed_with().await, Some(1012));
                break;
            }
            other => panic!("expected the next event or reconnect, got {other:?}"),
        }
    }
}

/// A raw JetStream publish of a room event, as ingest would make it.
async fn store_directly(url: &str, tenant: &str, room: &str, i: u32) {
    let bus = Bus::start(
        url,
        "test-publisher",
        &StreamSettings::from_source(&std::collections::HashMap::new()).unwrap(),
    )
    .await
    .unwrap();
    let (t, r) = (
        TenantId::parse(tenant).unwrap(),
        RoomName::parse(room).unwrap(),
    );
    let ev = pb::RoomEvent {
        id: format!(
            "evt_direct_{i}_{}",
            switchboard_test_support::random_suffix()
        ),
        tenant: tenant.into(),
        room: room.into(),
        event: "r.item".into(),
        data: i.to_string().into_bytes(),
        source: "test".into(),
        ts_unix_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    publish_room_event(&bus.jetstream, &t, &r, &ev)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_room_gets_what_was_stored_while_its_gateway_was_cut_off_from_nats() {
    let mut nats = NatsServer::start().await;
    let app = spawn_app_with(&nats.url, &[]).await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u", json!({"quiet": ["read"]})).await;
    let joined = join(&mut c, "quiet").await;

    // NATS goes away long enough for the gateway's reconnects to back off
    // (to seconds apart), comes back, and events are stored before the
    // gateway is back: core NATS gives them to nobody.
    nats.kill().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    nats.restart().await;
    for i in 0..3 {
        store_directly(&nats.url, &t.id, "quiet", i).await;
    }
    let mut prev = joined["seq"].as_u64().unwrap();
    for i in 0..3 {
        let ev = c.next_of_type("event").await;
        assert_eq!(ev["data"], i);
        assert_eq!(ev["prev"], prev);
        prev = ev["seq"].as_u64().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_healed_after_a_loss_honour_echo_false() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut app = app;
    let port = app.spawn_gateway_with(&[("SB_LIVE_QUEUE", "1")]).await;
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let tok = t.token("alice", json!({"mix": ["read", "publish"]}));
    let mut a = switchboard_test_support::WsClient::connect(&url, &tok)
        .await
        .unwrap();
    a.next_of_type("welcome").await;
    join(&mut a, "mix").await;
    // A burst from a backend overflows the live queue while Alice publishes
    // without echo: some of her events are lost live and healed.
    let burst = {
        let (http, ingest, id, key) = (
            app.http.clone(),
            app.ingest.clone(),
            t.id.clone(),
            t.api_key.clone(),
        );
        tokio::spawn(async move {
            for round in 0..4 {
                let events: Vec<Value> = (0..250)
                    .map(|i| json!({"room": "mix", "event": "b.n", "data": round * 250 + i}))
                    .collect();
                let res = http
                    .post(format!("{ingest}/v1/tenants/{id}/events"))
                    .bearer_auth(&key)
                    .json(&json!({"events": events}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };
    let mut mine = std::collections::HashSet::new();
    let mut frames = Vec::new();
    for i in 0..40 {
        a.send_json(
            json!({"op": "publish", "room": "mix", "event": "client.n", "data": i,
            "echo": false, "id": i}),
        )
        .await;
        loop {
            let f = a.next_frame().await;
            if f["type"] == "ack" && f["ref"] == i {
                mine.insert(f["id"].as_str().unwrap().to_owned());
                frames.push(f);
                break;
            }
            frames.push(f);
        }
    }
    burst.await.unwrap();
    while let Some(Ok(f)) = a.next_frame_within(Duration::from_millis(500)).await {
        frames.push(f);
    }
    for f in &frames {
        if f["type"] == "event" {
            assert!(
                !mine.contains(f["id"].as_str().unwrap()),
                "alice got her own event back: {f}"
            );
        }
    }
    let stats = app.gateway_json(port, "/v1/stats").await;
    assert!(stats["gaps_healed"].as_u64().unwrap() >= 1, "{stats}");
}
