//! `GET /v1/ws` with `Upgrade: websocket`. actix-http hands such requests
//! (and the socket) here instead of to the routes: the request is admitted
//! (token, tenant, connection limit), answered `101`, and the connection's
//! session runs on the socket itself (`wire`). A refused request gets its
//! problem+json answer here too.

use std::sync::Arc;

use actix_codec::Framed;
use actix_http::{Request, h1};
use actix_web::ResponseError as _;
use actix_web::http::header::{self, HeaderMap};
use switchboard_platform::Problem;
use switchboard_proto::token::Claims;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::audit::ConnMeta;
use crate::auth;
use crate::gateway::Gateway;
use crate::session;
use crate::slots::Slot;
use crate::wire;

pub const PATH: &str = "/v1/ws";

/// The checks every connection request passes before an upgrade, in order:
/// the gateway is not draining (503), the token is good (401), the tenant
/// has a free connection (429).
pub async fn admit(
    gw: &Gateway,
    headers: &HeaderMap,
    query: &str,
) -> Result<(Claims, Slot), Problem> {
    if gw.shutdown.is_fired() {
        return Err(Problem::unavailable(
            "this gateway is draining; connect to another",
        ));
    }
    let raw = auth::token_from_request(headers, query).ok_or_else(auth::missing_token)?;
    // A tenant created a moment ago may not have reached this gateway's
    // watch yet: read it through before judging the token.
    if let Ok(tenant) = switchboard_proto::token::peek_tenant(&raw) {
        gw.tenants.get_or_fetch(&tenant).await;
    }
    let claims = auth::verify(&raw, &gw.tenants, chrono::Utc::now().timestamp())
        .map_err(|e| auth::refuse(&e))?;
    let limit = gw
        .tenants
        .get(&claims.tenant)
        .map(|t| t.limits.connections)
        .unwrap_or(0);
    let slot = gw.slots.acquire(&claims.tenant, limit).ok_or_else(|| {
        Problem::too_many_requests(
            format!(
                "tenant '{}' is at its limit of {limit} connections",
                claims.tenant
            ),
            5,
        )
    })?;
    Ok((claims, slot))
}

/// Answers one upgrade request and starts its session.
pub async fn serve(
    gw: Arc<Gateway>,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error> {
    let parts = framed.into_parts();
    // The HTTP layer's buffers go now (the write buffer alone is 8 KiB);
    // only what it read past the request is kept.
    let (mut io, already_read) = (parts.io, parts.read_buf);
    drop(parts.write_buf);
    drop(parts.codec);
    let head = req.head();
    let admitted = if head.uri.path() != PATH {
        Err(Problem::not_found(format!(
            "no WebSocket endpoint at {}; connect to {PATH}",
            head.uri.path()
        )))
    } else {
        match admit(&gw, &head.headers, head.uri.query().unwrap_or_default()).await {
            Ok(ok) => actix_http::ws::verify_handshake(head)
                .map(|()| ok)
                .map_err(|e| Problem::bad_request(format!("not a WebSocket upgrade: {e}"))),
            Err(p) => Err(p),
        }
    };
    let (claims, slot) = match admitted {
        Ok(ok) => ok,
        Err(problem) => {
            refuse(&mut io, problem).await;
            return Ok(());
        }
    };
    let Some(key) = head.headers.get(header::SEC_WEBSOCKET_KEY) else {
        unreachable!("verify_handshake checked the key")
    };
    let accept = actix_http::ws::hash_key(key.as_bytes());
    let mut answer = Vec::with_capacity(160);
    answer.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: ",
    );
    answer.extend_from_slice(&accept);
    if auth::offers_subprotocol(&head.headers) {
        answer.extend_from_slice(b"\r\nsec-websocket-protocol: ");
        answer.extend_from_slice(auth::SUBPROTOCOL.as_bytes());
    }
    answer.extend_from_slice(b"\r\n\r\n");
    let _ = io.set_nodelay(true);
    if io.write_all(&answer).await.is_err() {
        return Ok(());
    }
    let meta = ConnMeta {
        ip: client_ip(&head.headers)
            .or_else(|| req.peer_addr().map(|a| a.ip().to_string()))
            .unwrap_or_default(),
        user_agent: head
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        opened_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    drop(req);
    // The socket is shared: the session reads it, and whoever pushes a frame
    // to the connection's outbox may write it (`outbox`).
    let socket = Arc::new(io);
    let reader = wire::reader(socket.clone(), already_read, gw.settings.max_frame_bytes);
    // The session gets a task of its own and this one ends: the HTTP layer's
    // per-connection task (its dispatcher state is some kilobytes) goes away
    // instead of carrying the session for the connection's life.
    actix_web::rt::spawn(session::run(gw, claims, meta, slot, socket, reader));
    Ok(())
}

/// The client address a proxy in front reports (`Forwarded: for=`, then
/// `X-Forwarded-For`), as actix-web's `realip_remote_addr` reads it.
fn client_ip(headers: &HeaderMap) -> Option<String> {
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split([';', ','])
                .find_map(|kv| kv.trim().strip_prefix("for="))
                .map(|ip| ip.trim_matches('"').to_owned())
        });
    forwarded.or_else(|| {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|ip| ip.trim().to_owned())
    })
}

/// Answers a refused request with its problem+json and hangs up.
async fn refuse(io: &mut TcpStream, problem: Problem) {
    let res = problem.error_response();
    let status = res.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    for (name, value) in res.headers() {
        if let Ok(v) = value.to_str() {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let body = actix_web::body::to_bytes(res.into_body())
        .await
        .unwrap_or_default();
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    let _ = io.write_all(&bytes).await;
    let _ = io.shutdown().await;
}
