use std::time::Duration;

use serde_json::{Value, json};
use switchboard_proto::token;
use switchboard_test_support::WsClient;
use switchboard_test_support::tungstenite::client::IntoClientRequest;

use crate::helpers::{join, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn join_without_permission_is_forbidden_and_other_tenants_see_nothing() {
    let app = spawn_app().await;
    let a = app.create_tenant().await;
    let b = app.create_tenant().await;

    // Same sub and room name, other tenant: a different room altogether.
    let mut other_tenant = app.connect(&b, "u1", json!({"lobby": ["read"]})).await;
    join(&mut other_tenant, "lobby").await;

    // Right tenant, but the token grants another room, or no read.
    let mut no_room = app
        .connect(&a, "u2", json!({"other": ["read"], "lob*": ["publish"]}))
        .await;
    no_room
        .send_json(json!({"op": "join", "room": "lobby", "id": 7}))
        .await;
    let err = no_room.next_frame().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "forbidden");
    assert_eq!(err["ref"], 7);
    assert_eq!(err["room"], "lobby");

    // Nothing granted by default.
    let mut nothing = app.connect(&a, "u3", json!({})).await;
    nothing
        .send_json(json!({"op": "join", "room": "lobby"}))
        .await;
    assert_eq!(nothing.next_frame().await["code"], "forbidden");

    let res = app
        .post_event(&a, "lobby", json!({"event": "secret.thing", "data": 1}))
        .await;
    assert_eq!(res.status(), 201);
    for c in [&mut other_tenant, &mut no_room, &mut nothing] {
        c.assert_silent(Duration::from_millis(700)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_before_the_upgrade_with_401() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let url = app.ws_url();

    let claims = t.claims("u1", json!({"lobby": ["read"]}), 3600);
    let wrong_key = token::sign(&claims, b"not-the-secret");
    let expired = token::sign(&t.claims("u1", json!({}), -10), t.signing_secret.as_bytes());
    let good = token::sign(&claims, t.signing_secret.as_bytes());
    let payload = good.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"}
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    // {"alg":"HS512","typ":"JWT"} with the good signature
    let alg_other = format!(
        "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.{payload}.{}",
        good.split('.').nth(2).unwrap()
    );
    let mut foreign = t.claims("u1", json!({}), 3600);
    foreign.tenant = switchboard_proto::TenantId::parse("no-such-tenant").unwrap();
    let unknown_tenant = token::sign(&foreign, t.signing_secret.as_bytes());

    for (name, tok) in [
        ("wrong key", wrong_key),
        ("expired", expired),
        ("alg none", alg_none),
        ("alg HS512", alg_other),
        ("unknown tenant", unknown_tenant),
        ("garbage", "abc".to_string()),
    ] {
        let refused = WsClient::connect(&url, &tok)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} accepted"));
        assert_eq!(refused.status, 401, "{name}");
        assert_eq!(
            refused.body["code"], "unauthorized",
            "{name}: {}",
            refused.body
        );
    }
    let no_token = WsClient::connect_request(url.clone().into_client_request().unwrap()).await;
    assert_eq!(no_token.err().unwrap().status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_accepted_from_the_subprotocol_and_the_query() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let tok = t.token("u1", json!({"lobby": ["read"]}));

    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("switchboard.v1, bearer.{tok}").parse().unwrap(),
    );
    let (mut ws, res) = tokio_tungstenite_connect(req).await;
    assert_eq!(res, Some("switchboard.v1".to_string()));
    let welcome = ws.next_frame().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["sub"], "u1");
    assert_eq!(welcome["tenant"], Value::String(t.id.clone()));
    assert_eq!(welcome["protocol"], 1);
    assert!(welcome["conn_id"].as_str().unwrap().starts_with("c_"));
    assert_eq!(welcome["max_frame_bytes"], 65536);

    let req = format!("{}?token={tok}", app.ws_url())
        .into_client_request()
        .unwrap();
    let mut q = WsClient::connect_request(req)
        .await
        .expect("query token accepted");
    assert_eq!(q.next_frame().await["type"], "welcome");
    join(&mut q, "lobby").await;
}

/// Connects and returns the subprotocol the server chose.
async fn tokio_tungstenite_connect(
    req: switchboard_test_support::tungstenite::handshake::client::Request,
) -> (WsClient, Option<String>) {
    WsClient::connect_request_with_response(req).await
}
