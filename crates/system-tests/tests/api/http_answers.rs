//! What a newcomer walking every ingest endpoint gets: one rule for bad
//! bodies (not JSON: 400; JSON that breaks a rule: 422 naming the field),
//! 405 with `Allow` for a wrong method, answers that say what happened, and
//! a `/metrics` and `/readyz` that show what ingest does.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{join, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_answers_400_for_non_json_and_422_naming_the_field_for_a_broken_rule() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let tenant_bodies: [(Method, &str, Value, &str); 9] = [
        (
            Method::POST,
            "/rooms/lobby/events",
            json!({"data": 1}),
            "event",
        ),
        (
            Method::POST,
            "/events",
            json!({"events": [{"room": "a", "event": "a.b", "colour": 1}]}),
            "events[0].colour",
        ),
        (
            Method::POST,
            "/suggestions",
            json!({"suggestions": [], "x": 1}),
            "x",
        ),
        (
            Method::POST,
            "/suggestions/responses",
            json!({"action": "execute"}),
            "suggestion_ids",
        ),
        (
            Method::PUT,
            "/users/u1/notification-preferences",
            json!({"channels": ["fax"]}),
            "channels[0]",
        ),
        (
            Method::POST,
            "/users/u1/notifications",
            json!({"severity": "info"}),
            "message",
        ),
        (Method::POST, "/tokens", json!({"sub": "u1"}), "rooms"),
        (
            Method::PUT,
            "/rooms/lobby/state",
            json!({"value": 1}),
            "value",
        ),
        (Method::POST, "/api-keys", json!({"name": 7}), "name"),
    ];
    for (method, path, body, field) in tenant_bodies {
        let url = format!("{}/v1/tenants/{}{path}", app.ingest, t.id);
        let res = app
            .http
            .request(method.clone(), &url)
            .bearer_auth(&t.api_key)
            .header("content-type", "application/json")
            .body("{\"event\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{method} {path}: not JSON");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let (status, p) = app.call(&t, method.clone(), path, Some(body)).await;
        assert_eq!(status, 422, "{method} {path}: {p}");
        assert_eq!(p["field"], field, "{method} {path}: {p}");
        assert!(p["rule"].as_str().is_some_and(|r| !r.is_empty()), "{p}");
    }

    let admin = |body: &'static str| {
        app.http
            .post(format!("{}/v1/admin/tenants", app.ingest))
            .bearer_auth(&app.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let res = admin(r#"{"id": "no-name"}"#).await.unwrap();
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["field"], "name", "{p}");
    let res = admin(r#"{"name": "x", "plan": "gold"}"#).await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "plan");
    assert_eq!(admin("name=x").await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_method_a_path_does_not_take_is_405_with_allow() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    for (method, path, allow) in [
        (Method::DELETE, "/rooms/lobby/events", "POST"),
        (Method::GET, "/events", "POST"),
        (Method::PATCH, "/suggestions", "POST, GET"),
        (
            Method::POST,
            "/users/u1/notification-preferences",
            "GET, PUT",
        ),
        (Method::GET, "/suggestions/responses", "POST"),
    ] {
        let res = app
            .http
            .request(
                method.clone(),
                format!("{}/v1/tenants/{}{path}", app.ingest, t.id),
            )
            .bearer_auth(&t.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "method_not_allowed");
    }
    // A path that does not exist at all is still 404.
    let res = app
        .http
        .get(format!("{}/v1/nothing-here", app.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ephemeral_event_sent_twice_with_one_idempotency_key_is_delivered_once() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    join(&mut c, "lobby").await;
    let send = || {
        app.http
            .post(format!(
                "{}/v1/tenants/{}/rooms/lobby/events",
                app.ingest, t.id
            ))
            .bearer_auth(&t.api_key)
            .header("Idempotency-Key", "typing-1")
            .json(&json!({"event": "typing.start", "ephemeral": true}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["ephemeral"], true);
    assert_eq!(ev["id"], first["id"]);
    let again = send().await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    c.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_says_what_became_of_it() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"user:*": ["read"]})).await;
    join(&mut c, "user:u1").await;
    join(&mut c, "user:u2").await;
    let (status, _) = app
        .call(
            &t,
            Method::PUT,
            "/users/u2/notification-preferences",
            Some(json!({"channels": ["email"]})),
        )
        .await;
    assert_eq!(status, 200);

    let (status, sent) = app
        .call(
            &t,
            Method::POST,
            "/users/u1/notifications",
            Some(json!({"message": "hi", "severity": "info"})),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(sent["status"], "delivered", "{sent}");
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["room"], "user:u1");
    assert_eq!(ev["data"]["id"], sent["id"]);

    let (status, kept) = app
        .call(
            &t,
            Method::POST,
            "/users/u2/notifications",
            Some(json!({"message": "hi", "severity": "info"})),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(kept["status"], "stored", "{kept}");
    assert_eq!(kept["channels"], json!(["email"]));
    c.assert_silent(Duration::from_millis(500)).await;
}

/// The value of the first sample line of `metric` whose labels contain
/// every one of `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(metric)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        if !labels.iter().all(|want| rest.contains(want)) {
            return None;
        }
        l.rsplit(' ').next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_metrics_show_requests_publishes_backlog_and_refusals() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    assert_eq!(
        app.post_event(&t, "lobby", json!({"event": "a.b"}))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.post_event(&t, "lobby", json!({"event": "Bad"}))
            .await
            .status(),
        422
    );
    app.post_batch(
        &t,
        vec![
            json!({"room": "a", "event": "a.b"}),
            json!({"room": "b", "event": "a.b"}),
        ],
    )
    .await;
    let (status, _) = app
        .call(
            &t,
            Method::POST,
            "/events",
            Some(json!({"events": [{"room": "a", "event": "a.b"}]})),
        )
        .await;
    assert_eq!(status, 201);
    // Over the tenant's http_rps: refused and counted.
    let res = app
        .http
        .patch(format!("{}/v1/admin/tenants/{}", app.ingest, t.id))
        .bearer_auth(&app.admin_token)
        .json(&json!({"limits": {"http_rps": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut refused = false;
    for _ in 0..100 {
        if app
            .post_event(&t, "lobby", json!({"event": "a.b"}))
            .await
            .status()
            == 429
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "http_rps 1 never refused a request");

    let metrics = app
        .http
        .get(format!("{}/metrics", app.ingest))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let route = r#"route="/v1/tenants/{tenant}/rooms/{room}/events""#;
    let ok = sample(
        &metrics,
        "switchboard_ingest_http_requests_total",
        &[route, r#"status="201""#],
    );
    assert!(ok.is_some_and(|n| n >= 1.0), "{metrics}");
    let bad = sample(
        &metrics,
        "switchboard_ingest_http_requests_total",
        &[route, r#"status="422""#],
    );
    assert_eq!(bad, Some(1.0), "{metrics}");
    let timed = sample(
        &metrics,
        "switchboard_ingest_http_request_duration_seconds_count",
        &[route],
    );
    assert!(timed.is_some_and(|n| n >= 2.0), "{metrics}");
    for kind in ["single", "batch"] {
        let label = format!(r#"kind="{kind}""#);
        let n = sample(
            &metrics,
            "switchboard_ingest_publish_duration_seconds_count",
            &[&label],
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{kind}: {metrics}");
    }
    let refusals = sample(&metrics, "switchboard_ingest_rate_limited_total", &[]);
    assert!(refusals.is_some_and(|n| n >= 1.0), "{metrics}");
    for gauge in [
        "switchboard_ingest_outbox_backlog",
        "switchboard_ingest_undelivered_notifications",
    ] {
        assert!(sample(&metrics, gauge, &[]).is_some(), "{gauge}: {metrics}");
    }

    let ready: Value = app
        .http
        .get(format!("{}/readyz", app.ingest))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["nats_workers"], "ok", "{ready}");
}
