use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_created_listed_without_secrets_and_refused_once_revoked() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let (status, created) = app
        .call(&t, Method::POST, "/api-keys", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "ci");
    let key = created["api_key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_"));
    assert!(created["created_at"].is_string());

    let (status, _) = app
        .call_with_key(&key, &t.id, Method::GET, "/suggestions", None)
        .await;
    assert_eq!(status, 200, "the new key works");

    let (status, list) = app.call(&t, Method::GET, "/api-keys", None).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the tenant's first key and the new one");
    assert!(
        items
            .iter()
            .any(|k| k["id"] == id.as_str() && k["name"] == "ci")
    );
    assert!(
        !list.to_string().contains("sk_"),
        "no secret is listed: {list}"
    );
    assert_eq!(list["next_cursor"], Value::Null);

    let (status, _) = app
        .call(&t, Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, p) = app
        .call_with_key(&key, &t.id, Method::GET, "/suggestions", None)
        .await;
    assert_eq!(status, 401, "a revoked key is refused at once: {p}");
    let (status, _) = app
        .call(&t, Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let (_, list) = app.call(&t, Method::GET, "/api-keys", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Another tenant's key cannot manage this tenant's keys.
    let other = app.create_tenant().await;
    let (status, _) = app
        .call_with_key(&other.api_key, &t.id, Method::GET, "/api-keys", None)
        .await;
    assert_eq!(status, 403);
    let (status, p) = app
        .call(&t, Method::POST, "/api-keys", Some(json!({"name": ""})))
        .await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "name");
}

async fn patch_limits(app: &TestApp, tenant: &str, limits: Value) -> (u16, Value) {
    let res = app
        .http
        .patch(format!("{}/v1/admin/tenants/{tenant}", app.ingest))
        .bearer_auth(&app.admin_token)
        .json(&json!({"limits": limits}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn over_its_rate_limit_a_tenant_gets_429_with_retry_after() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let (status, body) = patch_limits(&app, &t.id, json!({"http_rps": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["limits"],
        json!({"http_rps": 2, "connections": 100000, "rooms_per_connection": 100, "client_msgs_per_s": 50}),
        "only the named limit changes"
    );

    // Every instance follows KV SB_TENANTS: within a second the limit bites.
    let url = format!("{}/v1/tenants/{}/api-keys", app.ingest, t.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let limited = loop {
        let res = app
            .http
            .get(&url)
            .bearer_auth(&t.api_key)
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            break res;
        }
        assert_eq!(res.status(), 200);
        assert!(tokio::time::Instant::now() < deadline, "never limited");
    };
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    let p: Value = limited.json().await.unwrap();
    assert_eq!(p["code"], "rate_limited");

    // 0 means no limit.
    let (status, body) = patch_limits(&app, &t.id, json!({"http_rps": 0})).await;
    assert_eq!(status, 200);
    assert_eq!(body["limits"]["http_rps"], 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = app
            .http
            .get(&url)
            .bearer_auth(&t.api_key)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "limit never lifted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        let res = app
            .http
            .get(&url)
            .bearer_auth(&t.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    let (status, p) = patch_limits(&app, &t.id, json!({"http_rps": -1})).await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "limits.http_rps");
    let (status, p) = patch_limits(&app, &t.id, json!({"speed": 1})).await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "limits.speed");
    let (status, _) = patch_limits(&app, "no-such-tenant-here", json!({"http_rps": 1})).await;
    assert_eq!(status, 404);
    let res = app
        .http
        .patch(format!("{}/v1/admin/tenants/{}", app.ingest, t.id))
        .bearer_auth(&t.api_key)
        .json(&json!({"limits": {"http_rps": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_revoked_on_one_ingest_is_refused_at_once_by_another_that_had_cached_it() {
    let mut app = spawn_app().await;
    let t = app.create_tenant().await;
    let other = app.spawn_extra_ingest(ingest::Clock::system()).await;
    let (_, created) = app
        .call(
            &t,
            Method::POST,
            "/api-keys",
            Some(json!({"name": "shared"})),
        )
        .await;
    let key = created["api_key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let publish = |base: String| {
        let http = app.http.clone();
        let key = key.clone();
        let url = format!("{base}/v1/tenants/{}/rooms/lobby/events", t.id);
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"event": "a.b"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The other instance learns (and caches) the key.
    assert_eq!(publish(other.clone()).await, 201);
    let (status, _) = app
        .call(&t, Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(status, 204);
    // The revocation reaches it over NATS; allow it the time of a round trip.
    let mut refused = false;
    for _ in 0..50 {
        if publish(other.clone()).await == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the other instance still accepted the revoked key");
    assert_eq!(publish(app.ingest.clone()).await, 401);
}
