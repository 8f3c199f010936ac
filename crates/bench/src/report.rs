//! `switchboard-bench report`: turns the JSON lines of a run into
//! BENCHMARKS.md (machine, exact commands, results against the targets).

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

pub struct ReportArgs {
    pub results: PathBuf,
    pub out: PathBuf,
    pub commands: Vec<String>,
    pub notes: Vec<String>,
}

pub fn write(args: &ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let m = crate::sys::machine();
    let profile = lines
        .first()
        .and_then(|l| l["profile"].as_str())
        .unwrap_or("full");
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(&format!(
        "Written by `scripts/bench` ({profile} run) on {} UTC. Every figure below comes from \
         the project's own load generator, `crates/bench` (`switchboard-bench`), against the \
         real services on this machine over loopback. Speed is checked here, never in timed \
         tests; the smoke run (`scripts/bench --smoke`, part of `scripts/test`) checks only \
         that nothing is lost or duplicated.\n\n",
        now_utc()
    ));
    if profile == "smoke" {
        md.push_str(
            "**This file was written by a smoke run: tiny sizes, so the figures say nothing \
             about speed and no target can be met. Run `scripts/bench` for real figures.**\n\n",
        );
    }
    md.push_str("## Machine\n\n");
    md.push_str(&format!(
        "- {} cores ({}), {} GiB memory, Linux {}\n",
        m["online_cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?")
    ));
    for n in &args.notes {
        md.push_str(&format!("- {n}\n"));
    }
    md.push_str("\n## Commands\n\n```sh\n");
    for c in &args.commands {
        md.push_str(c);
        md.push('\n');
    }
    md.push_str("```\n\n## Results against the targets\n\n");
    md.push_str("| scenario | target | measured | met |\n|---|---|---|---|\n");
    for l in &lines {
        let name = l["scenario"].as_str().unwrap_or("?");
        if let Some(err) = l["error"].as_str() {
            md.push_str(&format!(
                "| {name} | (scenario did not finish) | {} | no |\n",
                cell(err)
            ));
            continue;
        }
        for t in l["targets"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {name} | {} | {} | {} |\n",
                cell(t["target"].as_str().unwrap_or("")),
                cell(t["measured"].as_str().unwrap_or("")),
                if t["met"] == true {
                    "met"
                } else {
                    "**not met**"
                }
            ));
        }
    }
    let figures: Vec<String> = lines
        .iter()
        .flat_map(|l| {
            let name = l["scenario"].as_str().unwrap_or("?").to_owned();
            l["figures"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |f| {
                    format!(
                        "| {name} | {} | {} |\n",
                        cell(f["figure"].as_str().unwrap_or("")),
                        cell(f["measured"].as_str().unwrap_or(""))
                    )
                })
        })
        .collect();
    if !figures.is_empty() {
        md.push_str(
            "\nMeasured beside the targets:\n\n| scenario | figure | measured |\n|---|---|---|\n",
        );
        figures.iter().for_each(|f| md.push_str(f));
    }
    md.push_str(&trickle_table(&lines));
    md.push_str(READING);
    md.push_str(TUNING);
    md.push_str("\n## Correctness checks\n\n| scenario | check | result |\n|---|---|---|\n");
    for l in &lines {
        let name = l["scenario"].as_str().unwrap_or("?");
        for c in l["checks"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {name} | {} | {} `{}` |\n",
                cell(c["check"].as_str().unwrap_or("")),
                if c["ok"] == true { "ok" } else { "**FAILED**" },
                cell(&c["detail"].to_string())
            ));
        }
    }
    md.push_str("\n## Details\n\nThe JSON line each scenario printed.\n");
    for l in &lines {
        md.push_str(&format!(
            "\n### {}\n\n```json\n{}\n```\n",
            l["scenario"].as_str().unwrap_or("?"),
            serde_json::to_string_pretty(l).unwrap_or_default()
        ));
    }
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// What was changed to reach the targets, and what each change bought.
const TUNING: &str = include_str!("../TUNING.md");

/// What every run's figures mean; the same for every run.
const READING: &str = "
How to read these figures:
- *Gateway CPU per delivered frame* is the gateway process's user + system time (from
  `/proc/<pid>/stat`) over the frames the clients counted in the same step. On loopback the
  receiving side's TCP processing runs in the sender's system call, so part of the clients'
  kernel work is charged to the gateway: a real network would show less.
- *Latency* is publish → frame: from the moment the generator sends the HTTP request to ingest
  (the `t` in the payload) to the moment a client has parsed the frame, so it includes ingest,
  JetStream, the gateway, and the generator's own queueing when its core is busy. The latency
  targets are measured with plain publishes; the same load with an `Idempotency-Key` on every
  publish (as the other scenarios send, so their retries are safe) adds ingest's PostgreSQL
  read and write of the key's record, and is shown beside the targets.
- *RSS per connection* is the growth of the gateways' resident memory (`VmRSS`) from before the
  first connection to after the last joined, divided by the connections.
- Loss and duplicates are exact: each client checks every event against its room's `prev`
  chain and counts what it holds; the generator counts what ingest acknowledged per room.
";

/// The trickle scenario step by step: cost against the floor, latency, and
/// where the time goes.
fn trickle_table(lines: &[Value]) -> String {
    let Some(t) = lines.iter().find(|l| l["scenario"] == "trickle") else {
        return String::new();
    };
    let steps = t["results"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if steps.is_empty() {
        return String::new();
    }
    let hop = |s: &Value, name: &str| crate::scenarios::hop_ms(&s["hops"], name);
    let mut md = format!(
        "\n## Trickle: a steady load with the server side on one core\n\n{}. Each row is one \
         step of {} s. *Floor* is the same number of plain `send()`s of frames like the \
         gateway's, from one process on the same core to as many loopback sockets, in the \
         same fan-out shape and at the same rate. Hops are p50 / p99 in ms over the events \
         ingest sampled (`SB_HOP_SAMPLE`): *ingest → stored* is HTTP in to JetStream's store \
         time, *stored → room* the RePublish, the live connection and the room task's \
         wake-up, *room → written* the room task handing every member its frame and the \
         flusher writing it (to the point its thread's flusher passed it), *per member* that \
         divided by the members.\n\n",
        t["results"]["pinned"].as_str().unwrap_or("pinning unknown"),
        t["results"]["step_secs"]
    );
    md.push_str(
        "| connections / rooms | publishes/s | frames/s | gateway µs/frame | floor µs/send | × floor | p50 ms | p99 ms | ingest → stored | stored → room | room → written | per member (µs) | samples |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &steps {
        let per_member = &s["hops"]["written_per_member"];
        md.push_str(&format!(
            "| {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
            s["connections"],
            s["rooms"],
            s["publishes_per_s"],
            s["frames_per_s"],
            s["gateway_cpu_us_per_frame"],
            s["floor_us_per_send"],
            s["vs_floor"],
            s["p50_ms"],
            s["p99_ms"],
            hop(s, "http_to_stored"),
            hop(s, "stored_to_room"),
            hop(s, "room_to_written"),
            per_member["p50_us"],
            per_member["p99_us"],
            s["hops"]["samples"],
        ));
    }
    md
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
