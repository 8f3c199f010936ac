//! A keyed publish tells the truth after a store, and its retry never stores
//! twice: when the idempotency record cannot be written after JetStream's
//! ack, the client is told the event was stored; a retry is settled against
//! the stream — inside JetStream's dedup window by publishing the same ids
//! again, after it by finding them in the stream.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};

use switchboard_test_support::NatsServer;

use crate::helpers::{TestApp, join, spawn_app, spawn_app_with};

async fn sql(app: &TestApp, statement: &str) {
    let mut conn = AsyncPgConnection::establish(app.database_url())
        .await
        .unwrap();
    diesel::sql_query(statement)
        .execute(&mut conn)
        .await
        .unwrap();
}

fn post(
    app: &TestApp,
    tenant: &str,
    api_key: &str,
    key: &str,
    body: &'static str,
) -> reqwest::RequestBuilder {
    app.http
        .post(format!(
            "{}/v1/tenants/{tenant}/rooms/lobby/events",
            app.ingest
        ))
        .bearer_auth(api_key)
        .header("Idempotency-Key", key)
        .header("content-type", "application/json")
        .body(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_whose_record_cannot_be_written_is_answered_201_and_its_retry_stores_nothing() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    join(&mut c, "lobby").await;
    // PostgreSQL refuses to write answers into records (the claim before
    // the publish still works): as if it failed right after the ack.
    sql(
        &app,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'records are read-only in this test'; END $$",
    )
    .await;
    sql(
        &app,
        "CREATE TRIGGER refuse_answers BEFORE UPDATE ON idempotency_keys \
         FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .await;
    let body = r#"{"event":"order.paid","data":{"total":10}}"#;
    let first = post(&app, &t.id, &t.api_key, "order-1", body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        first.status(),
        201,
        "the event was stored: the answer says so"
    );
    let first: Value = first.json().await.unwrap();
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["seq"], first["seq"]);

    // The retry finds the key claimed and unanswered: same ids again,
    // deduplicated by JetStream, same answer, nothing delivered twice.
    let again = post(&app, &t.id, &t.api_key, "order-1", body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    c.assert_silent(Duration::from_millis(500)).await;

    // Once PostgreSQL takes writes again the record is completed in the
    // background.
    sql(&app, "DROP TRIGGER refuse_answers ON idempotency_keys").await;
    let mut conn = AsyncPgConnection::establish(app.database_url())
        .await
        .unwrap();
    #[derive(diesel::QueryableByName)]
    struct Answered {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        answered: bool,
    }
    let mut answered = false;
    for _ in 0..100 {
        let rows: Vec<Answered> = diesel::sql_query(
            "SELECT response IS NOT NULL AS answered FROM idempotency_keys WHERE key = 'order-1'",
        )
        .load(&mut conn)
        .await
        .unwrap();
        if rows.iter().any(|r| r.answered) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the record was never completed");
}

/// A claim older than the dedup window: JetStream no longer deduplicates
/// its ids, so the stream is searched for them.
#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_claim_older_than_the_dedup_window_is_settled_from_the_stream() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    join(&mut c, "lobby").await;
    let repo = ingest::repository::Repository::connect(app.database_url(), 1).unwrap();
    let stored_body = r#"{"event":"order.paid","data":{"total":1}}"#;
    let never_body = r#"{"event":"order.paid","data":{"total":2}}"#;

    // First attempts: one stored its event and died before answering; one
    // died before storing anything. Both claims are made old.
    let first = post(&app, &t.id, &t.api_key, "stored", stored_body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    c.next_of_type("event").await;
    sql(
        &app,
        "UPDATE idempotency_keys SET response = NULL WHERE key = 'stored'",
    )
    .await;
    let hash = ingest::domain::secrets::request_hash(never_body.as_bytes());
    repo.claim_key(&t.id, "room:lobby", "never", &hash)
        .await
        .unwrap();
    sql(
        &app,
        "UPDATE idempotency_keys SET created_at = created_at - interval '10 minutes'",
    )
    .await;

    let again = post(&app, &t.id, &t.api_key, "stored", stored_body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    c.assert_silent(Duration::from_millis(500)).await;

    let late = post(&app, &t.id, &t.api_key, "never", never_body)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 201, "never stored: stored now, once");
    let late: Value = late.json().await.unwrap();
    let ev = c.next_of_type("event").await;
    assert_eq!(ev["id"], late["id"]);
    let again = post(&app, &t.id, &t.api_key, "never", never_body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.json::<Value>().await.unwrap(), late);
    c.assert_silent(Duration::from_millis(500)).await;
}

/// The search cannot tell when the room may have lost events since the
/// claim (it holds as many as `SB_ROOM_HISTORY` keeps, all newer than the
/// claim): it stores nothing and says so.
#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_claim_the_stream_can_no_longer_settle_is_a_409_that_stores_nothing() {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(&nats.url, &[("SB_ROOM_HISTORY", "2")]).await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    join(&mut c, "lobby").await;
    let repo = ingest::repository::Repository::connect(app.database_url(), 1).unwrap();
    let body = r#"{"event":"order.paid","data":{"total":3}}"#;
    for _ in 0..2 {
        assert_eq!(
            app.post_event(&t, "lobby", json!({"event": "x.y"}))
                .await
                .status(),
            201
        );
        c.next_of_type("event").await;
    }
    let hash = ingest::domain::secrets::request_hash(body.as_bytes());
    repo.claim_key(&t.id, "room:lobby", "lost", &hash)
        .await
        .unwrap();
    sql(
        &app,
        "UPDATE idempotency_keys SET created_at = created_at - interval '10 minutes'",
    )
    .await;
    let res = post(&app, &t.id, &t.api_key, "lost", body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["field"], "Idempotency-Key", "{p}");
    c.assert_silent(Duration::from_millis(500)).await;
}
