//! Building and running ingest: migrate, connect, load the tenants' limits,
//! bind, start the notification delivery loop, serve until told to stop.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use switchboard_platform::http::{self, HttpMetrics, Readiness};
use switchboard_platform::metrics::{Registry, SharedRegistry};
use switchboard_platform::nats::{self, Bus};
use switchboard_platform::shutdown::{self, ShutdownTrigger};
use switchboard_platform::tenants::TenantDirectory;
use switchboard_platform::{Shutdown, db};

use crate::clock::Clock;
use crate::config::Settings;
use crate::metrics::IngestMetrics;
use crate::ratelimit::RateLimiter;
use crate::repository::Repository;
use crate::routes;
use crate::state::{AppState, WorkerJetStream};
use switchboard_platform::apikeys::KeyCache;

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    bus: Bus,
    /// Stops the background loops (tenant watch, delivery); fired when the
    /// server stops, or when this is dropped unrun.
    background: ShutdownTrigger,
    delivery: tokio::task::JoinHandle<()>,
    /// Writes idempotency answers; ends after the background stop.
    records: tokio::task::JoinHandle<()>,
}

/// Largest request body (a batch of events).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long shutdown waits for a delivery round in hand.
const DELIVERY_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// As [`build`](Self::build), reading time from `clock` (tests pass a
    /// manual clock to move quiet hours along without sleeping).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        db::migrate(&settings.database_url, crate::MIGRATIONS)
            .await
            .context("migrating ingest's tables")?;
        let repo = Repository::connect(&settings.database_url, settings.db_pool_size)?;
        let bus = Bus::start(&settings.nats_url, "ingest", &settings.streams)
            .await
            .context("setting up NATS")?;
        let (background, background_stop) = shutdown::channel();
        let tenants = TenantDirectory::default();
        tenants
            .start(bus.tenants.clone(), background_stop.clone())
            .await
            .context("loading tenants from KV SB_TENANTS")?;
        let keys = KeyCache::default();
        keys.follow(&bus.client, background_stop.clone())
            .await
            .context("following API key revocations")?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();

        // Each HTTP worker's own NATS connection, for /readyz.
        let workers: Arc<Mutex<Vec<async_nats::Client>>> = Arc::default();
        let readiness = Readiness::default()
            .nats(&bus)
            .check("nats_workers", {
                let workers = workers.clone();
                move || {
                    let down = workers
                        .lock()
                        .expect("worker list lock is never poisoned")
                        .iter()
                        .filter(|c| {
                            c.connection_state() != async_nats::connection::State::Connected
                        })
                        .count();
                    async move {
                        match down {
                            0 => Ok(()),
                            n => Err(format!("{n} HTTP worker connection(s) disconnected")),
                        }
                    }
                }
            })
            .postgres(&repo.pool);
        let metrics = Arc::new(IngestMetrics::default());
        let http_metrics = HttpMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        http_metrics.register(&mut registry, "switchboard_ingest");
        let registry = SharedRegistry::new(registry);
        let (completer, records) =
            crate::records::Completer::start(repo.clone(), background_stop.clone());
        let notify_poll = settings.notify_poll;
        let hop_sample = settings.hop_sample;
        let state = AppState {
            repo,
            bus: bus.clone(),
            settings: Arc::new(settings),
            clock,
            limiter: Arc::new(RateLimiter::new(tenants.clone())),
            tenants,
            keys,
            hops: Arc::new(crate::hops::HopSampler::new(hop_sample)),
            metrics,
            completer,
        };
        crate::consumers::key_owner::serve(state.clone(), background_stop.clone())
            .await
            .context("answering API key owner requests")?;
        let delivery = tokio::spawn(crate::delivery::run(
            state.clone(),
            notify_poll,
            background_stop,
        ));
        let nats_url = state.settings.nats_url.clone();
        let server = HttpServer::new(move || {
            let (nats_url, workers) = (nats_url.clone(), workers.clone());
            App::new()
                .wrap(from_fn(http::observe))
                .app_data(web::Data::new(http_metrics.clone()))
                .app_data(web::Data::new(http::OpenApiDocument(
                    crate::routes::openapi::DOCUMENT,
                )))
                .app_data(web::Data::new(state.clone()))
                .data_factory(move || {
                    let (nats_url, workers) = (nats_url.clone(), workers.clone());
                    async move {
                        let client = nats::connect(&nats_url, "ingest-worker").await?;
                        workers
                            .lock()
                            .expect("worker list lock is never poisoned")
                            .push(client.clone());
                        Ok::<_, nats::NatsSetupError>(WorkerJetStream(async_nats::jetstream::new(
                            client,
                        )))
                    }
                })
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .app_data(http::path_config())
                .app_data(http::query_config())
                .app_data(http::json_config(MAX_BODY_BYTES))
                .configure(|cfg| http::operational_routes(cfg, readiness.clone(), registry.clone()))
                .configure(routes::configure)
                .default_service(web::to(http::not_found))
        })
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            bus,
            background,
            delivery,
            records,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` fires, then finishes requests in hand, stops
    /// the delivery loop and drains NATS so every acked publish is flushed.
    pub async fn run_until_stopped(self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let running = tokio::spawn(self.server);
        shutdown.wait().await;
        handle.stop(true).await;
        let _ = running.await;
        self.background.fire();
        if tokio::time::timeout(DELIVERY_STOP_TIMEOUT, self.delivery)
            .await
            .is_err()
        {
            tracing::warn!("notification delivery did not stop in time");
        }
        // The server has stopped: no answer is queued after this.
        let _ = self.records.await;
        if let Err(e) = self.bus.client.drain().await {
            tracing::warn!(error = %e, "draining NATS failed");
        }
        Ok(())
    }
}
