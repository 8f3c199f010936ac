//! Worker processes: each holds a share of the connections (a process may
//! open at most 20,000 files) on a single-threaded runtime, and answers the
//! coordinator's commands, one JSON line each way over stdin/stdout.
//! `Fleet` is the coordinator's side.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::client::{self, ConnSpec, Shared, Stats};
use crate::hist::Histogram;
use crate::setup::{Tenant, mint_token};

/// Connections per source address: well under the ~28,000 ephemeral ports
/// one address has towards one gateway.
pub const PER_SOURCE_IP: u64 = 10_000;

/// The connections one worker opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenSpec {
    /// Global index of the first connection (it picks source address, room,
    /// gateway and the token's `sub`).
    pub first: u64,
    pub count: u64,
    /// Connection `i` goes to `gateways[i % len]`.
    pub gateways: Vec<u16>,
    /// Connection `i` joins `rooms[i % len]`.
    pub rooms: Vec<String>,
    pub tenant: Tenant,
    /// In each room, every `slow_every`-th member stops reading (0: none).
    pub slow_every: u64,
    pub reconnect: bool,
    /// Connects in flight at once.
    pub concurrency: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Cmd {
    Open(OpenSpec),
    Stats { reset_latency: bool },
    Resume,
    Exit,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Opened { ok: u64, failed: u64, secs: f64 },
    Stats(Box<Stats>),
    Ok,
    Failed { message: String },
}

/// `switchboard-bench worker`: serves commands until `exit` or end of input.
pub fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the worker runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let (resume_tx, resume_rx) = watch::channel(false);
    let mut shared: Option<Arc<Shared>> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let cmd: Cmd = serde_json::from_str(&line).context("a command from the coordinator")?;
        let reply = match cmd {
            Cmd::Open(spec) => {
                let s = Arc::new(Shared {
                    stats: Mutex::new(Stats::with_rooms(spec.rooms.len())),
                    resume: resume_rx.clone(),
                });
                shared = Some(s.clone());
                match open(spec, s).await {
                    Ok(r) => r,
                    Err(e) => Reply::Failed {
                        message: format!("{e:#}"),
                    },
                }
            }
            Cmd::Stats { reset_latency } => {
                let stats = match &shared {
                    Some(s) => {
                        let mut s = s.lock();
                        let copy = s.clone();
                        if reset_latency {
                            s.latency = Histogram::default();
                        }
                        copy
                    }
                    None => Stats::default(),
                };
                Reply::Stats(Box::new(stats))
            }
            Cmd::Resume => {
                let _ = resume_tx.send(true);
                Reply::Ok
            }
            Cmd::Exit => {
                write_line(&mut out, &Reply::Ok).await?;
                std::process::exit(0);
            }
        };
        write_line(&mut out, &reply).await?;
    }
    Ok(())
}

async fn write_line(out: &mut tokio::io::Stdout, reply: &Reply) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// The soft open-file limit of this process.
fn open_file_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

async fn open(spec: OpenSpec, shared: Arc<Shared>) -> anyhow::Result<Reply> {
    if spec.gateways.is_empty() || spec.rooms.is_empty() {
        bail!("an open needs at least one gateway and one room");
    }
    if let Some(limit) = open_file_limit()
        && limit < spec.count + 64
    {
        bail!(
            "this process may open {limit} files, too few for {} connections: raise `ulimit -n` (scripts/bench does)",
            spec.count
        );
    }
    let gate = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let rooms: Vec<Arc<str>> = spec.rooms.iter().map(|r| Arc::from(r.as_str())).collect();
    let t0 = Instant::now();
    let mut waits = Vec::with_capacity(spec.count as usize);
    for i in spec.first..spec.first + spec.count {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .expect("the connect gate is never closed");
        let room_idx = (i % rooms.len() as u64) as usize;
        let member = i / rooms.len() as u64;
        let octet = 2 + i / PER_SOURCE_IP;
        if octet > 254 {
            bail!("too many connections for the source addresses 127.0.0.2-254");
        }
        let port = spec.gateways[(i % spec.gateways.len() as u64) as usize];
        let conn = ConnSpec {
            gateway: SocketAddr::from(([127, 0, 0, 1], port)),
            source: Ipv4Addr::new(127, 0, 0, octet as u8),
            room: rooms[room_idx].clone(),
            room_idx,
            token: mint_token(&spec.tenant, &format!("u{i}"))?,
            slow: spec.slow_every > 0 && member.is_multiple_of(spec.slow_every),
            reconnect: spec.reconnect,
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(client::run(conn, shared.clone(), tx));
        waits.push(tokio::spawn(async move {
            let ok = rx.await.unwrap_or(false);
            drop(permit);
            ok
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for w in waits {
        if w.await.unwrap_or(false) {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    Ok(Reply::Opened {
        ok,
        failed,
        secs: t0.elapsed().as_secs_f64(),
    })
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn call(&mut self, cmd: &Cmd) -> anyhow::Result<Reply> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .context("writing to a worker")?;
        self.stdin.flush().await?;
        let reply = self
            .lines
            .next_line()
            .await
            .context("reading a worker")?
            .context("a worker exited (see its stderr above)")?;
        let reply: Reply = serde_json::from_str(&reply).context("a worker's reply")?;
        if let Reply::Failed { message } = reply {
            bail!("a worker failed: {message}");
        }
        Ok(reply)
    }
}

/// The coordinator's handle on its worker processes.
pub struct Fleet {
    workers: Vec<Worker>,
}

/// How many connections opened, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
}

impl Fleet {
    pub async fn spawn(n: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            workers.push(Worker {
                child,
                stdin,
                lines: BufReader::new(stdout).lines(),
            });
        }
        Ok(Self { workers })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Splits `total` connections over the workers and opens them all.
    pub async fn open(&mut self, total: u64, spec: OpenSpec) -> anyhow::Result<Opened> {
        let n = self.workers.len() as u64;
        let t0 = Instant::now();
        let calls = self.workers.iter_mut().enumerate().map(|(k, w)| {
            let k = k as u64;
            let first = spec.first + total * k / n;
            let count = total * (k + 1) / n - total * k / n;
            let cmd = Cmd::Open(OpenSpec {
                first,
                count,
                ..spec.clone()
            });
            async move { w.call(&cmd).await }
        });
        let replies = futures_util::future::try_join_all(calls).await?;
        let mut opened = Opened {
            ok: 0,
            failed: 0,
            secs: t0.elapsed().as_secs_f64(),
        };
        for r in replies {
            if let Reply::Opened { ok, failed, .. } = r {
                opened.ok += ok;
                opened.failed += failed;
            }
        }
        Ok(opened)
    }

    /// Every worker's stats, merged; `reset_latency` starts a new latency window.
    pub async fn stats(&mut self, reset_latency: bool) -> anyhow::Result<Stats> {
        let cmd = Cmd::Stats { reset_latency };
        let replies =
            futures_util::future::try_join_all(self.workers.iter_mut().map(|w| w.call(&cmd)))
                .await?;
        let mut total = Stats::default();
        for r in replies {
            if let Reply::Stats(s) = r {
                total.merge(&s);
            }
        }
        Ok(total)
    }

    pub async fn resume(&mut self) -> anyhow::Result<()> {
        futures_util::future::try_join_all(self.workers.iter_mut().map(|w| w.call(&Cmd::Resume)))
            .await?;
        Ok(())
    }

    /// Ends every worker (their connections close with the process).
    pub async fn exit(mut self) {
        for w in &mut self.workers {
            let _ = w.call(&Cmd::Exit).await;
            let _ = w.child.wait().await;
        }
    }
}
