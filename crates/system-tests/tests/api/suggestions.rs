use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, join, spawn_app};

fn suggestion(title: &str, user: Option<&str>) -> Value {
    let mut s = json!({
        "agent_type": "revenue_optimizer",
        "title": title,
        "description": "Raise the price of the premium plan",
        "estimated_revenue": 1200.5,
        "confidence_score": 0.82,
        "priority": "high",
    });
    if let Some(u) = user {
        s["user_id"] = u.into();
    }
    s
}

async fn post_batch(app: &TestApp, t: &Tenant, suggestions: Vec<Value>) -> Value {
    let (status, body) = app
        .call(
            t,
            Method::POST,
            "/suggestions",
            Some(json!({"suggestions": suggestions})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn respond(app: &TestApp, t: &Tenant, id: &str, action: &str) -> (u16, Value) {
    app.call(
        t,
        Method::POST,
        &format!("/suggestions/{id}/responses"),
        Some(json!({"action": action, "user_id": "u1", "note": "from a test"})),
    )
    .await
}

/// The next `event` frame whose event name is `name`, skipping others.
async fn next_event(c: &mut switchboard_test_support::WsClient, name: &str) -> Value {
    loop {
        let f = c.next_of_type("event").await;
        if f["event"] == name {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_announced_in_room_suggestions_and_each_user_sees_only_their_own() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut all = app
        .connect(&t, "dash", json!({"suggestions": ["read"]}))
        .await;
    join(&mut all, "suggestions").await;
    let mut u1 = app.connect(&t, "u1", json!({"user:u1": ["read"]})).await;
    join(&mut u1, "user:u1").await;

    let mut imported = suggestion("Imported", None);
    imported["created_at"] = "2026-01-02T03:04:05.678Z".into();
    imported["priority"] = "low".into();
    imported["estimated_revenue"] = 300.into();
    imported["confidence_score"] = 1.into();
    let body = app
        .call(
            &t,
            Method::POST,
            "/suggestions",
            Some(json!({"batch_id": "run-7", "suggestions": [
                suggestion("For u1", Some("u1")),
                suggestion("For u2", Some("u2")),
                imported,
            ]})),
        )
        .await;
    assert_eq!(body.0, 201, "{}", body.1);
    let body = body.1;
    assert_eq!(body["batch_id"], "run-7");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for (i, title) in ["For u1", "For u2", "Imported"].into_iter().enumerate() {
        let s = &items[i];
        assert!(s["id"].as_str().unwrap().len() > 4);
        assert_eq!(s["title"], title);
        assert_eq!(s["status"], "pending");
        assert_eq!(s["agent_type"], "revenue_optimizer");
        assert_eq!(s["description"], "Raise the price of the premium plan");
        assert_eq!(s["batch_id"], "run-7");
        assert!(s["created_at"].is_string() && s["updated_at"].is_string());
    }
    assert_eq!(items[0]["user_id"], "u1");
    assert_eq!(items[2]["user_id"], Value::Null);
    assert_eq!(items[2]["priority"], "low");
    assert_eq!(items[0]["estimated_revenue"], json!(1200.5));
    assert_eq!(items[0]["confidence_score"], json!(0.82));
    // Whole numbers come back as posted.
    assert_eq!(items[2]["estimated_revenue"], json!(300));
    assert_eq!(items[2]["confidence_score"], json!(1));
    assert!(
        items[2]["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-02T03:04:05.678")
    );

    for s in items {
        let ev = next_event(&mut all, "suggestion.created").await;
        assert_eq!(ev["room"], "suggestions");
        assert_eq!(ev["data"], *s);
    }
    let ev = next_event(&mut u1, "suggestion.created").await;
    assert_eq!(ev["room"], "user:u1");
    assert_eq!(ev["data"]["id"], items[0]["id"]);
    // u1 is notified of its suggestion (default preferences), and sees
    // nothing of u2's or the unassigned one.
    let note = next_event(&mut u1, "notification").await;
    assert_eq!(note["data"]["data"]["suggestion_id"], items[0]["id"]);
    assert_eq!(note["data"]["held"], false);

    let id = items[0]["id"].as_str().unwrap();
    let (status, updated) = respond(&app, &t, id, "execute").await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], "executed");
    let ev = next_event(&mut all, "suggestion.updated").await;
    assert_eq!(ev["data"]["id"], id);
    assert_eq!(ev["data"]["status"], "executed");
    let ev = next_event(&mut u1, "suggestion.updated").await;
    assert_eq!(ev["data"]["id"], id);
    u1.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_transition_is_applied_and_every_impossible_one_is_a_conflict() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let body = post_batch(
        &app,
        &t,
        vec![
            suggestion("a", None),
            suggestion("b", None),
            suggestion("c", None),
        ],
    )
    .await;
    let ids: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();

    let expect = |(status, body): (u16, Value), want: &str| {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], want);
    };
    let conflict = |(status, body): (u16, Value), current: &str| {
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["current_status"], current);
        assert_eq!(body["code"], "conflict");
    };

    // pending: resume is impossible; pause → paused.
    conflict(respond(&app, &t, &ids[0], "resume").await, "pending");
    expect(respond(&app, &t, &ids[0], "pause").await, "paused");
    // paused: pause again is impossible; resume → pending.
    conflict(respond(&app, &t, &ids[0], "pause").await, "paused");
    expect(respond(&app, &t, &ids[0], "resume").await, "pending");
    // pending → executed, which is final.
    expect(respond(&app, &t, &ids[0], "execute").await, "executed");
    for action in ["execute", "reject", "pause", "resume"] {
        conflict(respond(&app, &t, &ids[0], action).await, "executed");
    }
    // pending → rejected, which is final.
    expect(respond(&app, &t, &ids[1], "reject").await, "rejected");
    for action in ["execute", "reject", "pause", "resume"] {
        conflict(respond(&app, &t, &ids[1], action).await, "rejected");
    }
    // A paused suggestion may still be executed or rejected.
    expect(respond(&app, &t, &ids[2], "pause").await, "paused");
    expect(respond(&app, &t, &ids[2], "reject").await, "rejected");

    let (status, _) = respond(&app, &t, "sug_nope", "execute").await;
    assert_eq!(status, 404);
    let (status, one) = app
        .call(&t, Method::GET, &format!("/suggestions/{}", ids[2]), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["status"], "rejected");
    let (status, _) = app
        .call(&t, Method::GET, "/suggestions/sug_nope", None)
        .await;
    assert_eq!(status, 404);
    let (status, p) = respond(&app, &t, &ids[0], "approve").await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "action");
    let (status, p) = app
        .call(
            &t,
            Method::POST,
            &format!("/suggestions/{}/responses", ids[0]),
            Some(json!({"action": "execute"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "user_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_responses_exactly_one_wins() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let body = post_batch(&app, &t, vec![suggestion("contested", None)]).await;
    let id = body["items"][0]["id"].as_str().unwrap().to_owned();
    let actions = ["execute", "reject", "pause", "execute", "reject", "pause"];
    let results = futures_join(
        actions
            .iter()
            .map(|a| respond(&app, &t, &id, a))
            .collect::<Vec<_>>(),
    )
    .await;
    let wins: Vec<&(u16, Value)> = results.iter().filter(|(s, _)| *s == 200).collect();
    // A pause can be followed by an execute or reject, so up to two win —
    // but never two finals, and every loser is a 409 naming the status.
    let finals = wins
        .iter()
        .filter(|(_, b)| b["status"] == "executed" || b["status"] == "rejected")
        .count();
    assert!(finals <= 1, "{results:?}");
    assert!(!wins.is_empty());
    for (status, body) in &results {
        assert!(*status == 200 || *status == 409, "{status} {body}");
        if *status == 409 {
            assert!(body["current_status"].is_string());
        }
    }

    // Same action from everyone: exactly one wins.
    let body = post_batch(&app, &t, vec![suggestion("raced", None)]).await;
    let id = body["items"][0]["id"].as_str().unwrap().to_owned();
    let results = futures_join(
        (0..8)
            .map(|_| respond(&app, &t, &id, "execute"))
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 1);
    assert_eq!(results.iter().filter(|(s, _)| *s == 409).count(), 7);
}

/// Runs futures concurrently on the test's runtime and collects their
/// outputs in order.
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_neither_skip_nor_repeat_while_suggestions_are_inserted() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut before = HashSet::new();
    for b in 0..3 {
        let batch: Vec<Value> = (0..40)
            .map(|i| {
                let mut s = suggestion(
                    &format!("s{b}-{i}"),
                    Some(if i % 2 == 0 { "u1" } else { "u2" }),
                );
                s["priority"] = ["low", "medium", "high", "critical"][i % 4].into();
                s
            })
            .collect();
        let body = post_batch(&app, &t, batch).await;
        for s in body["items"].as_array().unwrap() {
            before.insert(s["id"].as_str().unwrap().to_owned());
        }
    }

    // Default page size is 50, and a list answers items + next_cursor.
    let (status, first) = app.call(&t, Method::GET, "/suggestions", None).await;
    assert_eq!(status, 200);
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    assert!(first["next_cursor"].is_string());

    // Page through with small pages while another task keeps inserting.
    let inserting = {
        let http = app.http.clone();
        let url = format!("{}/v1/tenants/{}/suggestions", app.ingest, t.id);
        let key = t.api_key.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                let res = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"suggestions": [suggestion(&format!("late-{i}"), None)]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut last: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
    loop {
        let path = match &cursor {
            None => "/suggestions?limit=7".to_owned(),
            Some(c) => format!("/suggestions?limit=7&cursor={c}"),
        };
        let (status, page) = app.call(&t, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        for s in page["items"].as_array().unwrap() {
            let key = (
                s["created_at"].as_str().unwrap().parse().unwrap(),
                s["id"].as_str().unwrap().to_owned(),
            );
            if let Some(prev) = &last {
                assert!(key < *prev, "newest first: {key:?} after {prev:?}");
            }
            last = Some(key);
            seen.push(s["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    inserting.await.unwrap();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no suggestion repeated");
    assert!(before.is_subset(&unique), "no suggestion skipped");

    // Filters, each on its own index.
    let (_, page) = app
        .call(
            &t,
            Method::GET,
            "/suggestions?priority=critical&user_id=u2&limit=500",
            None,
        )
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    assert!(
        items
            .iter()
            .all(|s| s["priority"] == "critical" && s["user_id"] == "u2")
    );
    let (_, page) = app
        .call(&t, Method::GET, "/suggestions?status=executed", None)
        .await;
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = app
        .call(
            &t,
            Method::GET,
            "/suggestions?agent_type=revenue_optimizer&limit=500",
            None,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 130);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage", "cursor"),
        ("status=done", "status"),
        ("priority=urgent", "priority"),
    ] {
        let (status, p) = app
            .call(&t, Method::GET, &format!("/suggestions?{query}"), None)
            .await;
        assert_eq!(status, 422, "{query}: {p}");
        assert_eq!(p["field"], field, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_batch_with_the_same_idempotency_key_creates_nothing_new() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "dash", json!({"suggestions": ["read"]}))
        .await;
    join(&mut c, "suggestions").await;
    let post = |body: Value| {
        app.http
            .post(format!("{}/v1/tenants/{}/suggestions", app.ingest, t.id))
            .bearer_auth(&t.api_key)
            .header("Idempotency-Key", "agent-run-1")
            .json(&body)
            .send()
    };
    let body = json!({"suggestions": [suggestion("one", None), suggestion("two", None)]});
    let first = post(body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post(body).await.unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);

    let (_, page) = app.call(&t, Method::GET, "/suggestions", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    for _ in 0..2 {
        next_event(&mut c, "suggestion.created").await;
    }
    c.assert_silent(Duration::from_millis(500)).await;

    let other = post(json!({"suggestions": [suggestion("three", None)]}))
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    let p: Value = other.json().await.unwrap();
    assert_eq!(p["field"], "Idempotency-Key");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_rule_is_named_and_a_bad_batch_stores_nothing() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let future = "2999-01-01T00:00:00Z";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "confidence_score",
            json!(1.5),
            "suggestions[1].confidence_score",
        ),
        (
            "confidence_score",
            json!(-0.1),
            "suggestions[1].confidence_score",
        ),
        (
            "confidence_score",
            json!("high"),
            "suggestions[1].confidence_score",
        ),
        (
            "estimated_revenue",
            json!(-1),
            "suggestions[1].estimated_revenue",
        ),
        ("priority", json!("urgent"), "suggestions[1].priority"),
        ("title", json!(""), "suggestions[1].title"),
        ("title", json!("x".repeat(201)), "suggestions[1].title"),
        ("agent_type", json!(""), "suggestions[1].agent_type"),
        ("agent_type", Value::Null, "suggestions[1].agent_type"),
        ("user_id", json!("a b"), "suggestions[1].user_id"),
        ("created_at", json!(future), "suggestions[1].created_at"),
        (
            "created_at",
            json!("yesterday"),
            "suggestions[1].created_at",
        ),
        ("colour", json!("red"), "suggestions[1].colour"),
    ];
    for (field, value, named) in cases {
        let mut bad = suggestion("bad", None);
        bad[field] = value.clone();
        let (status, p) = app
            .call(
                &t,
                Method::POST,
                "/suggestions",
                Some(json!({"suggestions": [suggestion("good", None), bad]})),
            )
            .await;
        assert_eq!(status, 422, "{field}={value}: {p}");
        assert_eq!(p["field"], named, "{field}={value}");
        assert!(p["rule"].as_str().is_some_and(|r| !r.is_empty()));
        assert_eq!(p["code"], "invalid_field");
    }
    for (body, named) in [
        (json!({"suggestions": []}), "suggestions"),
        (json!({}), "suggestions"),
        (
            json!({"suggestions": [suggestion("x", None)], "batch_id": ""}),
            "batch_id",
        ),
    ] {
        let (status, p) = app.call(&t, Method::POST, "/suggestions", Some(body)).await;
        assert_eq!(status, 422, "{p}");
        assert_eq!(p["field"], named);
    }
    let (_, page) = app.call(&t, Method::GET, "/suggestions", None).await;
    assert_eq!(page["items"], json!([]), "a rejected batch stores nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_response_answers_for_each_suggestion() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "dash", json!({"suggestions": ["read"]}))
        .await;
    join(&mut c, "suggestions").await;
    let body = post_batch(
        &app,
        &t,
        vec![
            suggestion("a", None),
            suggestion("b", None),
            suggestion("c", None),
        ],
    )
    .await;
    let ids: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(respond(&app, &t, &ids[0], "execute").await.0, 200);

    let (status, answer) = app
        .call(
            &t,
            Method::POST,
            "/suggestions/responses",
            Some(json!({
                "suggestion_ids": [ids[0], ids[1], ids[2], "sug_missing"],
                "action": "reject",
                "user_id": "u1",
            })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items[0]["result"], "conflict");
    assert_eq!(items[0]["current_status"], "executed");
    assert_eq!(items[1]["result"], "updated");
    assert_eq!(items[1]["suggestion"]["status"], "rejected");
    assert_eq!(items[2]["result"], "updated");
    assert_eq!(items[3]["result"], "not_found");
    assert_eq!(answer["succeeded"], 2);
    assert_eq!(answer["conflicted"], 1);
    assert_eq!(answer["not_found"], 1);

    let mut updated = HashSet::new();
    for _ in 0..3 {
        let ev = next_event(&mut c, "suggestion.updated").await;
        updated.insert(ev["data"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        updated,
        HashSet::from([ids[0].clone(), ids[1].clone(), ids[2].clone()])
    );

    // The per-suggestion form, and its field names.
    let (status, answer) = app
        .call(
            &t,
            Method::POST,
            "/suggestions/responses",
            Some(json!({"responses": [
                {"suggestion_id": ids[1], "action": "resume", "user_id": "u1"},
            ]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["items"][0]["current_status"], "rejected");
    let (status, p) = app
        .call(
            &t,
            Method::POST,
            "/suggestions/responses",
            Some(json!({"responses": [{"suggestion_id": ids[1], "action": "nope", "user_id": "u1"}]})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(p["field"], "responses[0].action");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_stored_but_never_announced_is_announced_from_the_outbox() {
    use ingest::repository::Repository;
    use ingest::repository::announcements::AnnouncementRow;
    use ingest::repository::suggestions::SuggestionRow;

    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app
        .connect(&t, "dash", json!({"suggestions": ["read"]}))
        .await;
    join(&mut c, "suggestions").await;

    // What an ingest that died between its commit and its publish leaves
    // behind: the suggestion and its unpublished announcement.
    let repo = Repository::connect(app.database_url(), 2).unwrap();
    let now = chrono::Utc::now();
    let row = SuggestionRow {
        id: "sug_orphan".into(),
        tenant_id: t.id.clone(),
        batch_id: "b".into(),
        agent_type: "a".into(),
        title: "stored, never announced".into(),
        description: String::new(),
        estimated_revenue: 1.0,
        confidence_score: 0.5,
        priority: "low".into(),
        user_id: None,
        status: "pending".into(),
        created_at: now,
        updated_at: now,
    };
    let data = json!({"id": "sug_orphan", "title": "stored, never announced", "user_id": null});
    let announcement = AnnouncementRow {
        id: "ann_orphan".into(),
        tenant_id: t.id.clone(),
        event: "suggestion.created".into(),
        key: "sug_orphan".into(),
        data: data.clone(),
    };
    assert!(matches!(
        repo.create_suggestions(&t.id, &[row], &[], &[announcement], None)
            .await
            .unwrap(),
        ingest::repository::suggestions::CreateOutcome::Created
    ));

    // The background loop publishes it once the request's grace is over.
    let ev = next_event(&mut c, "suggestion.created").await;
    assert_eq!(ev["data"], data);
    c.assert_silent(Duration::from_millis(1500)).await;
}
