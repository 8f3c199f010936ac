//! Command line: the coordinator (scenarios), `worker`, and `report`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::publish::Ingest;
use crate::report::{self, ReportArgs};
use crate::scenarios::{self, Ctx};
use crate::setup;
use crate::sys::{self, GatewayLauncher};
use crate::worker;

const USAGE: &str = "\
usage: switchboard-bench [OPTIONS] [SCENARIO...]
       switchboard-bench report --results FILE --out FILE [--command CMD]... [--note TEXT]...

Scenarios (default: all, in this order): idle fanout latency trickle ingest reconnect-storm
slow-consumer.
Prints one JSON line per scenario on stdout, progress on stderr; exits 1 when a correctness
check (loss, duplicates, closes) failed, never because of speed.

Options:
  --smoke              every scenario at a tiny size (seconds, not minutes)
  --env FILE           the system's env file (default: $SB_RUN_DIR/env or .run/env)
  --gateway-bin PATH   room-gateway to start (default: next to this binary)
  --gateway-cpu N      pin the gateways it starts to core N (taskset -c)
  --ingest-pid PID     ingest's pid, to report its CPU use (and, for trickle, pin it)
  --nats-pid PID       nats-server's pid (trickle pins it to the gateway core)
  --log-dir DIR        logs of the gateways it starts (default: next to the env file, bench-logs/)
";

struct Options {
    smoke: bool,
    env: PathBuf,
    gateway_bin: PathBuf,
    gateway_cpu: Option<usize>,
    ingest_pid: Option<u32>,
    nats_pid: Option<u32>,
    log_dir: Option<PathBuf>,
    scenarios: Vec<String>,
}

pub fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let mut rest: Vec<String> = Vec::new();
    match args.next().as_deref() {
        Some("worker") => return worker::main().map(|_| ExitCode::SUCCESS),
        Some("floor") => {
            let spec = args.next().context("floor needs its spec (JSON)")?;
            return crate::floor::main(&spec).map(|_| ExitCode::SUCCESS);
        }
        Some("report") => {
            report::write(&report_args(args)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some("-h" | "--help") => {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(first) => rest.push(first.to_owned()),
        None => {}
    }
    rest.extend(args);
    let options = parse(rest)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(coordinate(options))
}

fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> anyhow::Result<String> {
    args.next()
        .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
}

fn parse(args: Vec<String>) -> anyhow::Result<Options> {
    let run_dir = std::env::var("SB_RUN_DIR").unwrap_or_else(|_| ".run".into());
    let mut o = Options {
        smoke: false,
        env: PathBuf::from(run_dir).join("env"),
        gateway_bin: sys::default_gateway_bin(),
        gateway_cpu: None,
        ingest_pid: None,
        nats_pid: None,
        log_dir: None,
        scenarios: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--smoke" => o.smoke = true,
            "--env" => o.env = value(&mut args, "--env")?.into(),
            "--gateway-bin" => o.gateway_bin = value(&mut args, "--gateway-bin")?.into(),
            "--gateway-cpu" => {
                o.gateway_cpu = Some(
                    value(&mut args, "--gateway-cpu")?
                        .parse()
                        .context("--gateway-cpu takes a core number")?,
                )
            }
            "--ingest-pid" => {
                o.ingest_pid = Some(
                    value(&mut args, "--ingest-pid")?
                        .parse()
                        .context("--ingest-pid takes a pid")?,
                )
            }
            "--nats-pid" => {
                o.nats_pid = Some(
                    value(&mut args, "--nats-pid")?
                        .parse()
                        .context("--nats-pid takes a pid")?,
                )
            }
            "--log-dir" => o.log_dir = Some(value(&mut args, "--log-dir")?.into()),
            s if scenarios::ALL.contains(&s) => o.scenarios.push(a),
            s => bail!("unknown argument {s:?}\n\n{USAGE}"),
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios = scenarios::ALL.iter().map(|s| s.to_string()).collect();
    }
    Ok(o)
}

fn report_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<ReportArgs> {
    let (mut results, mut out) = (None, None);
    let (mut commands, mut notes) = (Vec::new(), Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--results" => results = Some(value(&mut args, "--results")?.into()),
            "--out" => out = Some(value(&mut args, "--out")?.into()),
            "--command" => commands.push(value(&mut args, "--command")?),
            "--note" => notes.push(value(&mut args, "--note")?),
            s => bail!("unknown argument {s:?}\n\n{USAGE}"),
        }
    }
    Ok(ReportArgs {
        results: results.context("report needs --results")?,
        out: out.context("report needs --out")?,
        commands,
        notes,
    })
}

async fn coordinate(o: Options) -> anyhow::Result<ExitCode> {
    let env = setup::load_env(&o.env)?;
    anyhow::ensure!(
        o.gateway_bin.exists(),
        "{} not found: build it (cargo build --release --bins) or pass --gateway-bin",
        o.gateway_bin.display()
    );
    let tenant = setup::create_tenant(&env).await?;
    eprintln!(
        "[bench] tenant {} created; scenarios: {}",
        tenant.id,
        o.scenarios.join(" ")
    );
    let log_dir = o.log_dir.clone().unwrap_or_else(|| {
        o.env
            .parent()
            .map(|d| d.join("bench-logs"))
            .unwrap_or_else(|| PathBuf::from("bench-logs"))
    });
    let launcher = GatewayLauncher {
        bin: o.gateway_bin.clone(),
        cpu: o.gateway_cpu,
        env: env
            .vars
            .iter()
            .filter(|(k, _)| !k.starts_with("SB_BENCH"))
            .cloned()
            .collect(),
        log_dir,
    };
    let ctx = Ctx {
        ingest: Ingest::new(&env.ingest_url, &tenant),
        env,
        tenant,
        launcher,
        smoke: o.smoke,
        ingest_pid: o.ingest_pid,
        nats_pid: o.nats_pid,
    };
    let mut all_ok = true;
    for name in &o.scenarios {
        let t0 = std::time::Instant::now();
        let line = match scenarios::run(name, &ctx).await {
            Ok(rep) => {
                all_ok &= rep.ok();
                let mut v = rep.into_json(o.smoke);
                v["secs"] = serde_json::json!((t0.elapsed().as_secs_f64() * 10.0).round() / 10.0);
                v
            }
            Err(e) => {
                all_ok = false;
                eprintln!("[bench] {name} failed: {e:#}");
                serde_json::json!({
                    "scenario": name,
                    "profile": if o.smoke { "smoke" } else { "full" },
                    "ok": false,
                    "error": format!("{e:#}"),
                })
            }
        };
        println!("{line}");
        eprintln!(
            "[bench] {name}: {} in {:.1}s",
            if line["ok"] == true { "ok" } else { "FAILED" },
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
