//! Building and running room-gateway: connect NATS, load tenants, bind, serve
//! WebSockets until told to stop, then drain.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use switchboard_platform::http::{self, Readiness};
use switchboard_platform::metrics::{Registry, SharedRegistry};
use switchboard_platform::nats::{self, Bus};
use switchboard_platform::{Problem, Shutdown, shutdown};

use crate::audit::ConnMeta;
use crate::auth;
use crate::config::Settings;
use crate::hub::{HubLimits, LiveDrops, RoomHub};
use crate::metrics::GatewayMetrics;
use crate::presence::Presence;
use crate::session::{self, Gateway};
use crate::slots::ConnectionSlots;
use crate::tenants::TenantDirectory;

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    gateway: Gateway,
    drain_trigger: shutdown::ShutdownTrigger,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let bus = Bus::start(&settings.nats_url, "room-gateway", &settings.streams)
            .await
            .context("setting up NATS")?;
        // Live fan-out gets its own connection: a burst of room events never
        // queues behind KV watches or JetStream requests, and the other way
        // round.
        let drops = LiveDrops::default();
        let live = nats::connect_with_capacity(
            &settings.nats_url,
            "room-gateway-live",
            settings.live_queue,
            Some(drops.callback()),
        )
        .await
        .context("connecting the live NATS connection")?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();

        // Sessions watch this, not the process signal: the gateway decides
        // when draining starts (after it stops accepting).
        let (drain_trigger, drain) = shutdown::channel();
        let tenants = TenantDirectory::default();
        tenants
            .start(bus.tenants.clone(), drain.clone())
            .await
            .context("loading tenants from KV SB_TENANTS")?;

        let metrics = GatewayMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let registry = SharedRegistry::new(registry);
        let gateway = Gateway {
            hub: RoomHub::new(
                live,
                drops,
                bus.jetstream.clone(),
                metrics,
                HubLimits {
                    history_cap: settings.room_cache,
                    concurrent_fetches: settings.replay_concurrency,
                    room_history: settings.streams.room_history as usize,
                },
            ),
            tenants: tenants.clone(),
            bus: bus.clone(),
            slots: ConnectionSlots::default(),
            presence: Presence::new(bus.presence.clone(), settings.presence_refresh),
            settings: Arc::new(settings),
            shutdown: drain,
        };
        let readiness = {
            Readiness::default().nats(&bus).check("tenants", move || {
                let ok = tenants.is_loaded();
                async move { if ok { Ok(()) } else { Err("loading".into()) } }
            })
        };
        gateway.presence.spawn_refresher(gateway.shutdown.clone());
        let data = web::Data::new(gateway.clone());
        let drain_secs = gateway.settings.drain.as_secs();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(|cfg| http::operational_routes(cfg, readiness.clone(), registry.clone()))
                .route("/v1/ws", web::get().to(connect))
                .route("/v1/stats", web::get().to(stats))
                .default_service(web::to(http::not_found))
        })
        .disable_signals()
        .shutdown_timeout(drain_secs + 1)
        .listen(listener)?
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
        tracing::info!("draining connections");
        let stopped = tokio::spawn(handle.stop(true));
        self.drain_trigger.fire();
        let deadline = tokio::time::Instant::now() + self.gateway.settings.drain;
        let connections = self.gateway.hub.metrics().connections.clone();
        while connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stopped.await;
        let _ = server.await;
        if let Err(e) = self.gateway.bus.client.drain().await {
            tracing::warn!(error = %e, "draining NATS failed");
        }
        Ok(())
    }
}

/// `GET /v1/stats`: this gateway's counters as JSON.
async fn stats(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(gw.hub.metrics().stats())
}

/// `GET /v1/ws`: authenticate, upgrade, hand the socket to a session task.
async fn connect(
    req: HttpRequest,
    body: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Problem> {
    if gw.shutdown.is_fired() {
        return Err(Problem::unavailable(
            "this gateway is draining; connect to another",
        ));
    }
    let raw = auth::token_from_request(&req).ok_or_else(auth::missing_token)?;
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
    let (response, ws, stream) = actix_ws::handle_with_protocols(&req, body, &[auth::SUBPROTOCOL])
        .map_err(|e| Problem::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let max = gw.settings.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let meta = ConnMeta {
        ip: req
            .connection_info()
            .realip_remote_addr()
            .unwrap_or_default()
            .to_owned(),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        opened_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    actix_web::rt::spawn(session::run(
        gw.into_inner(),
        claims,
        meta,
        slot,
        ws,
        stream,
    ));
    Ok(response)
}
