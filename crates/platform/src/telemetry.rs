//! Logs and traces. Logs go to stdout (`RUST_LOG`, default `info`; JSON when
//! `SB_LOG_FORMAT=json`). Traces are exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set: then every request, publish and fan-out is a span.
//!
//! Every NATS message carries a W3C `traceparent` either way
//! ([`traceparent`]): the current span's when spans are recorded; without
//! an exporter no span is built (they would cost the hot path for nothing),
//! and a message gets a child of the trace its HTTP request came with
//! ([`with_request_trace`]) — or a new trace — so a caller's trace id still
//! reaches every service.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Whether spans are recorded and exported (an OTLP endpoint was given).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// True when spans are exported: hot paths build spans only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Flushes traces when dropped; keep it alive in `main`.
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl TelemetryGuard {
    /// Exports every span ended so far (tests wait for their spans).
    pub fn flush(&self) {
        if let Some(p) = &self.0
            && let Err(e) = p.force_flush()
        {
            eprintln!("telemetry: flushing traces failed: {e}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces failed: {e}");
        }
    }
}

/// Installs logging and tracing for `service`, exporting spans when the
/// OTLP environment variables name an endpoint. Safe to call more than once
/// (tests do): later calls keep the first subscriber.
pub fn init(service: &'static str) -> TelemetryGuard {
    let configured = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()));
    install(service, configured.then_some(None))
}

/// [`init`], exporting to the OTLP/HTTP receiver at `endpoint`
/// (`http://host:port`; spans go to `{endpoint}/v1/traces`) whatever the
/// environment says.
pub fn init_with_endpoint(service: &'static str, endpoint: &str) -> TelemetryGuard {
    install(
        service,
        Some(Some(format!(
            "{}/v1/traces",
            endpoint.trim_end_matches('/')
        ))),
    )
}

/// `export`: `None` exports nothing; `Some(None)` exports where the
/// environment says; `Some(Some(url))` to that URL.
fn install(service: &'static str, export: Option<Option<String>>) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SB_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };

    let provider = export.and_then(|url| match otlp_provider(service, url) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("telemetry: OTLP exporter not started: {e}");
            None
        }
    });
    // Spans are info-level; RUST_LOG filters logs, not what is traced.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(LevelFilter::INFO)
            .boxed()
    });
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    TelemetryGuard(provider)
}

fn otlp_provider(
    service: &'static str,
    url: Option<String>,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(url) = url {
        builder = builder.with_endpoint(url);
    }
    let exporter = builder.build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    // The batch processor exports from a thread of its own, off the
    // runtime's workers.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}

tokio::task_local! {
    /// The trace of the HTTP request being served, when no span records it.
    static REQUEST_TRACE: SpanContext;
}

/// Runs `fut` (a request's handling) as part of the trace `parent` (the
/// caller's `traceparent`, or a new trace): messages it publishes without a
/// recorded span are children of it.
pub async fn with_request_trace<F: std::future::Future>(
    parent: Option<SpanContext>,
    fut: F,
) -> F::Output {
    let cx = parent
        .filter(SpanContext::is_valid)
        .unwrap_or_else(new_root);
    REQUEST_TRACE.scope(cx, fut).await
}

/// A new trace, for a request that came without one. Sampled when spans
/// are recorded; otherwise not (nothing records it), which also spares
/// nats-server its message-trace header map: it builds one for every message
/// whose `traceparent` says sampled, ~10% of its CPU per stored event.
fn new_root() -> SpanContext {
    let ids = RandomIdGenerator::default();
    let flags = if exporting() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        flags,
        false,
        TraceState::default(),
    )
}

/// The `traceparent` a message published now carries: the current span's
/// when it is recorded, else a child of the request's trace, else a new
/// trace.
pub fn traceparent() -> String {
    let cx = if exporting() {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| sc.clone())
    } else {
        None
    };
    let sc = cx.unwrap_or_else(|| {
        let parent = REQUEST_TRACE
            .try_with(Clone::clone)
            .unwrap_or_else(|_| new_root());
        // A span of its own, as the message's producer.
        SpanContext::new(
            parent.trace_id(),
            RandomIdGenerator::default().new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    });
    format_traceparent(sc.trace_id(), sc.span_id(), sc.trace_flags())
}

fn format_traceparent(trace: TraceId, span: SpanId, flags: TraceFlags) -> String {
    format!("00-{trace}-{span}-{:02x}", flags.to_u8())
}

/// The trace context in `traceparent` (and `tracestate`), if valid.
pub fn parse_traceparent(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    struct One<'a>(&'a str, Option<&'a str>);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.0),
                "tracestate" => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let cx = TraceContextPropagator::new().extract(&One(traceparent, tracestate));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

struct FnInjector<F>(F);

impl<F: FnMut(&str, String)> Injector for FnInjector<F> {
    fn set(&mut self, key: &str, value: String) {
        (self.0)(key, value)
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`)
/// through `set`; without a recorded span, a `traceparent` as [`traceparent`]
/// makes it.
pub fn inject_current(mut set: impl FnMut(&'static str, String)) {
    if exporting() {
        let cx = tracing::Span::current().context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(
                &cx,
                &mut FnInjector(|k: &str, v: String| match k {
                    "traceparent" => set("traceparent", v),
                    "tracestate" => set("tracestate", v),
                    _ => {}
                }),
            );
            return;
        }
    }
    set("traceparent", traceparent());
}

struct HeaderExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Makes `span` a child of the trace carried in NATS `headers`, if any.
/// Call it before the span is entered.
pub fn set_parent_from(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    if let Some(headers) = headers {
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of `parent` (a caller's trace). Call it before the
/// span is entered.
pub fn set_parent(span: &tracing::Span, parent: SpanContext) {
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_carry_the_requests_trace_id_under_a_span_id_of_their_own() {
        let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent = parse_traceparent(caller, None).expect("a valid traceparent");
        let tp = with_request_trace(Some(parent.clone()), async { traceparent() }).await;
        let child = parse_traceparent(&tp, None).expect("a valid traceparent");
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert!(child.is_sampled());
        // Outside a request: a new trace, still valid.
        let root = parse_traceparent(&traceparent(), None).expect("a valid traceparent");
        assert_ne!(root.trace_id(), parent.trace_id());
        assert!(parse_traceparent("00-zz-b7ad6b7169203331-01", None).is_none());
    }
}
