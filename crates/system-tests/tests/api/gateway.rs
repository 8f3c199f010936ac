//! The whole protocol on real gateways: recovery with `since`, backpressure,
//! token lifecycle, rate limits, client publish/send, presence, state.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_platform::shutdown::{self, ShutdownTrigger};
use switchboard_proto::token;
use switchboard_test_support::{WsClient, nats_url};

use crate::helpers::{Tenant, TestApp, join, spawn_app};

/// A gateway with extra settings; stops when the trigger drops.
async fn gateway_with(vars: &[(&str, &str)]) -> (u16, ShutdownTrigger) {
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("SB_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("SB_NATS_URL".into(), nats_url());
    let gw = room_gateway::Application::build(room_gateway::Settings::from_source(&env).unwrap())
        .await
        .unwrap();
    let port = gw.port();
    let (stop, s) = shutdown::channel();
    tokio::spawn(gw.run_until_stopped(s));
    (port, stop)
}

async fn connect_to(port: u16, token: &str) -> WsClient {
    let mut c = WsClient::connect(&format!("ws://127.0.0.1:{port}/v1/ws"), token)
        .await
        .unwrap();
    assert_eq!(c.next_frame().await["type"], "welcome");
    c
}

/// A gateway's `GET /v1/stats`.
async fn gateway_stats(app: &TestApp, port: u16) -> Value {
    app.gateway_json(port, "/v1/stats").await
}

async fn post(app: &TestApp, t: &Tenant, room: &str, event: &str, data: Value) -> Value {
    let res = app
        .post_event(t, room, json!({"event": event, "data": data}))
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_reconnecting_elsewhere_with_since_gets_exactly_the_missed_events_then_live() {
    let mut app = spawn_app().await;
    let t = app.create_tenant().await;
    let other_gateway = app.spawn_gateway().await;
    let rooms = json!({"feed": ["read"]});

    let mut c = app.connect(&t, "u1", rooms.clone()).await;
    join(&mut c, "feed").await;
    let e1 = post(&app, &t, "feed", "feed.item", json!(1)).await;
    let e2 = post(&app, &t, "feed", "feed.item", json!(2)).await;
    assert_eq!(c.next_of_type("event").await["id"], e1["id"]);
    let last = c.next_of_type("event").await;
    assert_eq!(last["id"], e2["id"]);
    drop(c);

    // Other rooms' events interleave in the stream; they must not show.
    post(&app, &t, "elsewhere", "x.y", json!(0)).await;
    let missed: Vec<Value> = [
        post(&app, &t, "feed", "feed.item", json!(3)).await,
        post(&app, &t, "elsewhere", "x.y", json!(0)).await,
        post(&app, &t, "feed", "feed.item", json!(4)).await,
        post(&app, &t, "feed", "feed.item", json!(5)).await,
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| *i != 1)
    .map(|(_, v)| v)
    .collect();

    let mut c = connect_to(other_gateway, &t.token("u1", rooms)).await;
    c.send_json(json!({"op": "join", "room": "feed", "since": last["seq"], "id": "j"}))
        .await;
    let joined = c.next_frame().await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["recovered"], true);
    assert_eq!(joined["missed"], 3);
    assert_eq!(joined["seq"], missed[2]["seq"]);
    let mut prev = last["seq"].clone();
    for m in &missed {
        let ev = c.next_frame().await;
        assert_eq!(ev["type"], "event");
        assert_eq!(ev["id"], m["id"]);
        assert_eq!(ev["prev"], prev, "prev chains across the seam");
        prev = ev["seq"].clone();
    }
    let live = post(&app, &t, "feed", "feed.item", json!(6)).await;
    let ev = c.next_frame().await;
    assert_eq!(ev["id"], live["id"]);
    assert_eq!(ev["prev"], prev);
    c.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_since_the_stream_cannot_vouch_for_is_not_recovered_and_nothing_is_invented() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let foreign = post(&app, &t, "a", "x.y", json!(1)).await;
    post(&app, &t, "b", "x.y", json!(2)).await;
    let mut c = app.connect(&t, "u1", json!({"b": ["read"]})).await;
    c.send_json(json!({"op": "join", "room": "b", "since": foreign["seq"]}))
        .await;
    let joined = c.next_frame().await;
    assert_eq!(joined["recovered"], false);
    assert_eq!(joined["missed"], 0);
    c.assert_silent(Duration::from_millis(300)).await;

    // since 0 on a short room: everything, recovered.
    let mut d = app.connect(&t, "u2", json!({"b": ["read"]})).await;
    d.send_json(json!({"op": "join", "room": "b", "since": 0}))
        .await;
    let joined = d.next_frame().await;
    assert_eq!(
        (joined["recovered"].as_bool(), joined["missed"].as_u64()),
        (Some(true), Some(1))
    );
    let ev = d.next_frame().await;
    assert_eq!(
        (ev["data"].as_i64(), ev["prev"].as_u64()),
        (Some(2), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_closed_with_4008_while_a_fast_one_gets_everything() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let (port, _stop) = gateway_with(&[("SB_OUTBOUND_QUEUE", "300")]).await;
    let tok = t.token("u", json!({"firehose": ["read"]}));
    let mut fast = connect_to(port, &tok).await;
    let mut slow = connect_to(port, &tok).await;
    join(&mut fast, "firehose").await;
    join(&mut slow, "firehose").await;

    // 24 MB of events: more than loopback socket buffers and the 300-frame
    // queue can hold for a client that never reads, in bursts of 250 that a
    // reading client keeps up with.
    let pad = "x".repeat(8 * 1024);
    let total = 3000;
    let reader = tokio::spawn(async move {
        let mut prev = None;
        for i in 0..total {
            let ev = fast.next_of_type("event").await;
            assert_eq!(ev["data"]["i"], i);
            if let Some(p) = prev {
                assert_eq!(ev["prev"], p);
            }
            prev = Some(ev["seq"].clone());
        }
    });
    for chunk in 0..(total / 250) {
        let events: Vec<Value> = (0..250)
            .map(|i| json!({"room": "firehose", "event": "load.item", "data": {"i": chunk * 250 + i, "pad": pad}}))
            .collect();
        app.post_batch(&t, events).await;
    }
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the fast client is not held back")
        .unwrap();
    assert_eq!(slow.closed_with().await, Some(4008));
    let stats = gateway_stats(&app, port).await;
    assert!(
        stats["slow_consumer_closes"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_keeps_the_connection_and_drops_rooms_the_new_token_does_not_grant() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "u1", json!({"a": ["read"], "b": ["read"]}))
        .await;
    join(&mut c, "a").await;
    join(&mut c, "b").await;
    let narrower = t.token("u1", json!({"a": ["read"]}));
    c.send_json(json!({"op": "refresh", "token": narrower, "id": "r"}))
        .await;
    let left = c.next_frame().await;
    assert_eq!(
        (left["type"].as_str(), left["room"].as_str()),
        (Some("left"), Some("b"))
    );
    let refreshed = c.next_frame().await;
    assert_eq!(refreshed["type"], "refreshed");
    assert_eq!(refreshed["ref"], "r");
    assert!(refreshed["token_exp"].as_i64().is_some());

    post(&app, &t, "b", "x.y", json!("not for you")).await;
    let a = post(&app, &t, "a", "x.y", json!("yours")).await;
    assert_eq!(c.next_of_type("event").await["id"], a["id"]);

    // Another sub's token is refused, and so is a bad one: 4001.
    c.send_json(json!({"op": "refresh", "token": t.token("u2", json!({}))}))
        .await;
    assert_eq!(c.next_frame().await["code"], "bad_request");
    assert_eq!(c.closed_with().await, Some(4001));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_token_is_warned_then_closed_with_4001() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let short = token::sign(&t.claims("u1", json!({}), 2), t.signing_secret.as_bytes());
    let mut c = WsClient::connect(&app.ws_url(), &short).await.unwrap();
    assert_eq!(c.next_frame().await["type"], "welcome");
    let warn = c.next_frame().await;
    assert_eq!(warn["type"], "token_expiring");
    assert_eq!(c.closed_with().await, Some(4001));
}

#[tokio::test(flavor = "multi_thread")]
async fn flooding_is_rate_limited_then_closed_with_4029() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({})).await;
    for i in 0..400 {
        if c.send_raw(switchboard_test_support::tungstenite::Message::text(
            json!({"op": "ping", "id": i}).to_string(),
        ))
        .await
        .is_err()
        {
            break;
        }
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        match c.next_frame_within(Duration::from_secs(10)).await {
            Some(Ok(f)) if f["type"] == "pong" => pongs += 1,
            Some(Ok(f)) if f["code"] == "rate_limited" => limited += 1,
            Some(Ok(f)) => panic!("unexpected {f}"),
            Some(Err(close)) => break close.map(|c| u16::from(c.code)),
            None => panic!("not closed"),
        }
    };
    assert!(
        (100..=110).contains(&pongs),
        "burst of twice 50/s answered: {pongs}"
    );
    assert!(limited >= 1);
    assert_eq!(code, Some(4029));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_publish_is_stored_acked_and_echoed_unless_asked_not_to() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut a = app
        .connect(&t, "alice", json!({"doc:1": ["read", "publish"]}))
        .await;
    let mut b = app.connect(&t, "bob", json!({"doc:1": ["read"]})).await;
    join(&mut a, "doc:1").await;
    join(&mut b, "doc:1").await;

    a.send_json(json!({"op": "publish", "room": "doc:1", "event": "client.edit", "data": {"x": 1}, "id": 1})).await;
    let ack = a.next_of_type("ack").await;
    assert_eq!(ack["ref"], 1);
    let seq = ack["seq"].as_u64().unwrap();
    let mine = a.next_of_type("event").await;
    assert_eq!(
        (mine["seq"].as_u64(), mine["source"].as_str()),
        (Some(seq), Some("alice"))
    );
    let theirs = b.next_of_type("event").await;
    assert_eq!(theirs["id"], ack["id"]);
    assert_eq!(theirs["data"], json!({"x": 1}));

    a.send_json(json!({"op": "publish", "room": "doc:1", "event": "client.edit", "data": 2, "echo": false, "key": "k1", "id": 2})).await;
    let ack2 = a.next_of_type("ack").await;
    let again = {
        a.send_json(json!({"op": "publish", "room": "doc:1", "event": "client.edit", "data": 2, "echo": false, "key": "k1", "id": 3})).await;
        a.next_of_type("ack").await
    };
    assert_eq!(ack2["seq"], again["seq"], "the same key stores once");
    assert_eq!(b.next_of_type("event").await["seq"], ack2["seq"]);
    a.assert_silent(Duration::from_millis(300)).await;
    b.assert_silent(Duration::from_millis(300)).await;

    a.send_json(json!({"op": "publish", "room": "doc:1", "event": "client.cursor", "data": {"pos": 3}, "ephemeral": true, "id": 4})).await;
    let eack = a.next_of_type("ack").await;
    assert!(eack.get("seq").is_none());
    let eph = b.next_of_type("event").await;
    assert_eq!(eph["ephemeral"], true);
    assert!(eph.get("seq").is_none());

    a.send_json(json!({"op": "publish", "room": "doc:1", "event": "suggestion.created", "id": 5}))
        .await;
    let e = a.next_of_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("bad_request"), Some("event"))
    );
    b.send_json(json!({"op": "publish", "room": "doc:1", "event": "client.edit", "id": 6}))
        .await;
    assert_eq!(b.next_of_type("error").await["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_events_are_coalesced_per_interval() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut a = app
        .connect(&t, "alice", json!({"doc": ["read", "publish"]}))
        .await;
    let mut b = app.connect(&t, "bob", json!({"doc": ["read"]})).await;
    join(&mut a, "doc").await;
    join(&mut b, "doc").await;
    for i in 0..10 {
        a.send_json(json!({"op": "publish", "room": "doc", "event": "client.typing", "data": i, "ephemeral": true})).await;
    }
    let first = b.next_of_type("event").await;
    assert_eq!(first["data"], 0);
    let last = b.next_of_type("event").await;
    assert_eq!(
        last["data"], 9,
        "the latest waiting one is sent at the end of the interval"
    );
    b.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_is_stored_on_the_inbox_and_acked() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(
            &t,
            "u1",
            json!({"conversation:9": ["read", "send"], "other": ["read"]}),
        )
        .await;
    c.send_json(json!({"op": "send", "room": "conversation:9", "event": "chat.query", "data": {"q": "revenue?"}, "id": 1})).await;
    let ack = c.next_of_type("ack").await;
    assert_eq!(ack["ref"], 1);
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("SB_INBOX").await.unwrap();
    let msg = stream
        .get_last_raw_message_by_subject(&format!("sb.in.{}.chat.query", t.id))
        .await
        .unwrap();
    let cmd =
        <switchboard_proto::pb::ClientCommand as prost::Message>::decode(msg.payload).unwrap();
    assert_eq!(
        (cmd.sub.as_str(), cmd.room.as_str(), cmd.id.as_str()),
        ("u1", "conversation:9", ack["id"].as_str().unwrap())
    );

    c.send_json(json!({"op": "send", "room": "other", "event": "chat.query", "id": 2}))
        .await;
    assert_eq!(c.next_of_type("error").await["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_counts_each_sub_once_and_announces_joins_and_leaves() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let watcher_rooms = json!({"team": ["read", "presence"]});
    let mut w = app.connect(&t, "watcher", watcher_rooms).await;
    let mut blind = app.connect(&t, "blind", json!({"team": ["read"]})).await;
    join(&mut w, "team").await;
    join(&mut blind, "team").await;
    for sub in ["watcher", "blind"] {
        let e = w.next_of_type("event").await;
        assert_eq!(
            (e["event"].as_str(), e["data"]["sub"].as_str()),
            (Some("presence.joined"), Some(sub))
        );
    }

    let claims = |sub: &str| {
        let mut c = t.claims(sub, json!({"team": ["read"]}), 3600);
        c.info = Some(
            json!({"name": sub.to_uppercase()})
                .as_object()
                .unwrap()
                .clone(),
        );
        token::sign(&c, t.signing_secret.as_bytes())
    };
    let mut u1a = WsClient::connect(&app.ws_url(), &claims("u1"))
        .await
        .unwrap();
    let mut u1b = WsClient::connect(&app.ws_url(), &claims("u1"))
        .await
        .unwrap();
    for c in [&mut u1a, &mut u1b] {
        c.next_of_type("welcome").await;
        join(c, "team").await;
    }
    let joined = w.next_of_type("event").await;
    assert_eq!(
        (joined["event"].as_str(), joined["data"]["sub"].as_str()),
        (Some("presence.joined"), Some("u1"))
    );
    assert_eq!(joined["data"]["info"]["name"], "U1");
    w.assert_silent(Duration::from_millis(300)).await;

    w.send_json(json!({"op": "presence", "room": "team", "id": "p"}))
        .await;
    let p = w.next_of_type("presence").await;
    assert_eq!(p["ref"], "p");
    let members = p["members"].as_array().unwrap();
    let u1 = members.iter().find(|m| m["sub"] == "u1").unwrap();
    assert_eq!(u1["conns"], 2);
    assert_eq!(u1["info"]["name"], "U1");
    assert_eq!(members.len(), 3, "{p}");

    drop(u1a);
    w.assert_silent(Duration::from_millis(300)).await;
    u1b.send_json(json!({"op": "leave", "room": "team"})).await;
    let left = w.next_of_type("event").await;
    assert_eq!(
        (left["event"].as_str(), left["data"]["sub"].as_str()),
        (Some("presence.left"), Some("u1"))
    );

    blind
        .send_json(json!({"op": "presence", "room": "team"}))
        .await;
    assert_eq!(blind.next_of_type("error").await["code"], "forbidden");
    blind.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_counts_a_sub_once_across_gateways() {
    let mut app = spawn_app().await;
    let t = app.create_tenant().await;
    let b = app.spawn_gateway().await;
    let watch = json!({"team": ["read", "presence"]});
    let member = json!({"team": ["read"]});
    let joined_or_left = |e: &Value| {
        (
            e["event"].as_str().unwrap_or_default().to_owned(),
            e["data"]["sub"].as_str().unwrap_or_default().to_owned(),
        )
    };

    // u1 is in the room on gateway B before gateway A has anyone there: A
    // learns of it by reading the bucket when its first member joins.
    let mut u1_b = connect_to(b, &t.token("u1", member.clone())).await;
    join(&mut u1_b, "team").await;
    let mut w = app.connect(&t, "watcher", watch.clone()).await;
    join(&mut w, "team").await;
    let e = w.next_of_type("event").await;
    assert_eq!(
        joined_or_left(&e),
        ("presence.joined".into(), "watcher".into())
    );
    let mut u1_a = app.connect(&t, "u1", member.clone()).await;
    join(&mut u1_a, "team").await;
    w.assert_silent(Duration::from_millis(300)).await;

    // u2 arrives on B after A's read: A hears of it live.
    let mut u2_b = connect_to(b, &t.token("u2", member.clone())).await;
    join(&mut u2_b, "team").await;
    let e = w.next_of_type("event").await;
    assert_eq!(joined_or_left(&e), ("presence.joined".into(), "u2".into()));
    let mut u2_a = app.connect(&t, "u2", member.clone()).await;
    join(&mut u2_a, "team").await;
    w.assert_silent(Duration::from_millis(300)).await;

    // Either gateway lists every connection.
    let mut w_b = connect_to(b, &t.token("watcher", watch.clone())).await;
    join(&mut w_b, "team").await;
    for c in [&mut w, &mut w_b] {
        c.send_json(json!({"op": "presence", "room": "team", "id": "p"}))
            .await;
        let p = c.next_of_type("presence").await;
        let conns: Vec<(String, u64)> = p["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["sub"].as_str().unwrap().to_owned(),
                    m["conns"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            conns,
            [("u1".into(), 2), ("u2".into(), 2), ("watcher".into(), 2)],
            "{p}"
        );
    }

    // Leaving one gateway while still on the other is not leaving.
    u1_a.send_json(json!({"op": "leave", "room": "team"})).await;
    u2_b.send_json(json!({"op": "leave", "room": "team"})).await;
    w.assert_silent(Duration::from_millis(300)).await;
    u1_b.send_json(json!({"op": "leave", "room": "team"})).await;
    let e = w.next_of_type("event").await;
    assert_eq!(joined_or_left(&e), ("presence.left".into(), "u1".into()));
    drop(u2_a);
    let e = w.next_of_type("event").await;
    assert_eq!(joined_or_left(&e), ("presence.left".into(), "u2".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn joiners_get_the_rooms_state_right_after_joined() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("SB_ROOM_STATE").await.unwrap();
    let state = switchboard_proto::room_state::RoomState {
        seq: 41,
        data: json!({"phase": "review"}),
        updated_at_ms: 0,
    };
    kv.put(
        format!("{}.board", t.id),
        serde_json::to_vec(&state).unwrap().into(),
    )
    .await
    .unwrap();
    let mut c = app.connect(&t, "u1", json!({"board": ["read"]})).await;
    join(&mut c, "board").await;
    let s = c.next_frame().await;
    assert_eq!(s["type"], "state");
    assert_eq!(
        (s["room"].as_str(), s["seq"].as_u64()),
        (Some("board"), Some(41))
    );
    assert_eq!(s["data"], json!({"phase": "review"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_changed_by_the_operator_apply_to_connections_and_rooms_at_once() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let res = app
        .http
        .patch(format!("{}/v1/admin/tenants/{}", app.ingest, t.id))
        .bearer_auth(&app.admin_token)
        .json(&json!({"limits": {"connections": 1, "rooms_per_connection": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tok = t.token("u1", json!({"*": ["read"]}));
    // The gateway learns the change through KV SB_TENANTS within a second.
    let mut refused = None;
    let mut first = None;
    for _ in 0..100 {
        // Connections of earlier rounds close asynchronously and may still
        // hold the one slot: then even the first is refused; try again.
        let Ok(a) = WsClient::connect(&app.ws_url(), &tok).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match WsClient::connect(&app.ws_url(), &tok).await {
            Err(r) => {
                refused = Some(r);
                first = Some(a);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let refused = refused.expect("a second connection is refused");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["code"], "rate_limited");
    let mut c = first.unwrap();
    assert_eq!(c.next_frame().await["type"], "welcome");
    join(&mut c, "one").await;
    c.send_json(json!({"op": "join", "room": "two"})).await;
    assert_eq!(c.next_frame().await["code"], "too_many_rooms");
}

#[tokio::test(flavor = "multi_thread")]
async fn live_events_lost_on_core_nats_are_healed_from_jetstream_before_delivery() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    // A live queue of one message: a burst overflows it and the NATS client
    // drops live events, as a slow gateway would.
    let (port, _stop) = gateway_with(&[("SB_LIVE_QUEUE", "1")]).await;
    let mut c = connect_to(port, &t.token("u", json!({"burst": ["read"]}))).await;
    join(&mut c, "burst").await;
    let total = 600;
    for chunk in 0..3 {
        let events: Vec<Value> = (0..total / 3)
            .map(|i| json!({"room": "burst", "event": "b.n", "data": chunk * (total / 3) + i}))
            .collect();
        app.post_batch(&t, events).await;
    }
    let mut prev = 0;
    for i in 0..total {
        let ev = c.next_of_type("event").await;
        assert_eq!(ev["data"], i, "every event, in order");
        assert_eq!(ev["prev"], prev, "no gap in the chain");
        prev = ev["seq"].as_u64().unwrap();
    }
    c.assert_silent(Duration::from_millis(300)).await;
    let stats = gateway_stats(&app, port).await;
    assert!(stats["gaps_healed"].as_u64().unwrap() >= 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_silent_for_two_heartbeats_is_closed() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let (port, _stop) = gateway_with(&[("SB_HEARTBEAT", "200ms")]).await;
    let mut quiet = connect_to(port, &t.token("u", json!({}))).await;
    let mut chatty = connect_to(port, &t.token("v", json!({}))).await;
    // `chatty` keeps answering (its reads answer pings); `quiet` reads
    // nothing, so it answers no ping.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
    while tokio::time::Instant::now() < deadline {
        chatty.send_json(json!({"op": "ping"})).await;
        assert_eq!(chatty.next_frame().await["type"], "pong");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(quiet.closed_with().await, Some(1000));
    chatty.send_json(json!({"op": "ping"})).await;
    assert_eq!(chatty.next_frame().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_bad_messages_in_a_row_close_with_4000() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u", json!({})).await;
    for _ in 0..20 {
        c.send_text("nonsense").await;
    }
    assert_eq!(c.closed_with().await, Some(4000));
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_audited_as_domain_events() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut req =
        switchboard_test_support::tungstenite::client::IntoClientRequest::into_client_request(
            app.ws_url(),
        )
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", t.token("auditee", json!({})))
            .parse()
            .unwrap(),
    );
    req.headers_mut()
        .insert("user-agent", "audit-test/1.0".parse().unwrap());
    let mut c = WsClient::connect_request(req).await.unwrap();
    assert_eq!(c.next_frame().await["type"], "welcome");
    drop(c);

    // The tenant's other connection (create_tenant's probe) is audited
    // too: find the auditee's close among them.
    let mut closed = None;
    for _ in 0..100 {
        let events =
            crate::helpers::domain_events(&app.nats, &format!("sb.dom.{}.connection.closed", t.id))
                .await;
        closed = events.into_iter().find(|ev| {
            serde_json::from_slice::<Value>(&ev.data).is_ok_and(|d| d["sub"] == "auditee")
        });
        if closed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ev = closed.expect("connection.closed stored");
    let data: Value = serde_json::from_slice(&ev.data).unwrap();
    assert_eq!(data["user_agent"], "audit-test/1.0");
    assert!(data["ip"].as_str().unwrap().starts_with("127.0.0.1"));
    assert!(data["duration_ms"].as_i64().unwrap() >= 0);
    let opened =
        crate::helpers::domain_events(&app.nats, &format!("sb.dom.{}.connection.opened", t.id))
            .await;
    assert!(opened.iter().any(|ev| {
        serde_json::from_slice::<Value>(&ev.data).is_ok_and(|d| d["sub"] == "auditee")
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_can_connect_the_moment_it_is_created() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let body: Value = app
            .http
            .post(format!("{}/v1/admin/tenants", app.ingest))
            .bearer_auth(&app.admin_token)
            .json(&json!({"name": "instant"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = Tenant {
            id: body["id"].as_str().unwrap().into(),
            api_key: body["api_key"].as_str().unwrap().into(),
            signing_secret: body["signing_secret"].as_str().unwrap().into(),
        };
        let mut c = WsClient::connect(&app.ws_url(), &t.token("u", json!({})))
            .await
            .expect("no wait for the gateway's watch");
        assert_eq!(c.next_frame().await["type"], "welcome");
    }
}
