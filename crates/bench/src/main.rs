//! `switchboard-bench`: Switchboard's load generator and benchmark (issue 9).
//!
//! The coordinator reads `.run/env`, creates its own tenant, starts the
//! gateways it measures, and runs each scenario, printing one JSON line per
//! scenario on stdout (progress on stderr). Connections live in worker
//! processes (copies of this binary, `switchboard-bench worker`), so one run
//! can hold more sockets than a process may open. `scripts/bench` builds,
//! starts the system, pins the processes and writes BENCHMARKS.md with
//! `switchboard-bench report`.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod floor;
mod hist;
mod publish;
mod report;
mod scenarios;
mod setup;
mod sys;
mod trickle;
mod worker;

fn main() -> std::process::ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("[bench] error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
