//! A nats-server of a test's own: for tests that restart the broker under
//! running services, or that change the limits of streams every test
//! shares (`SB_ROOM_HISTORY`, `SB_ROOM_HISTORY_AGE`). It is the pinned
//! binary `scripts/test` installs and names in `SB_NATS_SERVER_BIN`, with
//! JetStream on a store that lives as long as the server value does (so a
//! restart keeps what was stored).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::WAIT;

pub struct NatsServer {
    pub url: String,
    port: u16,
    store: PathBuf,
    /// A configuration file, for tests of the server's own limits.
    config: Option<PathBuf>,
    child: Option<Child>,
}

fn binary() -> String {
    std::env::var("SB_NATS_SERVER_BIN").unwrap_or_else(|_| {
        panic!(
            "SB_NATS_SERVER_BIN is not set: run the tests through scripts/test, which installs \
             the pinned nats-server and exports its path"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl NatsServer {
    /// Starts a fresh server with JetStream on a port of its own.
    pub async fn start() -> Self {
        Self::start_with_config(None).await
    }

    /// [`start`](Self::start) with a configuration file holding `config`
    /// (nats-server's format, e.g. JetStream limits); the address and store
    /// are set on the command line.
    pub async fn start_with_config(config: Option<&str>) -> Self {
        let store = std::env::temp_dir().join(format!("sb-nats-{}", crate::random_suffix()));
        std::fs::create_dir_all(&store).expect("creating the server's store");
        let config = config.map(|text| {
            let path = store.join("nats-server.conf");
            std::fs::write(&path, text).expect("writing the server's configuration");
            path
        });
        let port = free_port();
        let mut s = Self {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
            config,
            child: None,
        };
        s.run().await;
        s
    }

    async fn run(&mut self) {
        let mut command = Command::new(binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        tokio::time::timeout(WAIT, async {
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("nats-server listens within the wait");
    }

    /// Kills the server (SIGKILL: nothing is said to its clients).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.run().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
