//! The processes around the load: gateways the bench starts (pinned with
//! `taskset`, stopped by pid), and what `/proc` says about any pid (RSS,
//! CPU time).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn clock_ticks_per_s() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// User + system CPU time of `pid` in seconds (from `/proc/<pid>/stat`).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; fields are counted after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, utime 14 and stime 15 (1-based, man proc).
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((utime + stime) as f64 / clock_ticks_per_s() as f64)
}

/// CPU seconds used by a set of processes over an interval.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: f64,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pids: Vec<u32>) -> Self {
        let start = pids.iter().filter_map(|p| cpu_secs(*p).ok()).sum();
        Self {
            pids,
            start,
            at: Instant::now(),
        }
    }

    /// (CPU seconds, wall seconds) since `start`.
    pub fn read(&self) -> (f64, f64) {
        let now: f64 = self.pids.iter().filter_map(|p| cpu_secs(*p).ok()).sum();
        (now - self.start, self.at.elapsed().as_secs_f64())
    }
}

/// Moves every thread of `pid` to `cpus` (`taskset -a -p -c`).
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?
        .success();
    if !ok {
        bail!("taskset could not move pid {pid} to cpus {cpus}");
    }
    Ok(())
}

/// Busy and total time of one core so far, in clock ticks (`/proc/stat`).
pub fn core_ticks(core: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{core} ")))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal…
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// A free TCP port on loopback (bound, then released for the child to take).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// How the bench starts gateways.
#[derive(Debug, Clone)]
pub struct GatewayLauncher {
    pub bin: PathBuf,
    /// Core to pin each gateway to (`taskset -c`), if any.
    pub cpu: Option<usize>,
    pub env: Vec<(String, String)>,
    pub log_dir: PathBuf,
}

/// A room-gateway started by the bench; killed if dropped while running.
pub struct GatewayProc {
    pub port: u16,
    pub pid: u32,
    child: Child,
}

impl GatewayLauncher {
    /// Starts a gateway on `port` with `extra` settings and waits for `/readyz`.
    pub async fn start(&self, port: u16, extra: &[(&str, String)]) -> anyhow::Result<GatewayProc> {
        std::fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("creating {}", self.log_dir.display()))?;
        let log_path = self.log_dir.join(format!("room-gateway-{port}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SB_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("SB_BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let pid = child.id().context("gateway exited at once")?;
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "room-gateway on port {port} exited ({status}) before it was ready; see {}",
                    log_path.display()
                );
            }
            let ready = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(GatewayProc { port, pid, child });
            }
            if Instant::now() > deadline {
                bail!(
                    "room-gateway on port {port} not ready within 60s; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl GatewayProc {
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid).unwrap_or(0)
    }

    /// The gateway's counters from `GET /metrics` (Prometheus text), by
    /// their short names: `connections`, `frames_out`, `slow_consumer_closes`…
    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await?
            .text()
            .await?;
        let mut out = serde_json::Map::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let Some(short) = name.strip_prefix("switchboard_gateway_") else {
                continue;
            };
            let short = short.strip_suffix("_total").unwrap_or(short);
            if let Ok(v) = value.trim().parse::<f64>() {
                out.insert(short.to_owned(), serde_json::json!(v as u64));
            }
        }
        Ok(serde_json::Value::Object(out))
    }

    /// `GET /v1/stats/hops`: per-hop timing of the events sampled since
    /// the last call.
    pub async fn hops(&self) -> anyhow::Result<serde_json::Value> {
        Ok(
            reqwest::get(format!("http://127.0.0.1:{}/v1/stats/hops", self.port))
                .await?
                .json()
                .await?,
        )
    }

    /// SIGTERM (the gateway drains), then SIGKILL after `grace`. Returns how
    /// long it took to exit.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        signal(self.pid, "TERM")?;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => {
                eprintln!(
                    "[bench] gateway {} ignored SIGTERM for {grace:?}; killing it",
                    self.pid
                );
                self.child.kill().await?;
            }
        }
        Ok(t0.elapsed())
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?
        .success();
    if !ok {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Consumers alive on stream `SB_ROOMS` right now.
pub async fn rooms_consumers(js: &async_nats::jetstream::Context) -> anyhow::Result<usize> {
    let mut stream = js
        .get_stream("SB_ROOMS")
        .await
        .context("getting stream SB_ROOMS")?;
    Ok(stream
        .info()
        .await
        .context("SB_ROOMS info")?
        .state
        .consumer_count)
}

/// Machine facts for the report.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "online_cpus": cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
        "cpu_model": model,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// The room-gateway binary next to this one (both come from target/release).
pub fn default_gateway_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("room-gateway")))
        .filter(|p| Path::new(p).exists())
        .unwrap_or_else(|| PathBuf::from("target/release/room-gateway"))
}
