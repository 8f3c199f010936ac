//! Building and running ingest: migrate, connect, bind, serve until told to
//! stop.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use switchboard_platform::http::{self, Readiness};
use switchboard_platform::metrics::{Registry, SharedRegistry};
use switchboard_platform::nats::Bus;
use switchboard_platform::{Shutdown, db};

use crate::config::Settings;
use crate::repository::Repository;
use crate::routes::{self, AppState};

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    bus: Bus,
}

/// Largest request body (a batch of events).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        db::migrate(&settings.database_url, crate::MIGRATIONS)
            .await
            .context("migrating ingest's tables")?;
        let pool = db::pool(&settings.database_url, settings.db_pool_size)?;
        let bus = Bus::start(&settings.nats_url, "ingest", &settings.streams)
            .await
            .context("setting up NATS")?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();

        let readiness = Readiness::default().nats(&bus).postgres(&pool);
        let registry = SharedRegistry::new(Registry::default());
        let state = AppState {
            repo: Repository { pool },
            bus: bus.clone(),
            settings: Arc::new(settings),
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
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
        Ok(Self { port, server, bus })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` fires, then finishes requests in hand and
    /// drains NATS so every acked publish is flushed.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        http::serve_until_stopped(self.server, shutdown, self.bus.client).await;
        Ok(())
    }
}
