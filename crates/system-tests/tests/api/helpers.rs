use std::collections::HashMap;

use serde_json::{Value, json};
use switchboard_platform::shutdown::{self, ShutdownTrigger};
use switchboard_proto::token::{self, Claims};
use switchboard_test_support::{TestDatabase, WsClient, nats_url, random_suffix};

pub struct TestApp {
    pub ingest: String,
    pub gateway_port: u16,
    pub admin_token: String,
    pub http: reqwest::Client,
    /// The NATS every service of this app talks to.
    pub nats: String,
    /// Settings every service of this app starts with.
    vars: Vec<(String, String)>,
    // Dropped last: the services stop before their database goes.
    _stops: Vec<ShutdownTrigger>,
    _db: TestDatabase,
}

/// A running analytics instance; dropping it stops it.
pub struct AnalyticsApp {
    pub url: String,
    stop: ShutdownTrigger,
    done: tokio::task::JoinHandle<()>,
}

impl AnalyticsApp {
    /// Stops it and waits until it has.
    pub async fn stop(self) {
        self.stop.fire();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), self.done).await;
    }
}

pub struct Tenant {
    pub id: String,
    pub api_key: String,
    pub signing_secret: String,
}

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Starts ingest and one gateway on the shared NATS.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&nats_url(), &[]).await
}

/// Starts ingest and one gateway on `nats` (a test's own server, say), each
/// with the extra settings `vars`.
pub async fn spawn_app_with(nats: &str, vars: &[(&str, &str)]) -> TestApp {
    let extra: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let db = TestDatabase::create().await;
    let admin_token = format!(
        "{}{}{}{}",
        random_suffix(),
        random_suffix(),
        random_suffix(),
        random_suffix()
    );
    let mut vars = env(&[
        ("SB_LISTEN", "127.0.0.1:0".into()),
        ("SB_NATS_URL", nats.to_owned()),
        ("SB_DATABASE_URL", db.url.clone()),
        ("SB_ADMIN_TOKEN", admin_token.clone()),
    ]);
    vars.extend(extra.iter().cloned());
    let ingest = ingest::Application::build(ingest::Settings::from_source(&vars).unwrap())
        .await
        .expect("ingest starts");
    let ingest_port = ingest.port();
    let (ingest_stop, s) = shutdown::channel();
    tokio::spawn(ingest.run_until_stopped(s));
    let mut app = TestApp {
        ingest: format!("http://127.0.0.1:{ingest_port}"),
        gateway_port: 0,
        admin_token,
        http: reqwest::Client::new(),
        nats: nats.to_owned(),
        vars: extra,
        _stops: vec![ingest_stop],
        _db: db,
    };
    app.gateway_port = app.spawn_gateway().await;
    app
}

impl TestApp {
    /// Starts another gateway instance; returns its port.
    pub async fn spawn_gateway(&mut self) -> u16 {
        self.spawn_gateway_with(&[]).await
    }

    /// Starts another gateway instance with extra settings; returns its port.
    pub async fn spawn_gateway_with(&mut self, extra: &[(&str, &str)]) -> u16 {
        let mut vars = env(&[
            ("SB_LISTEN", "127.0.0.1:0".into()),
            ("SB_NATS_URL", self.nats.clone()),
        ]);
        vars.extend(self.vars.iter().cloned());
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let gw =
            room_gateway::Application::build(room_gateway::Settings::from_source(&vars).unwrap())
                .await
                .expect("gateway starts");
        let port = gw.port();
        let (stop, s) = shutdown::channel();
        tokio::spawn(gw.run_until_stopped(s));
        self._stops.push(stop);
        port
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.gateway_port)
    }

    pub async fn create_tenant(&self) -> Tenant {
        let res = self
            .http
            .post(format!("{}/v1/admin/tenants", self.ingest))
            .bearer_auth(&self.admin_token)
            .json(&json!({"name": "Test tenant"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        let tenant = Tenant {
            id: body["id"].as_str().unwrap().into(),
            api_key: body["api_key"].as_str().unwrap().into(),
            signing_secret: body["signing_secret"].as_str().unwrap().into(),
        };
        self.wait_for_tenant_on_gateway(&tenant).await;
        tenant
    }

    /// The gateway learns tenants through a KV watch; wait until it accepts
    /// this one's tokens.
    async fn wait_for_tenant_on_gateway(&self, tenant: &Tenant) {
        let token = tenant.token("probe", json!({}));
        for _ in 0..200 {
            if let Ok(mut c) = WsClient::connect(&self.ws_url(), &token).await {
                c.next_of_type("welcome").await;
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("gateway never learned tenant {}", tenant.id);
    }

    pub async fn post_event(&self, tenant: &Tenant, room: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/v1/tenants/{}/rooms/{room}/events",
                self.ingest, tenant.id
            ))
            .bearer_auth(&tenant.api_key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `POST …/events` with `events`; asserts `201` and answers the body.
    pub async fn post_batch(&self, tenant: &Tenant, events: Vec<Value>) -> Value {
        let res = self
            .http
            .post(format!("{}/v1/tenants/{}/events", self.ingest, tenant.id))
            .bearer_auth(&tenant.api_key)
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    /// A gateway's JSON endpoint (`/v1/stats`, `/v1/stats/hops`, `/readyz`).
    pub async fn gateway_json(&self, port: u16, path: &str) -> Value {
        self.http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn connect(&self, tenant: &Tenant, sub: &str, rooms: Value) -> WsClient {
        let mut c = WsClient::connect(&self.ws_url(), &tenant.token(sub, rooms))
            .await
            .expect("connection accepted");
        let welcome = c.next_frame().await;
        assert_eq!(welcome["type"], "welcome");
        c
    }
}

/// Starts a gateway whose shutdown the caller fires.
pub async fn spawn_gateway_with_stop() -> (u16, ShutdownTrigger) {
    let vars = env(&[
        ("SB_LISTEN", "127.0.0.1:0".into()),
        ("SB_NATS_URL", nats_url()),
        ("SB_DRAIN_SECS", "2".into()),
    ]);
    let gw = room_gateway::Application::build(room_gateway::Settings::from_source(&vars).unwrap())
        .await
        .expect("gateway starts");
    let port = gw.port();
    let (stop, s) = shutdown::channel();
    tokio::spawn(gw.run_until_stopped(s));
    (port, stop)
}

impl Tenant {
    pub fn claims(&self, sub: &str, rooms: Value, exp_in_s: i64) -> Claims {
        serde_json::from_value(json!({
            "sub": sub,
            "tenant": self.id,
            "exp": now() + exp_in_s,
            "iat": now(),
            "rooms": rooms,
        }))
        .unwrap()
    }

    pub fn token(&self, sub: &str, rooms: Value) -> String {
        token::sign(
            &self.claims(sub, rooms, 3600),
            self.signing_secret.as_bytes(),
        )
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Joins `room` and returns the `joined` frame.
pub async fn join(c: &mut WsClient, room: &str) -> Value {
    c.send_json(json!({"op": "join", "room": room, "id": format!("j-{room}")}))
        .await;
    let joined = c.next_frame().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["ref"], format!("j-{room}"));
    joined
}

/// Starts ingest reading time from `clock` (a manual clock in tests that
/// move quiet hours along), and one gateway.
pub async fn spawn_app_with_clock(clock: ingest::Clock) -> TestApp {
    let db = TestDatabase::create().await;
    let admin_token = format!(
        "{}{}{}{}",
        random_suffix(),
        random_suffix(),
        random_suffix(),
        random_suffix()
    );
    let mut app = TestApp {
        ingest: String::new(),
        gateway_port: 0,
        admin_token,
        http: reqwest::Client::new(),
        nats: nats_url(),
        vars: Vec::new(),
        _stops: Vec::new(),
        _db: db,
    };
    let (url, stop) = app.start_ingest(clock).await;
    app.ingest = url;
    app._stops.insert(0, stop);
    app.gateway_port = app.spawn_gateway().await;
    app
}

impl TestApp {
    async fn start_ingest(&self, clock: ingest::Clock) -> (String, ShutdownTrigger) {
        let mut vars = env(&[
            ("SB_LISTEN", "127.0.0.1:0".into()),
            ("SB_NATS_URL", self.nats.clone()),
            ("SB_DATABASE_URL", self._db.url.clone()),
            ("SB_ADMIN_TOKEN", self.admin_token.clone()),
        ]);
        vars.extend(self.vars.iter().cloned());
        let ingest = ingest::Application::build_with_clock(
            ingest::Settings::from_source(&vars).unwrap(),
            clock,
        )
        .await
        .expect("ingest starts");
        let port = ingest.port();
        let (stop, s) = shutdown::channel();
        tokio::spawn(ingest.run_until_stopped(s));
        (format!("http://127.0.0.1:{port}"), stop)
    }

    /// Starts an analytics instance on this app's database and NATS with
    /// the extra settings `extra`. Keep the answer for as long as it should
    /// run: dropping it stops it.
    pub async fn spawn_analytics(&self, extra: &[(&str, &str)]) -> AnalyticsApp {
        let mut vars = env(&[
            ("SB_LISTEN", "127.0.0.1:0".into()),
            ("SB_NATS_URL", self.nats.clone()),
            ("SB_DATABASE_URL", self._db.url.clone()),
        ]);
        vars.extend(self.vars.iter().cloned());
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let app = analytics::Application::build(analytics::Settings::from_source(&vars).unwrap())
            .await
            .expect("analytics starts");
        let port = app.port();
        let (stop, s) = shutdown::channel();
        let done = tokio::spawn(async move {
            let _ = app.run_until_stopped(s).await;
        });
        AnalyticsApp {
            url: format!("http://127.0.0.1:{port}"),
            stop,
            done,
        }
    }

    /// Stops ingest (the first service `spawn_app*` started) and starts a
    /// new one on the same database, reading time from `clock`.
    pub async fn restart_ingest(&mut self, clock: ingest::Clock) {
        let old = self._stops.remove(0);
        old.fire();
        drop(old);
        let (url, stop) = self.start_ingest(clock).await;
        self.ingest = url;
        self._stops.insert(0, stop);
    }

    /// The URL of this app's database (for tests that set up what a crashed
    /// process would have left behind).
    pub fn database_url(&self) -> &str {
        &self._db.url
    }

    /// Starts one more ingest instance on the same database and NATS;
    /// answers its base URL. It runs until the app is dropped.
    pub async fn spawn_extra_ingest(&mut self, clock: ingest::Clock) -> String {
        let (url, stop) = self.start_ingest(clock).await;
        self._stops.push(stop);
        url
    }

    /// A tenant API call: `path` is below `/v1/tenants/{tenant}`. Answers
    /// the status and the JSON body (`null` when there is none).
    pub async fn call(
        &self,
        tenant: &Tenant,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_with_key(&tenant.api_key, &tenant.id, method, path, body)
            .await
    }

    pub async fn call_with_key(
        &self,
        api_key: &str,
        tenant_id: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method,
                format!("{}/v1/tenants/{tenant_id}{path}", self.ingest),
            )
            .bearer_auth(api_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, body)
    }
}

/// Every domain event stored on `subject` so far (read with an ordered
/// consumer; waits at most a second for the next one).
pub async fn domain_events(nats: &str, subject: &str) -> Vec<switchboard_proto::pb::DomainEvent> {
    use futures_util::StreamExt;
    let client = async_nats::connect(nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("SB_DOMAIN").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending;
    let mut out = Vec::new();
    if pending == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.unwrap();
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(std::time::Duration::from_secs(1), messages.next()).await
    {
        out.push(
            <switchboard_proto::pb::DomainEvent as prost::Message>::decode(m.payload.clone())
                .unwrap(),
        );
        if m.info().is_ok_and(|i| i.pending == 0) {
            break;
        }
    }
    out
}
