//! Membership edges: joining a room again, a re-join that fails, and the
//! `prev` chain of a member with filters.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_test_support::NatsServer;

use crate::helpers::{Tenant, TestApp, join, spawn_app, spawn_app_with};

async fn post(app: &TestApp, t: &Tenant, room: &str, event: &str) -> u64 {
    let res = app.post_event(t, room, json!({"event": event})).await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn joining_a_room_again_announces_nobody_again() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let perms = json!({"team": ["read", "presence"]});
    let mut w = app.connect(&t, "watcher", perms.clone()).await;
    join(&mut w, "team").await;
    w.next_of_type("event").await; // its own presence.joined
    let mut u = app.connect(&t, "u1", perms).await;
    join(&mut u, "team").await;
    let e = w.next_of_type("event").await;
    assert_eq!(
        (e["event"].as_str(), e["data"]["sub"].as_str()),
        (Some("presence.joined"), Some("u1"))
    );
    // Again, with filters: a new membership for u, nothing new for others.
    u.send_json(json!({"op": "join", "room": "team", "types": ["task.*"], "id": "again"}))
        .await;
    let joined = u.next_of_type("joined").await;
    assert_eq!(joined["ref"], "again");
    w.assert_silent(Duration::from_millis(400)).await;
    // ...and the new filters hold.
    post(&app, &t, "team", "chat.x").await;
    let wanted = post(&app, &t, "team", "task.y").await;
    let ev = u.next_of_type("event").await;
    assert_eq!(ev["seq"], wanted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejoin_that_fails_takes_the_connection_out_of_presence() {
    let mut nats = NatsServer::start().await;
    let app = spawn_app_with(&nats.url, &[("SB_PRESENCE_REFRESH", "1s")]).await;
    let t = app.create_tenant().await;
    let perms = json!({"team": ["read", "presence"]});
    let mut w = app.connect(&t, "watcher", perms.clone()).await;
    let mut u = app.connect(&t, "u1", perms).await;
    join(&mut w, "team").await;
    join(&mut u, "team").await;

    // The broker goes away; u joins again, asking for events since a seq
    // the gateway does not hold (only JetStream could say), and that fails.
    // (A re-join without since needs no broker: the room keeps its floor.)
    nats.kill().await;
    u.send_json(json!({"op": "join", "room": "team", "since": 1, "id": "again"}))
        .await;
    // JetStream's requests time out while the broker is gone: allow them.
    let e = loop {
        let f = u
            .next_frame_within(Duration::from_secs(30))
            .await
            .expect("an answer to the re-join")
            .expect("the connection stays open");
        if f["ref"] == "again" {
            break f;
        }
    };
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{e}"
    );
    nats.restart().await;

    // Once NATS is back, u is in no room, so presence lists only the watcher.
    let mut listed = Value::Null;
    for attempt in 0..40 {
        w.send_json(json!({"op": "presence", "room": "team", "id": attempt}))
            .await;
        let f = loop {
            let f = w.next_frame().await;
            if f["ref"] == attempt {
                break f;
            }
        };
        if f["type"] == "presence" {
            listed = f["members"].clone();
            let subs: Vec<&str> = listed
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["sub"].as_str().unwrap())
                .collect();
            if subs == ["watcher"] {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("presence still lists the connection whose re-join failed: {listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_members_prev_chain_counts_only_what_it_receives() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut f = app.connect(&t, "filtered", json!({"work": ["read"]})).await;
    let mut all = app.connect(&t, "all", json!({"work": ["read"]})).await;
    f.send_json(json!({"op": "join", "room": "work", "types": ["task.*"], "id": 1}))
        .await;
    f.next_of_type("joined").await;
    join(&mut all, "work").await;

    let t1 = post(&app, &t, "work", "task.started").await;
    let c1 = post(&app, &t, "work", "chat.message").await;
    let t2 = post(&app, &t, "work", "task.done").await;
    let first = f.next_of_type("event").await;
    assert_eq!(first["seq"], t1);
    let second = f.next_of_type("event").await;
    assert_eq!(
        (second["seq"].as_u64(), second["prev"].as_u64()),
        (Some(t2), Some(t1)),
        "prev is the previous event that passed the filters"
    );
    // The unfiltered member sees the room's own chain.
    for (seq, prev) in [(t1, None), (c1, Some(t1)), (t2, Some(c1))] {
        let ev = all.next_of_type("event").await;
        assert_eq!(ev["seq"], seq);
        if let Some(p) = prev {
            assert_eq!(ev["prev"], p);
        }
    }

    // A replay from since chains from since, through the filter.
    let mut r = app.connect(&t, "replay", json!({"work": ["read"]})).await;
    r.send_json(json!({"op": "join", "room": "work", "types": ["task.*"], "since": t1, "id": 2}))
        .await;
    let joined = r.next_of_type("joined").await;
    assert_eq!(
        (joined["recovered"].as_bool(), joined["missed"].as_u64()),
        (Some(true), Some(1))
    );
    let ev = r.next_of_type("event").await;
    assert_eq!(
        (ev["seq"].as_u64(), ev["prev"].as_u64()),
        (Some(t2), Some(t1))
    );
    // ...and live events continue that chain.
    let c2 = post(&app, &t, "work", "chat.more").await;
    let t3 = post(&app, &t, "work", "task.again").await;
    assert!(c2 < t3);
    let ev = r.next_of_type("event").await;
    assert_eq!(
        (ev["seq"].as_u64(), ev["prev"].as_u64()),
        (Some(t3), Some(t2))
    );
    let ev = f.next_of_type("event").await;
    assert_eq!(
        (ev["seq"].as_u64(), ev["prev"].as_u64()),
        (Some(t3), Some(t2))
    );
}
