use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Value, json};
use switchboard_platform::nats::{Bus, StreamSettings};
use switchboard_proto::room_state::RoomState;
use switchboard_proto::token;
use switchboard_test_support::{WsClient, nats_url};

use crate::helpers::{join, now, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn a_minted_token_is_the_tenants_own_jwt_and_lets_a_browser_in() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let (status, body) = app
        .call(
            &t,
            Method::POST,
            "/tokens",
            Some(
                json!({"sub": "ann", "rooms": {"lobby": ["read", "presence"], "quote:*": ["read"]},
                        "info": {"name": "Ann"}, "ttl_s": 600}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let exp = body["exp"].as_i64().unwrap();
    assert!((exp - (now() + 600)).abs() <= 5, "exp {exp}");
    let raw = body["token"].as_str().unwrap();
    let claims = token::verify(raw, t.signing_secret.as_bytes(), now()).unwrap();
    assert_eq!(claims.sub, "ann");
    assert_eq!(claims.tenant.as_str(), t.id);
    assert_eq!(claims.exp, exp);
    assert_eq!(claims.info.unwrap()["name"], "Ann");

    let mut c = WsClient::connect(&app.ws_url(), raw).await.unwrap();
    assert_eq!(c.next_frame().await["type"], "welcome");
    join(&mut c, "lobby").await;

    let (status, body) = app
        .call(
            &t,
            Method::POST,
            "/tokens",
            Some(json!({"sub": "bob", "rooms": {}})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(
        (body["exp"].as_i64().unwrap() - (now() + 3600)).abs() <= 5,
        "default ttl is 3600 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_requests_are_checked_field_by_field() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    for (body, field) in [
        (json!({"rooms": {}}), "sub"),
        (json!({"sub": "", "rooms": {}}), "sub"),
        (json!({"sub": "a"}), "rooms"),
        (
            json!({"sub": "a", "rooms": {"lobby": ["fly"]}}),
            "rooms.lobby",
        ),
        (
            json!({"sub": "a", "rooms": {"bad room": ["read"]}}),
            "rooms.bad room",
        ),
        (json!({"sub": "a", "rooms": {}, "ttl_s": 0}), "ttl_s"),
        (json!({"sub": "a", "rooms": {}, "ttl_s": 86401}), "ttl_s"),
        (json!({"sub": "a", "rooms": {}, "info": "x"}), "info"),
    ] {
        let (status, p) = app
            .call(&t, Method::POST, "/tokens", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}: {p}");
        assert_eq!(p["field"], field, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn room_state_is_announced_then_stored_with_its_seq() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"board": ["read"]})).await;
    join(&mut c, "board").await;

    let (status, body) = app
        .call(
            &t,
            Method::PUT,
            "/rooms/board/state",
            Some(json!({"data": {"columns": ["todo", "done"]}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"], "board");
    let seq = body["seq"].as_u64().unwrap();
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["event"], "state.updated");
    assert_eq!(ev["seq"], seq);
    assert_eq!(ev["data"], json!({"columns": ["todo", "done"]}));

    let vars: HashMap<String, String> = HashMap::new();
    let bus = Bus::start(
        &nats_url(),
        "system-tests",
        &StreamSettings::from_source(&vars).unwrap(),
    )
    .await
    .unwrap();
    let stored = bus
        .room_state
        .get(format!("{}.board", t.id))
        .await
        .unwrap()
        .expect("state is in KV SB_ROOM_STATE");
    let state: RoomState = serde_json::from_slice(&stored).unwrap();
    assert_eq!(state.seq, seq);
    assert_eq!(state.data, json!({"columns": ["todo", "done"]}));

    let (status, p) = app
        .call(
            &t,
            Method::PUT,
            "/rooms/board/state",
            Some(json!({"state": 1})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "state");
    let (status, p) = app
        .call(
            &t,
            Method::PUT,
            "/rooms/a.b/state",
            Some(json!({"data": 1})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "room");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_endpoint_is_served() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(format!("{}/openapi.json", app.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15);
    for (path, ops) in paths {
        let url = path
            .replace("{tenant}", "acme")
            .replace("{room}", "lobby")
            .replace("{user}", "u1")
            .replace("{id}", "x1");
        for method in ops.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let res = app
                .http
                .request(method.clone(), format!("{}{url}", app.ingest))
                .send()
                .await
                .unwrap();
            // Unauthenticated calls are refused, but by the endpoint: an
            // unknown route would be a 404.
            assert_ne!(
                res.status(),
                404,
                "{method} {path} is documented but not served"
            );
        }
    }
}
