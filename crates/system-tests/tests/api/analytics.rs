//! analytics against the real services: a fixture of suggestions and
//! responses across 120 days goes in through ingest, and every figure of
//! every range equals the one computed here from the fixture itself;
//! redelivered domain events change nothing; a dashboard that applies
//! `analytics.updated` ends where REST is; system and tenant metrics,
//! alerts, tasks, the connection audit and dead letters. Each test runs
//! its own nats-server, so its durable consumer reads only its own events.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use prost::Message as _;
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_proto::facts::TaskFact;
use switchboard_proto::pb;
use switchboard_test_support::NatsServer;

use crate::helpers::{AnalyticsApp, Tenant, TestApp, join, spawn_app_with};

/// One suggestion of the fixture, and the status it ends in.
#[derive(Clone)]
struct Sug {
    created_at: DateTime<Utc>,
    agent: &'static str,
    priority: &'static str,
    revenue: f64,
    confidence: f64,
    status: &'static str,
}

const AGENTS: [&str; 4] = ["pricing", "churn", "upsell", "fraud"];
const PRIORITIES: [&str; 4] = ["low", "medium", "high", "critical"];
const STATUSES: [&str; 5] = ["pending", "executed", "rejected", "paused", "executed"];

fn fixture(n: usize, now: DateTime<Utc>) -> Vec<Sug> {
    (0..n)
        .map(|i| Sug {
            // Across 120 days, today included, at varied hours.
            created_at: now - Days::days((i % 120) as i64) - Days::minutes((i * 7 % 600) as i64),
            agent: AGENTS[(i * 3 + i / 7) % 4],
            priority: PRIORITIES[(i * 5 + 1) % 4],
            revenue: ((i * 37) % 1000) as f64 + 0.25 * (i % 4) as f64,
            confidence: ((i * 13) % 100) as f64 / 100.0,
            status: STATUSES[i % 5],
        })
        .collect()
}

/// Posts `items` through ingest and moves each to its status with
/// responses; answers nothing (analytics learns it from domain events).
async fn post_fixture(app: &TestApp, t: &Tenant, items: &[Sug]) {
    let mut ids = Vec::new();
    for chunk in items.chunks(100) {
        let body: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "agent_type": s.agent, "title": format!("s{i}"), "description": "",
                    "estimated_revenue": s.revenue, "confidence_score": s.confidence,
                    "priority": s.priority, "created_at": s.created_at.to_rfc3339(),
                })
            })
            .collect();
        let (status, answer) = app
            .call(
                t,
                Method::POST,
                "/suggestions",
                Some(json!({"suggestions": body})),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        ids.extend(
            answer["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned()),
        );
    }
    for (action, status) in [
        ("execute", "executed"),
        ("reject", "rejected"),
        ("pause", "paused"),
    ] {
        let targets: Vec<&String> = ids
            .iter()
            .zip(items)
            .filter(|(_, s)| s.status == status)
            .map(|(id, _)| id)
            .collect();
        for chunk in targets.chunks(400) {
            let (code, answer) = app
                .call(
                    t,
                    Method::POST,
                    "/suggestions/responses",
                    Some(json!({"suggestion_ids": chunk, "action": action, "user_id": "u1"})),
                )
                .await;
            assert_eq!(code, 200, "{answer}");
            assert_eq!(answer["succeeded"], chunk.len(), "{answer}");
        }
    }
}

/// The figures of DESIGN.md §4, computed from the fixture alone.
fn expected(items: &[Sug], range: &str, now: DateTime<Utc>) -> Value {
    let today = now.date_naive();
    let start: Option<NaiveDate> = match range {
        "7d" => Some(today - Days::days(6)),
        "30d" => Some(today - Days::days(29)),
        "90d" => Some(today - Days::days(89)),
        _ => None,
    };
    let chosen: Vec<&Sug> = items
        .iter()
        .filter(|s| start.is_none_or(|d| s.created_at.date_naive() >= d))
        .collect();
    let count = |st: &str| chosen.iter().filter(|s| s.status == st).count();
    let (executed, rejected) = (count("executed"), count("rejected"));
    let revenue: f64 = chosen.iter().map(|s| s.revenue).sum();
    let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { sum / n as f64 };
    let mut agents: BTreeMap<&str, Vec<&Sug>> = BTreeMap::new();
    for s in &chosen {
        agents.entry(s.agent).or_default().push(s);
    }
    let mut by_agent: Vec<Value> = agents
        .iter()
        .map(|(a, v)| {
            json!({"agent_type": a, "count": v.len(),
                   "avg_confidence": mean(v.iter().map(|s| s.confidence).sum(), v.len()),
                   "total_revenue": v.iter().map(|s| s.revenue).sum::<f64>()})
        })
        .collect();
    by_agent.sort_by(|a, b| {
        b["count"]
            .as_u64()
            .cmp(&a["count"].as_u64())
            .then_with(|| a["agent_type"].as_str().cmp(&b["agent_type"].as_str()))
    });
    let by_priority: Vec<Value> = ["critical", "high", "medium", "low"]
        .iter()
        .map(
            |p| json!({"priority": p, "count": chosen.iter().filter(|s| s.priority == *p).count()}),
        )
        .collect();
    let first = start.or_else(|| chosen.iter().map(|s| s.created_at.date_naive()).min());
    let timeline: Vec<Value> = match first {
        None => Vec::new(),
        Some(first) => first
            .iter_days()
            .take_while(|d| *d <= today)
            .map(|d| {
                let day: Vec<&&Sug> = chosen
                    .iter()
                    .filter(|s| s.created_at.date_naive() == d)
                    .collect();
                json!({"date": d.format("%Y-%m-%d").to_string(), "count": day.len(),
                       "executed": day.iter().filter(|s| s.status == "executed").count(),
                       "rejected": day.iter().filter(|s| s.status == "rejected").count()})
            })
            .collect(),
    };
    json!({
        "total_suggestions": chosen.len(),
        "pending_count": count("pending"),
        "executed_count": executed,
        "rejected_count": rejected,
        "paused_count": count("paused"),
        "total_revenue_estimate": revenue,
        "executed_revenue": chosen.iter().filter(|s| s.status == "executed").map(|s| s.revenue).sum::<f64>(),
        "avg_confidence": mean(chosen.iter().map(|s| s.confidence).sum(), chosen.len()),
        "acceptance_rate": if executed + rejected == 0 { 0.0 } else { executed as f64 / (executed + rejected) as f64 },
        "by_agent_type": by_agent,
        "by_priority": by_priority,
        "timeline": timeline,
    })
}

/// Equal, numbers to 1e-9 (relative for large ones): sums of floats
/// depend on their order.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

async fn figures(app: &TestApp, a: &AnalyticsApp, t: &Tenant, range: &str) -> (Value, u64) {
    let res = app
        .http
        .get(format!(
            "{}/v1/tenants/{}/analytics?time_range={range}",
            a.url, t.id
        ))
        .bearer_auth(&t.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let version = res.headers()["sb-figures-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (res.json().await.unwrap(), version)
}

/// Waits until `range`'s figures of `t` equal `want`; panics with the
/// last answer otherwise.
async fn wait_for(app: &TestApp, a: &AnalyticsApp, t: &Tenant, range: &str, want: &Value) {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = figures(app, a, t, range).await.0;
        if same(&last, want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{range}: figures never matched.\ngot:  {last}\nwant: {want}");
}

async fn app_with_nats() -> (NatsServer, TestApp) {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(&nats.url, &[]).await;
    (nats, app)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_figure_of_every_range_is_exact_and_survives_redelivery() {
    let (nats, app) = app_with_nats().await;
    let a = app.spawn_analytics(&[]).await;
    let (t, empty, one) = (
        app.create_tenant().await,
        app.create_tenant().await,
        app.create_tenant().await,
    );
    let now = Utc::now();
    let items = fixture(240, now);
    post_fixture(&app, &t, &items).await;
    let rejected: Vec<Sug> = fixture(3, now)
        .into_iter()
        .map(|s| Sug {
            status: "rejected",
            ..s
        })
        .collect();
    post_fixture(&app, &one, &rejected).await;

    for range in ["7d", "30d", "90d", "all"] {
        wait_for(&app, &a, &t, range, &expected(&items, range, now)).await;
        wait_for(&app, &a, &one, range, &expected(&rejected, range, now)).await;
        // No figure of another tenant: the empty one has none.
        wait_for(&app, &a, &empty, range, &expected(&[], range, now)).await;
    }
    let (before, version) = figures(&app, &a, &t, "all").await;
    assert!(version > 0);

    // Every domain event again: the consumer is deleted and analytics
    // started anew, so the whole stream is applied a second time.
    a.stop().await;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let stream = js.get_stream("SB_DOMAIN").await.unwrap();
    stream.delete_consumer("analytics").await.unwrap();
    let a = app.spawn_analytics(&[]).await;
    let mut caught_up = false;
    for _ in 0..200 {
        if let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("analytics")
            .await
            && let Ok(info) = c.info().await
            && info.num_pending == 0
            && info.num_ack_pending == 0
            && info.delivered.stream_sequence > 0
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the new consumer never caught up");
    let (after, again) = figures(&app, &a, &t, "all").await;
    assert!(
        same(&after, &before),
        "redelivery changed the figures:\n{after}\n{before}"
    );
    assert_eq!(again, version);
    for range in ["7d", "30d", "90d"] {
        wait_for(&app, &a, &t, range, &expected(&items, range, now)).await;
    }
}

/// Applies an `analytics.updated` range change to a dashboard's copy, the
/// way DESIGN's contract says (written here on its own, not with the
/// service's code).
fn apply(fig: &mut Value, change: &Value) {
    if let Some(f) = change["figures"].as_object() {
        for (k, v) in f {
            fig[k] = v.clone();
        }
    }
    if let Some(a) = change.get("by_agent_type") {
        let mut list: Vec<Value> = fig["by_agent_type"].as_array().cloned().unwrap_or_default();
        for r in a["remove"].as_array().into_iter().flatten() {
            list.retain(|x| x["agent_type"] != *r);
        }
        for s in a["set"].as_array().into_iter().flatten() {
            list.retain(|x| x["agent_type"] != s["agent_type"]);
            list.push(s.clone());
        }
        list.sort_by(|x, y| {
            y["count"]
                .as_u64()
                .cmp(&x["count"].as_u64())
                .then_with(|| x["agent_type"].as_str().cmp(&y["agent_type"].as_str()))
        });
        fig["by_agent_type"] = json!(list);
    }
    if let Some(p) = change.get("by_priority") {
        fig["by_priority"] = p.clone();
    }
    if let Some(t) = change.get("timeline") {
        let mut rows: BTreeMap<String, Value> = fig["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["date"].as_str().unwrap().to_owned(), d.clone()))
            .collect();
        for r in t["set"].as_array().into_iter().flatten() {
            rows.insert(r["date"].as_str().unwrap().to_owned(), r.clone());
        }
        let day = |v: &Value| {
            v.as_str()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        };
        fig["timeline"] = match (day(&t["from"]), day(&t["to"])) {
            (Some(from), Some(to)) => json!(
                from.iter_days()
                    .take_while(|d| *d <= to)
                    .map(|d| {
                        let date = d.format("%Y-%m-%d").to_string();
                        rows.remove(&date).unwrap_or(
                            json!({"date": date, "count": 0, "executed": 0, "rejected": 0}),
                        )
                    })
                    .collect::<Vec<_>>()
            ),
            _ => json!([]),
        };
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dashboard_applying_analytics_updated_ends_equal_to_the_rest_answer() {
    let (_nats, app) = app_with_nats().await;
    let a = app
        .spawn_analytics(&[("SB_ANALYTICS_UPDATE_EVERY", "200ms")])
        .await;
    let t = app.create_tenant().await;
    let now = Utc::now();
    let items = fixture(60, now);
    post_fixture(&app, &t, &items[..30]).await;
    wait_for(&app, &a, &t, "30d", &expected(&items[..30], "30d", now)).await;

    // The dashboard: joins first, then loads its snapshot.
    let mut c = app
        .connect(&t, "dash", json!({"analytics": ["read"]}))
        .await;
    join(&mut c, "analytics").await;
    let mut held: BTreeMap<&str, (Value, u64)> = BTreeMap::new();
    for range in ["7d", "30d", "90d", "all"] {
        held.insert(range, figures(&app, &a, &t, range).await);
    }
    post_fixture(&app, &t, &items[30..]).await;
    // Half of the new ones are older than 30 days: "all" shows them all.
    let want = expected(&items, "all", now);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !same(&held["all"].0, &want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dashboard never caught up: {}",
            held["all"].0
        );
        let f = match c.next_frame_within(Duration::from_secs(2)).await {
            Some(Ok(f)) => f,
            _ => continue,
        };
        if f["type"] != "event" || f["event"] != "analytics.updated" {
            continue;
        }
        let (base, version) = (
            f["data"]["base"].as_u64().unwrap(),
            f["data"]["version"].as_u64().unwrap(),
        );
        for (range, (fig, v)) in held.iter_mut() {
            if version <= *v {
                continue;
            }
            assert!(
                base <= *v,
                "an update from {base} reached a dashboard at {v}: it would reload"
            );
            if let Some(change) = f["data"]["ranges"].get(*range) {
                apply(fig, change);
            }
            *v = version;
        }
    }
    for range in ["7d", "30d", "90d", "all"] {
        let (rest, _) = figures(&app, &a, &t, range).await;
        assert!(
            same(&held[range].0, &rest),
            "{range}: dashboard {} != REST {rest}",
            held[range].0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_right_callers_read_figures_and_bad_queries_name_the_rule() {
    let (_nats, app) = app_with_nats().await;
    let a = app.spawn_analytics(&[]).await;
    let t = app.create_tenant().await;
    let other = app.create_tenant().await;
    let get = |path: String, bearer: String| {
        app.http
            .get(format!("{}/v1/tenants/{}{path}", a.url, t.id))
            .bearer_auth(bearer)
            .send()
    };
    let res = get("/analytics?time_range=1y".into(), t.api_key.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["field"], "time_range");
    assert!(
        p["rule"].as_str().unwrap().contains("7d, 30d, 90d, all"),
        "{p}"
    );
    let res = get("/analytics/tasks?bucket=week".into(), t.api_key.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "bucket");
    let res = get("/connections?cursor=nope".into(), t.api_key.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "cursor");

    // A browser token with read on room analytics reads; others do not.
    let reader = t.token("u1", json!({"analytics": ["read"]}));
    assert_eq!(
        get("/analytics".into(), reader).await.unwrap().status(),
        200
    );
    let res = get(
        "/analytics".into(),
        t.token("u1", json!({"lobby": ["read"]})),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    assert!(
        res.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("'read' on room 'analytics'")
    );
    assert_eq!(
        get("/analytics".into(), other.api_key.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get("/analytics".into(), "sk_nope".into())
            .await
            .unwrap()
            .status(),
        401
    );
    let res = get(
        "/connections".into(),
        t.token("u1", json!({"analytics": ["read", "admin"]})),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "the audit takes the API key");
}

#[tokio::test(flavor = "multi_thread")]
async fn system_metrics_reach_admins_every_interval_and_tenants_see_only_their_own() {
    let (_nats, app) = app_with_nats().await;
    let ops = app.create_tenant().await;
    let t = app.create_tenant().await;
    let other = app.create_tenant().await;
    let _a = app
        .spawn_analytics(&[("SB_SYSTEM_TENANT", &ops.id), ("SB_METRICS_EVERY", "1s")])
        .await;

    let mut user = app
        .connect(&t, "u1", json!({"metrics": ["read"], "lobby": ["read"]}))
        .await;
    join(&mut user, "lobby").await;
    join(&mut user, "metrics").await;
    let mut stranger = app.connect(&other, "x", json!({"lobby": ["read"]})).await;
    join(&mut stranger, "lobby").await;
    let mut seen = None;
    for _ in 0..10 {
        let m = user.next_of_type("event").await;
        if m["event"] == "metrics" && m["data"]["connections"] == 1 {
            seen = Some(m);
            break;
        }
    }
    let m = seen.expect("the tenant's own metrics");
    assert_eq!(m["data"]["rooms"], 2, "{m}");
    assert!(m["data"]["tasks_running"].is_u64());

    let mut nosy = app
        .connect(&ops, "nosy", json!({"system:*": ["read"]}))
        .await;
    nosy.send_json(json!({"op": "join", "room": "system:metrics", "id": 1}))
        .await;
    let e = nosy.next_of_type("error").await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let mut admin = app
        .connect(&ops, "op", json!({"system:*": ["read", "admin"]}))
        .await;
    join(&mut admin, "system:metrics").await;
    let mut at = Vec::new();
    while at.len() < 2 {
        let m = admin.next_of_type("event").await;
        if m["event"] != "system.metrics" {
            continue;
        }
        assert!(
            m["data"]["total"]["connections"].as_u64().unwrap() >= 3,
            "{m}"
        );
        assert_eq!(m["data"]["gateways"].as_array().unwrap().len(), 1, "{m}");
        at.push(tokio::time::Instant::now());
    }
    let gap = at[1] - at[0];
    assert!(
        gap > Duration::from_millis(500) && gap < Duration::from_millis(2500),
        "{gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_that_stops_reporting_raises_an_alert_and_its_return_resolves_it() {
    let nats = NatsServer::start().await;
    let app = spawn_app_with(&nats.url, &[]).await;
    let ops = app.create_tenant().await;
    let _a = app
        .spawn_analytics(&[
            ("SB_SYSTEM_TENANT", &ops.id),
            ("SB_METRICS_EVERY", "500ms"),
            ("SB_ALERT_GATEWAY_SILENT", "1s"),
        ])
        .await;
    let mut admin = app
        .connect(&ops, "op", json!({"system:alerts": ["read", "admin"]}))
        .await;
    join(&mut admin, "system:alerts").await;
    // A gateway that reports a while, then goes silent without saying so.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let report = |at_ms: i64| {
        serde_json::to_vec(&switchboard_proto::facts::GatewayStats {
            gateway: "gw_ghost".into(),
            at_ms,
            ..Default::default()
        })
        .unwrap()
    };
    for _ in 0..3 {
        client
            .publish(
                "sb.stats.gateway.gw_ghost",
                report(Utc::now().timestamp_millis()).into(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let raised = loop {
        let e = admin.next_of_type("event").await;
        if e["event"] == "alert.triggered" && e["data"]["gateway"] == "gw_ghost" {
            break e;
        }
    };
    assert_eq!(raised["data"]["severity"], "high");
    assert!(
        raised["seq"].as_u64().is_some(),
        "alerts are stored: {raised}"
    );
    client
        .publish(
            "sb.stats.gateway.gw_ghost",
            report(Utc::now().timestamp_millis()).into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    loop {
        let e = admin.next_of_type("event").await;
        if e["event"] == "alert.resolved" && e["data"]["gateway"] == "gw_ghost" {
            break;
        }
    }
    // An operator who was away gets both from the room's history.
    let mut late = app
        .connect(&ops, "op2", json!({"system:alerts": ["read", "admin"]}))
        .await;
    late.send_json(json!({"op": "join", "room": "system:alerts", "since": 0}))
        .await;
    late.next_of_type("joined").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = late.next_of_type("event").await;
        if e["data"]["gateway"] == "gw_ghost" {
            seen.push(e["event"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, ["alert.triggered", "alert.resolved"]);
}

fn task(
    id: &str,
    workflow: &str,
    agent: &str,
    status: &str,
    created: i64,
    dur: Option<i64>,
) -> TaskFact {
    TaskFact {
        task_id: id.into(),
        workflow: workflow.into(),
        agent: Some(agent.into()),
        status: status.into(),
        created_at_ms: created,
        started_at_ms: dur.map(|_| created),
        finished_at_ms: dur.map(|d| created + d),
        updated_at_ms: created + dur.unwrap_or(0),
        tokens: 100,
        cost: 0.5,
    }
}

async fn publish_domain(nats: &str, tenant: &str, name: &str, data: Vec<u8>) {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
    let ev = pb::DomainEvent {
        id: format!("dom_{}", uuid_like()),
        tenant: tenant.into(),
        name: name.into(),
        data,
        source: "test".into(),
        ts_unix_ms: Utc::now().timestamp_millis(),
    };
    js.publish(format!("sb.dom.{tenant}.{name}"), ev.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

fn uuid_like() -> String {
    format!("{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    h.finish() as u128
}

#[tokio::test(flavor = "multi_thread")]
async fn task_figures_and_dead_letters() {
    let (nats, app) = app_with_nats().await;
    let a = app.spawn_analytics(&[]).await;
    let t = app.create_tenant().await;
    let now = Utc::now().timestamp_millis();
    // Garbage first: counted, set aside, and the rest still applied.
    publish_domain(&nats.url, &t.id, "task.completed", b"not json".to_vec()).await;
    let facts = [
        task(
            "t1",
            "chat.query",
            "sql-gen",
            "completed",
            now - 3_600_000,
            Some(1_000),
        ),
        task(
            "t2",
            "chat.query",
            "sql-gen",
            "failed",
            now - 1_800_000,
            Some(3_000),
        ),
        task(
            "t3",
            "report",
            "writer",
            "completed",
            now - 600_000,
            Some(2_000),
        ),
        task("t4", "report", "writer", "running", now - 60_000, None),
    ];
    for f in &facts {
        let name = format!(
            "task.{}",
            if f.status == "running" {
                "started"
            } else {
                &f.status
            }
        );
        publish_domain(&nats.url, &t.id, &name, serde_json::to_vec(f).unwrap()).await;
    }
    let url = format!(
        "{}/v1/tenants/{}/analytics/tasks?time_range=24h",
        a.url, t.id
    );
    let mut got = Value::Null;
    for _ in 0..100 {
        got = app
            .http
            .get(&url)
            .bearer_auth(&t.api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if got["total"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got["total"], 4, "{got}");
    assert_eq!(got["bucket"], "hour");
    assert_eq!(got["by_status"]["completed"], 2);
    assert_eq!(got["by_status"]["running"], 1);
    assert!(same(&got["success_rate"], &json!(2.0 / 3.0)), "{got}");
    assert_eq!(got["duration_ms"]["p50"], 2000.0);
    assert_eq!(got["duration_ms"]["p99"], 3000.0);
    assert_eq!(got["tokens"], 400);
    assert_eq!(got["by_workflow"][0]["name"], "chat.query");
    assert_eq!(
        got["timeline"].as_array().unwrap().len(),
        24,
        "zero hours included"
    );
    let counted: u64 = got["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 4);

    let metrics = app
        .http
        .get(format!("{}/metrics", a.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchboard_analytics_dead_letters_total 1"),
        "{metrics}"
    );
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let mut dead = js.get_stream("SB_DEAD").await.unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 1);
    let m = dead
        .get_first_raw_message_by_subject("sb.dead.analytics", 1)
        .await
        .unwrap();
    assert_eq!(
        m.headers.get("Sb-Dead-Subject").unwrap().as_str(),
        format!("sb.dom.{}.task.completed", t.id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_audit_lists_who_connected_from_where_and_for_how_long() {
    let (_nats, app) = app_with_nats().await;
    let a = app.spawn_analytics(&[]).await;
    let t = app.create_tenant().await;
    let mut first = app.connect(&t, "ann", json!({"lobby": ["read"]})).await;
    join(&mut first, "lobby").await;
    let mut second = app.connect(&t, "bob", json!({"lobby": ["read"]})).await;
    join(&mut second, "lobby").await;
    drop(first);
    let list = |query: &'static str| {
        let url = format!("{}/v1/tenants/{}/connections{query}", a.url, t.id);
        let http = app.http.clone();
        let key = t.api_key.clone();
        async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut closed = Value::Null;
    for _ in 0..100 {
        closed = list("?active=false&sub=ann").await;
        if closed["items"].as_array().is_some_and(|i| i.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ann = &closed["items"][0];
    assert_eq!(ann["sub"], "ann", "{closed}");
    assert_eq!(ann["ip"], "127.0.0.1");
    assert_eq!(ann["active"], false);
    assert!(ann["close_code"].is_i64() && ann["closed_at"].is_string());
    let active = list("?active=true").await;
    let subs: Vec<&str> = active["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sub"].as_str().unwrap())
        .collect();
    assert!(subs.contains(&"bob") && !subs.contains(&"ann"), "{active}");
    // Pages, newest first.
    let page = list("?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("more follow")
        .to_owned();
    let next: Value = app
        .http
        .get(format!(
            "{}/v1/tenants/{}/connections?limit=1&cursor={cursor}",
            a.url, t.id
        ))
        .bearer_auth(&t.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(next["items"][0]["conn_id"], page["items"][0]["conn_id"]);
}
