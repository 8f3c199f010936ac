//! The HTTP pieces every service mounts: `/healthz`, `/readyz`, `/metrics`,
//! and extractor configs that turn malformed input into problem+json naming
//! the field.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::metrics::SharedRegistry;
use crate::problem::Problem;
use crate::telemetry;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// What `/readyz` checks: named probes, each `Ok` when ready.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    pub fn check<F, Fut>(mut self, name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(f()))));
        self
    }

    async fn run(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (name, check) in &self.checks {
            let v = match check().await {
                Ok(()) => serde_json::Value::String("ok".into()),
                Err(e) => serde_json::Value::String(e),
            };
            out.insert((*name).into(), v);
        }
        serde_json::Value::Object(out)
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let checks = readiness.run().await;
    let ready = checks
        .as_object()
        .is_some_and(|m| m.values().all(|v| v == "ok"));
    let body = serde_json::json!({"ready": ready, "checks": checks});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(registry: web::Data<SharedRegistry>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(registry.encode())
}

/// Mounts `/healthz`, `/readyz` and `/metrics`.
pub fn operational_routes(
    cfg: &mut web::ServiceConfig,
    readiness: Readiness,
    registry: SharedRegistry,
) {
    cfg.app_data(web::Data::new(readiness))
        .app_data(web::Data::new(registry))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// JSON bodies: a syntax or shape error becomes a `400` problem whose detail
/// is serde's (it names the missing or mistyped field and where).
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .error_handler(|err, _req: &HttpRequest| {
            let detail = match &err {
                actix_web::error::JsonPayloadError::Overflow { limit }
                | actix_web::error::JsonPayloadError::OverflowKnownLength { limit, .. } => {
                    format!("body is larger than {limit} bytes")
                }
                actix_web::error::JsonPayloadError::Deserialize(e) => {
                    format!("body is not valid JSON for this endpoint: {e}")
                }
                other => format!("body could not be read as JSON: {other}"),
            };
            Problem::bad_request(detail).into()
        })
}

/// Query strings: a bad parameter becomes a `400` problem naming it.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        Problem::bad_request(format!("query string is invalid: {err}")).into()
    })
}

/// Path segments that do not parse become a `404`-free `400` problem.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _req| Problem::bad_request(format!("path is invalid: {err}")).into())
}

/// Unknown routes answer problem+json too.
pub async fn not_found() -> Result<HttpResponse, Problem> {
    Err(Problem::not_found(
        "no such endpoint; see the README for the API",
    ))
}

impl Readiness {
    /// Ready while the NATS connection is up.
    pub fn nats(self, bus: &crate::nats::Bus) -> Self {
        let bus = bus.clone();
        self.check("nats", move || {
            let ok = bus.is_connected();
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("disconnected".into())
                }
            }
        })
    }

    /// Ready while PostgreSQL answers.
    pub fn postgres(self, pool: &crate::db::PgPool) -> Self {
        let pool = pool.clone();
        self.check("postgres", move || {
            let pool = pool.clone();
            async move {
                if crate::db::ping(&pool).await {
                    Ok(())
                } else {
                    Err("unreachable".into())
                }
            }
        })
    }
}

/// Runs `server` until `shutdown`, then stops it gracefully and drains
/// NATS so that nothing published is left unsent.
pub async fn serve_until_stopped(
    server: actix_web::dev::Server,
    mut shutdown: crate::Shutdown,
    nats: async_nats::Client,
) {
    let handle = server.handle();
    let running = tokio::spawn(server);
    shutdown.wait().await;
    handle.stop(true).await;
    let _ = running.await;
    if let Err(e) = nats.drain().await {
        tracing::warn!(error = %e, "draining NATS failed");
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// A resource's path pattern, as its app data (`web::resource(p)
/// .app_data(RoutePattern(p))`): [`observe`] labels and names requests with
/// it without matching the path again (the router's regexes cost a tenth
/// of a small request).
#[derive(Clone, Copy, Debug)]
pub struct RoutePattern(pub &'static str);

/// A method's name as a `&'static str` (labels, `Allow` headers).
pub fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Requests counted by route (the path pattern, `unmatched` for none),
/// method and status, and their latency by route and method.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Latency,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            // 100 µs to ~3.3 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        }
        Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(histogram),
        }
    }
}

impl HttpMetrics {
    /// Registers `http_requests` and `http_request_duration_seconds` under
    /// `prefix` (`switchboard_ingest`).
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        let r = registry.sub_registry_with_prefix(prefix);
        r.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            self.requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer, by route and method",
            prometheus_client::registry::Unit::Seconds,
            self.seconds.clone(),
        );
    }

    fn record(&self, method: &'static str, route: &'static str, status: u16, seconds: f64) {
        self.seconds
            .get_or_create(&RouteLabels { method, route })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// Middleware for every service (`App::wrap(from_fn(observe))`, with
/// [`HttpMetrics`] as app data): counts and times each request, and puts
/// its handling in the caller's trace (`traceparent`) — as a server span
/// when traces are exported, else as the trace the messages it publishes
/// continue.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let parent =
        header("traceparent").and_then(|tp| telemetry::parse_traceparent(tp, header("tracestate")));
    let method = req.method().clone();
    let res = if telemetry::exporting() {
        // The span's name is fixed when it starts: the route is looked up
        // first (routing itself comes later, inside `next`).
        let route = req.resource_map().match_pattern(req.path());
        let route = route.as_deref();
        let name = match route {
            Some(r) => format!("{method} {r}"),
            None => method.to_string(),
        };
        let span = tracing::info_span!(
            "http.request",
            otel.kind = "server",
            otel.name = %name,
            http.request.method = %method,
            http.route = route.unwrap_or(""),
            url.path = %req.path(),
            http.response.status_code = Empty,
            otel.status_code = Empty,
        );
        if let Some(p) = parent {
            telemetry::set_parent(&span, p);
        }
        let res = next.call(req).instrument(span.clone()).await;
        if let Ok(r) = &res {
            span.record("http.response.status_code", r.status().as_u16());
            if r.status().is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        res
    } else {
        telemetry::with_request_trace(parent, next.call(req)).await
    };
    if let (Some(m), Ok(r)) = (metrics, &res) {
        // Unlabelled resources (and no resource) share a label: labels
        // come from the code, never from what a client sent.
        let route = r
            .request()
            .app_data::<RoutePattern>()
            .map_or("unmatched", |p| p.0);
        m.record(
            method_label(&method),
            route,
            r.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    res
}

/// One endpoint of a service's API: how it is mounted, and what its
/// `/openapi.json` must list.
pub struct Endpoint {
    pub method: actix_web::http::Method,
    pub path: &'static str,
    pub mount: fn(actix_web::Route) -> actix_web::Route,
}

impl Endpoint {
    pub fn new(
        method: actix_web::http::Method,
        path: &'static str,
        mount: fn(actix_web::Route) -> actix_web::Route,
    ) -> Self {
        Self {
            method,
            path,
            mount,
        }
    }
}

/// Mounts `endpoints`, one resource per path in the order given (the
/// router tries them in that order): a method a path does not take is
/// answered `405` with `Allow` naming those it does; each resource carries
/// its [`RoutePattern`].
pub fn mount(cfg: &mut web::ServiceConfig, endpoints: Vec<Endpoint>) {
    let mut paths: Vec<(&'static str, Vec<Endpoint>)> = Vec::new();
    for e in endpoints {
        match paths.iter_mut().find(|(p, _)| *p == e.path) {
            Some((_, list)) => list.push(e),
            None => paths.push((e.path, vec![e])),
        }
    }
    for (path, list) in paths {
        let allow: Vec<&'static str> = list.iter().map(|e| method_label(&e.method)).collect();
        let mut resource = web::resource(path).app_data(RoutePattern(path));
        for e in list {
            resource = resource.route((e.mount)(web::route().method(e.method)));
        }
        cfg.service(resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move {
                Err::<HttpResponse, _>(Problem::method_not_allowed(req.method().as_str(), &allow))
            }
        })));
    }
}

/// A service's OpenAPI document (app data for [`openapi_document`]).
#[derive(Clone, Copy)]
pub struct OpenApiDocument(pub &'static str);

/// `GET /openapi.json`.
pub async fn openapi_document(doc: web::Data<OpenApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0)
}

/// The `GET /openapi.json` endpoint (the document is [`OpenApiDocument`]
/// app data).
pub fn openapi_endpoint() -> Endpoint {
    Endpoint::new(actix_web::http::Method::GET, "/openapi.json", |r| {
        r.to(openapi_document)
    })
}

/// Checks (in a service's unit test) that `doc` documents every endpoint,
/// with its responses, and `400` and `422` for every one that takes a body.
pub fn assert_documented(doc: &str, endpoints: Vec<Endpoint>) {
    let doc: serde_json::Value = serde_json::from_str(doc).expect("openapi.json is valid JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "openapi.json names an OpenAPI 3 version"
    );
    for e in endpoints {
        let method = e.method.as_str().to_lowercase();
        let op = &doc["paths"][e.path][&method];
        assert!(
            op.is_object(),
            "{} {} is not in openapi.json",
            e.method,
            e.path
        );
        assert!(
            op["responses"].is_object(),
            "{} {} documents no responses",
            e.method,
            e.path
        );
        if op["requestBody"].is_object() {
            for status in ["400", "422"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{} {} takes a body but does not document {status}",
                    e.method,
                    e.path
                );
            }
        }
    }
}
