//! The gateway as a real process: killed with SIGKILL under traffic, its
//! clients reconnect to another gateway with `since` and lose nothing, and
//! its presence entries vanish within their lifetime; stopped with SIGTERM,
//! it has stored every connection's audit when it exits.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;

use serde_json::{Value, json};
use switchboard_platform::nats::{Bus, StreamSettings, publish_room_event};
use switchboard_platform::shutdown;
use switchboard_proto::tenant::{Limits, TenantConfig};
use switchboard_proto::token::{self, Claims};
use switchboard_proto::{RoomName, TenantId, pb};
use switchboard_test_support::{WsClient, nats_url, random_suffix};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token(tenant: &TenantId, secret: &str, sub: &str) -> String {
    let claims: Claims = serde_json::from_value(json!({
        "sub": sub, "tenant": tenant, "exp": chrono::Utc::now().timestamp() + 600,
        "rooms": {"live*": ["read", "presence"]},
    }))
    .unwrap();
    token::sign(&claims, secret.as_bytes())
}

async fn connect(port: u16, tok: &str) -> Option<WsClient> {
    let mut c = WsClient::connect(&format!("ws://127.0.0.1:{port}/v1/ws"), tok)
        .await
        .ok()?;
    c.next_of_type("welcome").await;
    Some(c)
}

/// The shared NATS, and a tenant of the test's own written to SB_TENANTS.
async fn bus_and_tenant(prefix: &str) -> (Bus, TenantId, String) {
    let env = std::collections::HashMap::<String, String>::new();
    let bus = Bus::start(
        &nats_url(),
        "test",
        &StreamSettings::from_source(&env).unwrap(),
    )
    .await
    .unwrap();
    let tenant = TenantId::parse(format!("{prefix}{}", random_suffix())).unwrap();
    let secret = format!("ss_{}", random_suffix());
    let cfg = TenantConfig {
        id: tenant.clone(),
        name: "process test".into(),
        signing_keys: vec![secret.clone()],
        limits: Limits::default(),
    };
    bus.tenants
        .put(tenant.as_str(), serde_json::to_vec(&cfg).unwrap().into())
        .await
        .unwrap();
    (bus, tenant, secret)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_stopped_with_sigterm_has_stored_every_connections_audit_when_it_exits() {
    let (bus, tenant, secret) = bus_and_tenant("term").await;
    let port = free_port();
    let mut gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_room-gateway"))
        .env("SB_LISTEN", format!("127.0.0.1:{port}"))
        .env("SB_NATS_URL", nats_url())
        // No time to drain: sessions still leaving their rooms are dropped
        // where they stand when the gateway stops.
        .env("SB_DRAIN_SECS", "0")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for i in 0..200 {
        let tok = token(&tenant, &secret, &format!("u{i}"));
        let mut c = None;
        for _ in 0..200 {
            if let Ok(mut ws) =
                WsClient::connect(&format!("ws://127.0.0.1:{port}/v1/ws"), &tok).await
            {
                let welcome = ws.next_of_type("welcome").await;
                ids.push(welcome["conn_id"].as_str().unwrap().to_owned());
                for r in 0..10 {
                    ws.send_json(json!({"op": "join", "room": format!("live{r}")}))
                        .await;
                }
                c = Some(ws);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        clients.push(c.expect("the gateway accepts connections"));
    }
    for c in &mut clients {
        for _ in 0..10 {
            c.next_of_type("joined").await;
        }
    }
    let pid = gw.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = tokio::time::timeout(Duration::from_secs(20), gw.wait()).await;
    assert!(
        exited
            .expect("the gateway exits after draining")
            .unwrap()
            .success()
    );

    let stream = bus.jetstream.get_stream("SB_DOMAIN").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("sb.dom.{tenant}.connection.closed"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut closed = std::collections::HashSet::new();
    while !ids.iter().all(|id| closed.contains(id)) {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await
        else {
            break;
        };
        let ev = <pb::DomainEvent as prost::Message>::decode(m.payload.clone()).unwrap();
        let data: Value = serde_json::from_slice(&ev.data).unwrap();
        closed.insert(data["conn_id"].as_str().unwrap().to_owned());
    }
    let missing = ids.iter().filter(|id| !closed.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "connection.closed missing for {missing} of {} connections",
        ids.len()
    );
    drop(clients);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_gateway_under_traffic_loses_no_event_and_its_presence_expires() {
    let (bus, tenant, secret) = bus_and_tenant("kill").await;

    // Gateway A: a real process we will SIGKILL.
    let port_a = free_port();
    let mut a = tokio::process::Command::new(env!("CARGO_BIN_EXE_room-gateway"))
        .env("SB_LISTEN", format!("127.0.0.1:{port_a}"))
        .env("SB_NATS_URL", nats_url())
        .env("SB_PRESENCE_REFRESH", "1s")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Gateway B: in this process.
    let mut vars = std::collections::HashMap::new();
    vars.insert("SB_LISTEN".to_string(), "127.0.0.1:0".to_string());
    vars.insert("SB_NATS_URL".to_string(), nats_url());
    vars.insert("SB_PRESENCE_REFRESH".to_string(), "1s".to_string());
    let b = room_gateway::Application::build(room_gateway::Settings::from_source(&vars).unwrap())
        .await
        .unwrap();
    let port_b = b.port();
    let (_stop_b, s) = shutdown::channel();
    tokio::spawn(b.run_until_stopped(s));

    let subs: Vec<String> = (0..4).map(|i| format!("u{i}")).collect();
    let mut clients = Vec::new();
    for sub in &subs {
        let tok = token(&tenant, &secret, sub);
        let mut c = None;
        for _ in 0..200 {
            c = connect(port_a, &tok).await;
            if c.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut c = c.expect("gateway A accepts connections");
        c.send_json(json!({"op": "join", "room": "live", "types": ["tick"]}))
            .await;
        assert_eq!(c.next_of_type("joined").await["type"], "joined");
        clients.push(c);
    }

    // Traffic: 300 events, one every 5 ms, straight into JetStream.
    let total = 300usize;
    let js = bus.jetstream.clone();
    let t = tenant.clone();
    let traffic = tokio::spawn(async move {
        let room = RoomName::parse("live").unwrap();
        let mut seqs = Vec::new();
        for i in 0..total {
            let ev = pb::RoomEvent {
                id: format!("evt_{t}_{i}"),
                tenant: t.to_string(),
                room: "live".into(),
                event: "tick".into(),
                data: json!(i).to_string().into_bytes(),
                source: "test".into(),
                ts_unix_ms: 0,
                ..Default::default()
            };
            seqs.push(
                publish_room_event(&js, &t, &room, &ev)
                    .await
                    .unwrap()
                    .sequence,
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seqs
    });

    let mut readers = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let tok = token(&tenant, &secret, &subs[i]);
        readers.push(tokio::spawn(async move {
            let mut got: Vec<(u64, u64, i64)> = Vec::new();
            loop {
                match c.next_frame_within(Duration::from_secs(10)).await {
                    Some(Ok(f)) if f["type"] == "event" => {
                        got.push((f["seq"].as_u64().unwrap(), f["prev"].as_u64().unwrap(), f["data"].as_i64().unwrap()));
                        if got.len() == total {
                            return (got, c);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        // Gateway A died: reconnect to B and pick up where we were.
                        let since = got.last().map(|g| g.0).unwrap_or(0);
                        c = connect(port_b, &tok).await.expect("gateway B accepts");
                        c.send_json(json!({"op": "join", "room": "live", "since": since, "types": ["tick"]})).await;
                        let joined = c.next_of_type("joined").await;
                        assert_eq!(joined["recovered"], true, "{joined}");
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(400)).await;
    a.start_kill().unwrap(); // SIGKILL
    a.wait().await.unwrap();

    let seqs = traffic.await.unwrap();
    let mut on_b = Vec::new();
    for r in readers {
        let (got, c) = tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .unwrap()
            .unwrap();
        on_b.push(c);
        let data: Vec<i64> = got.iter().map(|g| g.2).collect();
        assert_eq!(
            data,
            (0..total as i64).collect::<Vec<_>>(),
            "every event once, in order"
        );
        let got_seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(got_seqs, seqs);
        for w in got.windows(2) {
            assert_eq!(w[1].1, w[0].0, "prev chains unbroken across the reconnect");
        }
    }

    // A's entries live at most three refresh intervals (3 s) after the kill.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut watcher = connect(port_b, &token(&tenant, &secret, "watcher"))
        .await
        .unwrap();
    watcher
        .send_json(json!({"op": "join", "room": "live", "types": ["tick"]}))
        .await;
    watcher.next_of_type("joined").await;
    let mut by_sub = BTreeMap::new();
    for _ in 0..50 {
        watcher
            .send_json(json!({"op": "presence", "room": "live"}))
            .await;
        let p = watcher.next_of_type("presence").await;
        by_sub = p["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["sub"].as_str().unwrap().to_owned(), m["conns"].clone()))
            .collect::<BTreeMap<String, Value>>();
        if by_sub.values().all(|c| *c == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for sub in &subs {
        assert_eq!(
            by_sub.get(sub),
            Some(&json!(1)),
            "only the connection on B remains: {by_sub:?}"
        );
    }
}
