//! Traces from the request to the socket: one event published with a
//! caller's `traceparent` is one trace — ingest's request and JetStream
//! publish, the gateway's fan-out and socket writes — exported over
//! OTLP/HTTP to a real receiver, and parented on the caller's span.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::helpers::{join, spawn_app};

/// The part of OTLP's `ExportTraceServiceRequest` the test reads
/// (opentelemetry-proto's field numbers; the rest is skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP receiver on a port of its own: every request body posted
/// to it (`/v1/traces`, protobuf) goes to the channel.
async fn otlp_receiver() -> (String, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request at a time on a kept-alive connection.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    buf.drain(..head_end + len);
                    assert!(head.starts_with("post /v1/traces "), "{head}");
                    let _ = tx.send(body);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_published_event_is_one_trace_from_the_callers_request_to_the_socket() {
    let (url, mut exports) = otlp_receiver().await;
    let telemetry = switchboard_platform::telemetry::init_with_endpoint("switchboard-test", &url);
    assert!(switchboard_platform::telemetry::exporting());
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "u1", json!({"lobby": ["read"]})).await;
    join(&mut c, "lobby").await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let res = app
        .http
        .post(format!(
            "{}/v1/tenants/{}/rooms/lobby/events",
            app.ingest, t.id
        ))
        .bearer_auth(&t.api_key)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"event": "order.paid", "data": {"total": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    c.next_of_type("event").await;

    // The spans of the trace, by name, as the receiver gets them.
    let mut spans: HashMap<String, Span> = HashMap::new();
    let wanted = [
        "POST /v1/tenants/{tenant}/rooms/{room}/events",
        "jetstream.publish",
        "gateway.fanout",
        "gateway.write",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !wanted.iter().all(|w| spans.contains_key(*w)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans of trace {trace_id} received: {:?}",
            spans.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Exports what has ended (a blocking wait on the export thread).
        tokio::task::block_in_place(|| telemetry.flush());
        while let Ok(body) = exports.try_recv() {
            let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
            for s in req
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
            {
                if hex(&s.trace_id) == trace_id {
                    spans.insert(s.name.clone(), s);
                }
            }
        }
    }
    let id = |name: &str| hex(&spans[name].span_id);
    let parent = |name: &str| hex(&spans[name].parent_span_id);
    let request = wanted[0];
    assert_eq!(
        parent(request),
        caller_span,
        "the request's span is the caller's child"
    );
    assert_eq!(parent("jetstream.publish"), id(request));
    // Across NATS: the gateway's span is the publish's child, from the
    // traceparent the message carried.
    assert_eq!(parent("gateway.fanout"), id("jetstream.publish"));
    assert_eq!(parent("gateway.write"), id("gateway.fanout"));
}

/// Without an exporter no span is recorded, yet every message still carries
/// a `traceparent`: a child of the caller's trace when it sent one.
#[tokio::test(flavor = "multi_thread")]
async fn every_message_carries_a_traceparent_without_an_exporter() {
    assert!(!switchboard_platform::telemetry::exporting());
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let nats = async_nats::connect(&app.nats).await.unwrap();
    let mut stored = nats.subscribe(format!("sb.evt.{}.>", t.id)).await.unwrap();
    let mut ephemeral = nats.subscribe(format!("sb.eph.{}.>", t.id)).await.unwrap();
    nats.flush().await.unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller = format!("00-{trace_id}-b7ad6b7169203331-01");
    let send = |path: String, body: serde_json::Value, traced: bool| {
        let mut req = app
            .http
            .post(format!("{}/v1/tenants/{}{path}", app.ingest, t.id))
            .bearer_auth(&t.api_key)
            .json(&body);
        if traced {
            req = req.header("traceparent", &caller);
        }
        req.send()
    };
    let traceparent = |m: &async_nats::Message| -> Vec<String> {
        let tp = m
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .expect("every message carries a traceparent")
            .to_string();
        tp.split('-').map(str::to_owned).collect()
    };

    assert_eq!(
        send("/rooms/a/events".into(), json!({"event": "x.y"}), true)
            .await
            .unwrap()
            .status(),
        201
    );
    let tp = traceparent(&next(&mut stored).await);
    assert_eq!((tp[0].as_str(), tp[1].as_str()), ("00", trace_id));
    assert_ne!(
        tp[2], "b7ad6b7169203331",
        "the message has a span id of its own"
    );

    let batch = json!({"events": [{"room": "a", "event": "x.y"}, {"room": "b", "event": "x.y"}]});
    assert_eq!(
        send("/events".into(), batch, true).await.unwrap().status(),
        201
    );
    for _ in 0..2 {
        assert_eq!(traceparent(&next(&mut stored).await)[1], trace_id);
    }

    let eph = json!({"event": "typing.start", "ephemeral": true});
    assert_eq!(
        send("/rooms/a/events".into(), eph, true)
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(traceparent(&next(&mut ephemeral).await)[1], trace_id);

    // No caller trace: a new one, valid.
    assert_eq!(
        send("/rooms/a/events".into(), json!({"event": "x.y"}), false)
            .await
            .unwrap()
            .status(),
        201
    );
    let tp = traceparent(&next(&mut stored).await);
    assert_eq!(tp.len(), 4);
    assert!(
        tp[1].len() == 32 && tp[1] != "0".repeat(32) && tp[1] != trace_id,
        "{tp:?}"
    );
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(sub))
        .await
        .expect("a message within 5 s")
        .expect("subscription open")
}
