//! `trickle`: what a steady, unsaturated load costs and how long it takes,
//! with the whole server side — gateway, ingest and NATS — on one core and
//! the generator on the other. 1,000 connections over 10 rooms at 100, 500,
//! 1,000 and 2,000 publishes/s, and 1,000 connections in one room at 50/s.
//! For each step: the gateway's CPU per delivered frame beside the floor
//! (plain `send()`s of the same frames to as many sockets, [`floor`]),
//! publish → frame p50/p99, and the gateway's per-hop timing of sampled
//! events (`/v1/stats/hops`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::floor::{self, FloorSpec, Sink};
use crate::scenarios::{
    Ctx, Report, add_acked, delivery, delivery_checks, progress, rooms, round, settle,
};
use crate::sys::{self, CpuMeter};
use crate::worker::Fleet;

/// One shape: connections, rooms, publish rates.
struct Shape {
    conns: u64,
    rooms: usize,
    rates: Vec<f64>,
}

pub async fn trickle(ctx: &Ctx) -> anyhow::Result<Report> {
    let shapes = if ctx.smoke {
        vec![
            Shape {
                conns: 20,
                rooms: 2,
                rates: vec![20.0, 50.0],
            },
            Shape {
                conns: 20,
                rooms: 1,
                rates: vec![10.0],
            },
        ]
    } else {
        vec![
            Shape {
                conns: 1_000,
                rooms: 10,
                rates: vec![100.0, 500.0, 1_000.0, 2_000.0],
            },
            Shape {
                conns: 1_000,
                rooms: 1,
                rates: vec![50.0],
            },
        ]
    };
    // SB_BENCH_TRICKLE=ROOMS:RATE,… runs only those steps (e.g. 10:500,1:50).
    let shapes = match std::env::var("SB_BENCH_TRICKLE") {
        Ok(only) if !only.is_empty() => only_steps(&shapes, &only)?,
        _ => shapes,
    };
    let step = Duration::from_secs(if ctx.smoke { 2 } else { 10 });
    let core = ctx.launcher.cpu;
    let mut rep = Report::new("trickle");
    // The whole server side on the gateway's core (SB_BENCH_TRICKLE_PIN=gateway
    // leaves ingest and NATS where they are, to compare).
    let gateway_only = std::env::var("SB_BENCH_TRICKLE_PIN").is_ok_and(|v| v == "gateway");
    let server_side: Vec<u32> = if gateway_only {
        Vec::new()
    } else {
        ctx.ingest_pid.into_iter().chain(ctx.nats_pid).collect()
    };
    if let Some(c) = core {
        for pid in &server_side {
            sys::pin(*pid, &c.to_string())?;
        }
    }
    let result = run_shapes(ctx, core, &shapes, step, &mut rep).await;
    if core.is_some() {
        for pid in &server_side {
            let _ = sys::pin(*pid, "0-1023");
        }
    }
    let steps = result?;
    rep.set("step_secs", json!(step.as_secs()));
    rep.set(
        "pinned",
        json!(match core {
            Some(c) if gateway_only => format!(
                "the gateway on core {c}; ingest and NATS unpinned (SB_BENCH_TRICKLE_PIN=gateway)"
            ),
            Some(c) => format!(
                "gateway, ingest ({}) and NATS ({}) on core {c}; generator and floor receiver elsewhere",
                ctx.ingest_pid.map_or("pid unknown".into(), |p| p.to_string()),
                ctx.nats_pid.map_or("pid unknown".into(), |p| p.to_string()),
            ),
            None => "nothing pinned".into(),
        }),
    );
    targets(&mut rep, &steps, ctx.smoke);
    rep.set("steps", json!(steps));
    Ok(rep)
}

/// The steps of `shapes` that `only` (`ROOMS:RATE,…`) names.
fn only_steps(shapes: &[Shape], only: &str) -> anyhow::Result<Vec<Shape>> {
    let mut out: Vec<Shape> = Vec::new();
    for want in only.split(',') {
        let (rooms, rate) = want
            .split_once(':')
            .and_then(|(r, p)| {
                Some((
                    r.trim().parse::<usize>().ok()?,
                    p.trim().parse::<f64>().ok()?,
                ))
            })
            .ok_or_else(|| anyhow::anyhow!("SB_BENCH_TRICKLE: {want:?} is not ROOMS:RATE"))?;
        let shape = shapes
            .iter()
            .find(|s| s.rooms == rooms && s.rates.contains(&rate))
            .ok_or_else(|| {
                anyhow::anyhow!("SB_BENCH_TRICKLE: no step {want:?} in the trickle shapes")
            })?;
        match out.iter_mut().find(|s| s.rooms == rooms) {
            Some(s) => s.rates.push(rate),
            None => out.push(Shape {
                conns: shape.conns,
                rooms,
                rates: vec![rate],
            }),
        }
    }
    Ok(out)
}

async fn run_shapes(
    ctx: &Ctx,
    core: Option<usize>,
    shapes: &[Shape],
    step: Duration,
    rep: &mut Report,
) -> anyhow::Result<Vec<Value>> {
    let mut steps = Vec::new();
    let sink = Sink::start().await?;
    for shape in shapes {
        let members = shape.conns / shape.rooms as u64;
        progress(format!(
            "trickle: {} connections over {} room(s) ({members} per room), rates {:?}/s",
            shape.conns, shape.rooms, shape.rates
        ));
        let mut gw = ctx.gateway(&[]).await?;
        let names = rooms("trk", shape.rooms);
        let mut fleet = Fleet::spawn(1).await?;
        let opened = fleet
            .open(shape.conns, ctx.spec(vec![gw.port], &names))
            .await?;
        anyhow::ensure!(opened.failed == 0, "trickle: connections failed to join");
        let ingest = ctx.ingest.unkeyed();
        let (mut acked, mut pub_failed) = (Vec::new(), 0);
        for &rate in &shape.rates {
            fleet.stats(true).await?;
            gw.hops().await?; // forget earlier samples
            let received_before = fleet.stats(false).await?.received;
            let cpu = CpuMeter::start(vec![gw.pid]);
            let others: Vec<CpuMeter> = ctx
                .ingest_pid
                .into_iter()
                .chain(ctx.nats_pid)
                .map(|p| CpuMeter::start(vec![p]))
                .collect();
            let core0 = core.and_then(sys::core_ticks);
            let p = ingest.paced(&names, rate, step, 0, 256, None).await;
            let (gw_secs, wall) = cpu.read();
            let (ingest_secs, nats_secs) = {
                let used: Vec<f64> = others.iter().map(|m| m.read().0).collect();
                let ingest = ctx.ingest_pid.map(|_| used[0]);
                let nats = ctx.nats_pid.map(|_| *used.last().expect("a meter per pid"));
                (ingest, nats)
            };
            let core_busy = match (core0, core.and_then(sys::core_ticks)) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                    Some((b1 - b0) as f64 / (t1 - t0) as f64)
                }
                _ => None,
            };
            add_acked(&mut acked, &p);
            pub_failed += p.failed;
            let d = delivery(&acked, &fleet.stats(false).await?);
            let s = settle(
                &mut fleet,
                d.expected,
                Duration::from_secs(2),
                Duration::from_secs(20),
            )
            .await?;
            let delivered = s.received - received_before;
            let hops = gw.hops().await?;
            let label = format!(
                "{} connections, {} room(s), {rate} publishes/s",
                shape.conns, shape.rooms
            );
            let floor = floor::measure(
                &FloorSpec {
                    sink: sink.addr,
                    sockets: shape.conns as usize,
                    rooms: shape.rooms,
                    publishes_per_s: rate,
                    secs: step.as_secs_f64().min(5.0),
                    room_name_len: names[0].len(),
                },
                ctx.launcher.cpu,
            )
            .await?;
            let us_per_frame = gw_secs * 1e6 / delivered.max(1) as f64;
            let p50 = s.latency.quantile(0.5) as f64 / 1000.0;
            let p99 = s.latency.quantile(0.99) as f64 / 1000.0;
            progress(format!(
                "trickle: {label}: {:.0} frames/s, gateway {us_per_frame:.2} µs/frame (floor {:.2} µs/send, ×{:.2}), p50 {p50:.2} ms, p99 {p99:.2} ms",
                delivered as f64 / wall,
                floor.us_per_send(),
                us_per_frame / floor.us_per_send().max(1e-9),
            ));
            steps.push(json!({
                "connections": shape.conns,
                "rooms": shape.rooms,
                "members_per_room": members,
                "publishes_per_s": rate,
                "published": p.total(),
                "frames_delivered": delivered,
                "frames_per_s": (delivered as f64 / wall).round(),
                "gateway_cpu_util": round(gw_secs / wall, 3),
                "ingest_cpu_util": ingest_secs.map(|s| round(s / wall, 3)),
                "nats_cpu_util": nats_secs.map(|s| round(s / wall, 3)),
                "server_core_busy": core_busy.map(|b| round(b, 3)),
                "gateway_cpu_us_per_frame": round(us_per_frame, 3),
                "floor_us_per_send": round(floor.us_per_send(), 3),
                "floor_sends": floor.sends,
                "floor_frame_bytes": floor.frame_bytes,
                "vs_floor": round(us_per_frame / floor.us_per_send().max(1e-9), 3),
                "latency": s.latency.summary_ms(),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "hops": hops,
                "publisher_behind": p.behind,
            }));
        }
        let s = fleet.stats(false).await?;
        delivery_checks(
            rep,
            &format!("{} connections over {} room(s)", shape.conns, shape.rooms),
            &acked,
            pub_failed,
            &s,
        );
        fleet.exit().await;
        gw.terminate(Duration::from_secs(20)).await?;
    }
    Ok(steps)
}

fn step_at(steps: &[Value], rooms: u64, rate: f64) -> Option<&Value> {
    steps
        .iter()
        .find(|s| s["rooms"] == rooms && s["publishes_per_s"].as_f64() == Some(rate))
}

fn targets(rep: &mut Report, steps: &[Value], smoke: bool) {
    if let Some(s) = step_at(steps, 10, 500.0) {
        let ratio = s["vs_floor"].as_f64().unwrap_or(f64::MAX);
        rep.target(
            "gateway CPU per frame within 1.2× of the floor (plain send()s of the same frames) at 500 publishes/s × 100 members, server side on one core",
            format!(
                "{:.2} µs/frame against a floor of {:.2} µs/send (×{ratio:.2})",
                s["gateway_cpu_us_per_frame"].as_f64().unwrap_or(0.0),
                s["floor_us_per_send"].as_f64().unwrap_or(0.0)
            ),
            ratio <= 1.2 && !smoke,
        );
        let p99 = s["p99_ms"].as_f64().unwrap_or(f64::MAX);
        rep.target(
            "publish → frame p99 ≤ 15 ms at 500 publishes/s × 100 members (50k frames/s), server side on one core",
            format!("p99 {p99:.2} ms (p50 {:.2} ms)", s["p50_ms"].as_f64().unwrap_or(0.0)),
            p99 <= 15.0 && !smoke,
        );
    }
    if let Some(s) = step_at(steps, 1, 50.0) {
        let p99 = s["p99_ms"].as_f64().unwrap_or(f64::MAX);
        rep.target(
            "publish → frame p99 ≤ 10 ms at 1,000 connections in one room × 50 publishes/s, server side on one core",
            format!("p99 {p99:.2} ms (p50 {:.2} ms)", s["p50_ms"].as_f64().unwrap_or(0.0)),
            p99 <= 10.0 && !smoke,
        );
    }
}
