use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_created_once_and_only_with_the_admin_token() {
    let app = spawn_app().await;
    let url = format!("{}/v1/admin/tenants", app.ingest);
    let id = format!("acme-{}", &switchboard_test_support::random_suffix()[..8]);

    let res = app
        .http
        .post(&url)
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .post(&url)
        .bearer_auth("wrong-token-wrong-token-wrong-token")
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = app
        .http
        .post(&url)
        .bearer_auth(&app.admin_token)
        .json(&json!({"id": id, "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["name"], "Acme");
    assert!(body["api_key"].as_str().unwrap().starts_with("sk_"));
    assert!(body["signing_secret"].as_str().unwrap().len() >= 32);

    let res = app
        .http
        .post(&url)
        .bearer_auth(&app.admin_token)
        .json(&json!({"id": id, "name": "Acme again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);

    for (body, field) in [
        (json!({"id": "Not Valid", "name": "x"}), "id"),
        (json!({"name": ""}), "name"),
    ] {
        let res = app
            .http
            .post(&url)
            .bearer_auth(&app.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422);
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["field"], field);
    }
}
