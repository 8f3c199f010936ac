//! The skeleton a service starts from before it has routes of its own:
//! settings, NATS with the shared streams, a PostgreSQL pool, and the
//! operational endpoints, served until shutdown.

use std::net::{SocketAddr, TcpListener};

use actix_web::{App, HttpServer, web};

use crate::config::{self, ConfigError, Source};
use crate::http::{self, Readiness};
use crate::metrics::{Registry, SharedRegistry};
use crate::nats::{Bus, NatsSetupError, StreamSettings};
use crate::{Shutdown, db};

#[derive(Debug, Clone)]
pub struct BasicSettings {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub database_url: String,
    pub streams: StreamSettings,
    pub db_pool_size: usize,
}

impl BasicSettings {
    pub fn from_source(src: &dyn Source, default_listen: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: config::listen(src, default_listen)?,
            nats_url: config::string(src, "SB_NATS_URL", "nats://127.0.0.1:4222"),
            database_url: config::string(
                src,
                "SB_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/switchboard",
            ),
            streams: StreamSettings::from_source(src)?,
            db_pool_size: config::parsed(
                src,
                "SB_DB_POOL_SIZE",
                8,
                "a whole number of connections",
            )?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Nats(#[from] NatsSetupError),
    #[error(transparent)]
    Db(#[from] db::DbSetupError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct BasicService {
    port: u16,
    server: actix_web::dev::Server,
    bus: Bus,
}

impl BasicService {
    pub async fn build(name: &str, settings: BasicSettings) -> Result<Self, BuildError> {
        let bus = Bus::start(&settings.nats_url, name, &settings.streams).await?;
        let pool = db::pool(&settings.database_url, settings.db_pool_size)?;
        let bind = |source| BuildError::Bind {
            addr: settings.listen,
            source,
        };
        let listener = TcpListener::bind(settings.listen).map_err(bind)?;
        let port = listener.local_addr().map_err(bind)?.port();
        let readiness = Readiness::default().nats(&bus).postgres(&pool);
        let registry = SharedRegistry::new(Registry::default());
        let server = HttpServer::new(move || {
            App::new()
                .configure(|cfg| http::operational_routes(cfg, readiness.clone(), registry.clone()))
                .default_service(web::to(http::not_found))
        })
        .disable_signals()
        .listen(listener)
        .map_err(bind)?
        .run();
        Ok(Self { port, server, bus })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self, shutdown: Shutdown) {
        http::serve_until_stopped(self.server, shutdown, self.bus.client).await;
    }
}
