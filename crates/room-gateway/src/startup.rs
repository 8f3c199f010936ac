//! Building and running room-gateway: connect NATS, load tenants, bind, serve
//! WebSockets until told to stop, then drain.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_codec::Framed;
use actix_http::{HttpService, Request, h1};
use actix_service::{fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, HttpRequest, HttpResponse, web};
use anyhow::Context as _;
use switchboard_platform::http::{self, Readiness};
use switchboard_platform::metrics::{Registry, SharedRegistry};
use switchboard_platform::{Problem, Shutdown, shutdown};
use tokio::net::TcpStream;

use crate::audit::Audit;
use crate::bus::Bus;
use crate::config::Settings;
use crate::gateway::Gateway;
use crate::hub::{HubLimits, RoomHub};
use crate::metrics::GatewayMetrics;
use crate::presence::Presence;
use crate::slots::ConnectionSlots;
use crate::tenants::TenantDirectory;
use crate::upgrade;

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    gateway: Gateway,
    drain_trigger: shutdown::ShutdownTrigger,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let bus = Bus::start(&settings.nats_url, &settings.streams, settings.live_queue)
            .await
            .context("setting up NATS")?;
        let listener =
            listen(settings.listen).with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();

        // Sessions watch this, not the process signal: the gateway decides
        // when draining starts (after it stops accepting).
        let (drain_trigger, drain) = shutdown::channel();
        let tenants = TenantDirectory::default();
        tenants
            .start(bus.tenants(), drain.clone())
            .await
            .context("loading tenants from KV SB_TENANTS")?;

        let metrics = GatewayMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let registry = SharedRegistry::new(registry);
        let gateway = Gateway {
            hub: RoomHub::new(
                bus.clone(),
                metrics,
                HubLimits {
                    history_cap: settings.room_cache,
                    concurrent_fetches: settings.replay_concurrency,
                    held: settings.outbound_queue,
                },
            ),
            tenants: tenants.clone(),
            presence: Presence::new(&bus, settings.presence_refresh),
            audit: Audit::start(bus.clone()),
            bus: bus.clone(),
            slots: ConnectionSlots::default(),
            sessions: Arc::default(),
            settings: Arc::new(settings),
            shutdown: drain,
        };
        let readiness = {
            let live = bus.clone();
            Readiness::default()
                .nats(bus.shared())
                .check("nats_live", move || {
                    let ok = live.is_connected();
                    async move {
                        if ok {
                            Ok(())
                        } else {
                            Err("disconnected".into())
                        }
                    }
                })
                .check("tenants", move || {
                    let ok = tenants.is_loaded();
                    async move {
                        if ok {
                            Ok(())
                        } else {
                            Err("loading, or the SB_TENANTS watch is down".into())
                        }
                    }
                })
        };
        gateway.presence.spawn_refresher(gateway.shutdown.clone());
        crate::stats::spawn(gateway.clone(), gateway.shutdown.clone());
        let data = web::Data::new(gateway.clone());
        let drain_secs = gateway.settings.drain.as_secs();
        // actix-web's routes, served by actix-http with an upgrade service:
        // WebSocket upgrades leave the HTTP layer with their socket
        // (`upgrade`, `wire`), everything else is an ordinary request.
        let server = actix_server::Server::build()
            .disable_signals()
            .shutdown_timeout(drain_secs + 1)
            .listen("room-gateway", listener, move || {
                let app = App::new()
                    .app_data(data.clone())
                    .configure(|cfg| {
                        http::operational_routes(cfg, readiness.clone(), registry.clone())
                    })
                    .route(upgrade::PATH, web::get().to(not_upgraded))
                    .route("/v1/stats", web::get().to(stats))
                    .route("/v1/stats/hops", web::get().to(hops))
                    .default_service(web::to(http::not_found));
                let gw = Arc::new((**data).clone());
                HttpService::build()
                    .upgrade(fn_service(
                        move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                            upgrade::serve(gw.clone(), req, framed)
                        },
                    ))
                    .h1(map_config(app, |_| AppConfig::default()))
                    .tcp()
            })?
            .run();
        Ok(Self {
            port,
            server,
            gateway,
            drain_trigger,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown`; then stops accepting, tells every client to
    /// `reconnect` (jittered `after_ms`) and closes them with 1012, and exits
    /// as soon as no connection is left or `SB_DRAIN_SECS` has passed.
    pub async fn run_until_stopped(self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        shutdown.wait().await;
        let t0 = tokio::time::Instant::now();
        tracing::info!("draining connections");
        // Sessions run in tasks of their own on the server's workers, which
        // stopping the server ends: accept nothing new, let every session
        // say `reconnect` and close, and only then stop.
        handle.pause().await;
        self.drain_trigger.fire();
        let deadline = tokio::time::Instant::now() + self.gateway.settings.drain;
        let sessions = self.gateway.sessions.clone();
        while sessions.load(std::sync::atomic::Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(
            secs = t0.elapsed().as_secs_f64(),
            left = sessions.load(std::sync::atomic::Ordering::Acquire),
            "connections drained"
        );
        let _ = handle.stop(true).await;
        let _ = server.await;
        tracing::info!(secs = t0.elapsed().as_secs_f64(), "server stopped");
        // Sessions still running were dropped with their workers' runtimes;
        // each one's audit goes out as it drops.
        let dropped = tokio::time::Instant::now() + Duration::from_secs(2);
        while sessions.load(std::sync::atomic::Ordering::Acquire) > 0
            && tokio::time::Instant::now() < dropped
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Every closed connection's audit event is stored before NATS goes.
        self.gateway.audit.flush(Duration::from_secs(5)).await;
        tracing::info!(secs = t0.elapsed().as_secs_f64(), "audit stored");
        self.gateway.bus.drain().await;
        tracing::info!(secs = t0.elapsed().as_secs_f64(), "stopped");
        Ok(())
    }
}

/// Connections waiting to be accepted at most: a reconnect storm brings
/// thousands at once, and a full backlog drops SYNs, which clients resend
/// only after a second, then three (the kernel caps it at somaxconn).
const LISTEN_BACKLOG: i32 = 8192;

/// A listening socket on `addr` with a backlog fit for a reconnect storm
/// (std's is 128).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// `GET /v1/stats`: this gateway's counters as JSON.
async fn stats(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(gw.hub.metrics().stats())
}

/// `GET /v1/stats/hops`: per-hop timing of the sampled events since the
/// last call (the benchmark reads it once per step).
async fn hops(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(gw.hub.metrics().hops.take_summary())
}

/// `GET /v1/ws` without `Upgrade: websocket` (upgrades never reach the
/// routes; `upgrade::serve` takes them): the same checks, then `400`.
async fn not_upgraded(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Problem> {
    let _ = upgrade::admit(&gw, req.headers(), req.query_string()).await?;
    Err(Problem::bad_request(
        "not a WebSocket upgrade: send Connection: upgrade and Upgrade: websocket",
    ))
}
