//! Helpers for integration tests against the real NATS and PostgreSQL:
//! a fresh database per test (dropped afterwards), a private nats-server for
//! tests that restart the broker or change its stream limits, and a
//! WebSocket client whose every wait has a timeout.

mod nats_server;

pub use nats_server::NatsServer;

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn nats_url() -> String {
    std::env::var("SB_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn server_url() -> String {
    std::env::var("SB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A database made for one test and dropped when this is dropped.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("sb_test_{}", random_suffix());
        let server = server_url();
        let mut conn = AsyncPgConnection::establish(&server)
            .await
            .expect("PostgreSQL must be reachable for tests (scripts/test starts it)");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("creating the test database");
        let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = server_url();
        // Drop runs inside the test's runtime; a thread with its own runtime
        // can block on the async client without stalling it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(async {
                if let Ok(mut conn) = AsyncPgConnection::establish(&server).await {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        })
        .join();
    }
}

/// A test's WebSocket client speaking PROTOCOL.md's JSON frames.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection attempt ended before the upgrade (`status` 0: nothing
/// answered).
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: serde_json::Value,
}

impl WsClient {
    /// Connects with the token in `Authorization`.
    pub async fn connect(url: &str, token: &str) -> Result<Self, Refused> {
        let mut req = url.into_client_request().expect("valid ws url");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .expect("token is a header value"),
        );
        Self::connect_request(req).await
    }

    pub async fn connect_request(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Self, Refused> {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
            Err(_) => panic!("connecting timed out"),
            Ok(Ok((ws, _))) => Ok(Self { ws }),
            Ok(Err(tungstenite::Error::Http(res))) => {
                let status = res.status().as_u16();
                let body = res
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(serde_json::Value::Null);
                Err(Refused { status, body })
            }
            // No HTTP answer at all (e.g. nothing listens yet): status 0.
            Ok(Err(tungstenite::Error::Io(e))) => Err(Refused {
                status: 0,
                body: serde_json::Value::String(e.to_string()),
            }),
            Ok(Err(e)) => panic!("connecting failed: {e}"),
        }
    }

    pub async fn send_json(&mut self, v: serde_json::Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(WAIT, self.ws.send(Message::text(text)))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    pub async fn send_raw(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(msg).await
    }

    /// The next JSON frame, skipping pings. Panics on close or timeout.
    pub async fn next_frame(&mut self) -> serde_json::Value {
        match self.next_frame_within(WAIT).await {
            Some(Ok(v)) => v,
            Some(Err(close)) => panic!("connection closed: {close:?}"),
            None => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next JSON frame, or the close frame, or `None` after `wait`.
    pub async fn next_frame_within(
        &mut self,
        wait: Duration,
    ) -> Option<Result<serde_json::Value, Option<CloseFrame>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Err(None)),
                Ok(Some(Err(_))) => return Some(Err(None)),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Some(Ok(
                        serde_json::from_str(t.as_str()).expect("frames are JSON")
                    ));
                }
                Message::Close(c) => return Some(Err(c)),
                _ => continue,
            }
        }
    }

    /// Skips frames until one of `type_`; panics on timeout.
    pub async fn next_of_type(&mut self, type_: &str) -> serde_json::Value {
        loop {
            let f = self.next_frame().await;
            if f["type"] == type_ {
                return f;
            }
        }
    }

    /// Waits for the server to close; returns the close code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        loop {
            match self.next_frame_within(WAIT).await {
                Some(Ok(_)) => continue,
                Some(Err(c)) => return c.map(|c| u16::from(c.code)),
                None => panic!("connection not closed within {WAIT:?}"),
            }
        }
    }

    /// Asserts nothing but pings arrives for `wait`.
    pub async fn assert_silent(&mut self, wait: Duration) {
        if let Some(Ok(f)) = self.next_frame_within(wait).await {
            panic!("expected no frame, got {f}");
        }
    }
}

impl WsClient {
    /// Connects and also returns the subprotocol the server chose.
    pub async fn connect_request_with_response(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> (Self, Option<String>) {
        let (ws, res) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connecting timed out")
            .expect("connection accepted");
        let proto = res
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (Self { ws }, proto)
    }
}
