//! Building and running analytics: migrate, connect, follow tenants and key
//! revocations, start the projection, the live updates and the system
//! watch, bind, serve until told to stop.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use switchboard_platform::apikeys::KeyCache;
use switchboard_platform::callers::Callers;
use switchboard_platform::http::{self, HttpMetrics, Readiness};
use switchboard_platform::metrics::{Registry, SharedRegistry};
use switchboard_platform::nats::Bus;
use switchboard_platform::shutdown::{self, ShutdownTrigger};
use switchboard_platform::tenants::TenantDirectory;
use switchboard_platform::{Shutdown, db};

use crate::config::Settings;
use crate::metrics::AnalyticsMetrics;
use crate::repository::Repository;
use crate::routes;
use crate::state::AppState;

/// How long shutdown waits for the batch in hand.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    bus: Bus,
    background: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        db::migrate(&settings.database_url, crate::MIGRATIONS)
            .await
            .context("migrating analytics' tables")?;
        let repo = Repository {
            pool: db::pool(&settings.database_url, settings.db_pool_size)?,
        };
        let bus = Bus::start(&settings.nats_url, crate::SERVICE, &settings.streams)
            .await
            .context("setting up NATS")?;
        let (background, stop) = shutdown::channel();
        let tenants = TenantDirectory::default();
        tenants
            .start(bus.tenants.clone(), stop.clone())
            .await
            .context("loading tenants from KV SB_TENANTS")?;
        let keys = KeyCache::default();
        keys.follow(&bus.client, stop.clone())
            .await
            .context("following API key revocations")?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();

        let metrics = Arc::new(AnalyticsMetrics::default());
        let http_metrics = HttpMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        http_metrics.register(&mut registry, "switchboard_analytics");
        let registry = SharedRegistry::new(registry);
        let readiness = Readiness::default().nats(&bus).postgres(&repo.pool);
        let state = AppState {
            repo,
            bus: bus.clone(),
            callers: Callers {
                tenants,
                keys,
                nats: bus.client.clone(),
            },
            settings: Arc::new(settings),
            metrics,
        };
        let (changed_tx, changed) = tokio::sync::mpsc::channel(1024);
        let tasks = vec![
            tokio::spawn(crate::consumer::run(
                state.clone(),
                changed_tx,
                stop.clone(),
            )),
            tokio::spawn(crate::live::run(state.clone(), changed, stop.clone())),
            tokio::spawn(crate::system::run(state.clone(), stop.clone())),
            tokio::spawn(crate::system::watch_lag(state.clone(), stop.clone())),
        ];
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http::observe))
                .app_data(web::Data::new(http_metrics.clone()))
                .app_data(web::Data::new(state.clone()))
                .app_data(web::Data::new(http::OpenApiDocument(
                    routes::openapi::DOCUMENT,
                )))
                .app_data(http::path_config())
                .app_data(http::query_config())
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
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown`; then stops the server, lets the batch in
    /// hand finish (it is acknowledged only once applied), and drains NATS.
    pub async fn run_until_stopped(self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let running = tokio::spawn(self.server);
        shutdown.wait().await;
        handle.stop(true).await;
        let _ = running.await;
        self.background.fire();
        for t in self.tasks {
            if tokio::time::timeout(STOP_TIMEOUT, t).await.is_err() {
                tracing::warn!("a background task did not stop in time");
            }
        }
        if let Err(e) = self.bus.client.drain().await {
            tracing::warn!(error = %e, "draining NATS failed");
        }
        Ok(())
    }
}
