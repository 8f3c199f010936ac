//! The floor a gateway's CPU per frame is held against: the same number of
//! plain `send()`s of frames like the gateway's, from one process on the
//! gateway's core to as many loopback sockets, in the same fan-out shape
//! (each "publish" is one frame to every socket of one room) and at the same
//! rate. What the kernel charges for that is the least any gateway could
//! spend per frame on this machine.
//!
//! `switchboard-bench floor …` is the sender (single-threaded, blocking
//! writes, TCP_NODELAY like the gateway); [`Sink`] is the receiving side,
//! run by the coordinator on the generator's core.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use crate::sys;

/// What the sender is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorSpec {
    pub sink: SocketAddr,
    pub sockets: usize,
    /// Socket `i` belongs to room `i % rooms`.
    pub rooms: usize,
    pub publishes_per_s: f64,
    pub secs: f64,
    /// Length of the room names in the frames.
    pub room_name_len: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FloorResult {
    pub sends: u64,
    pub cpu_secs: f64,
    pub wall_secs: f64,
    pub frame_bytes: usize,
}

impl FloorResult {
    pub fn us_per_send(&self) -> f64 {
        self.cpu_secs * 1e6 / self.sends.max(1) as f64
    }
}

/// A frame like the gateway's for a `bench.tick` event: the same fields, the
/// same lengths, behind a server's WebSocket header.
fn frame(room_name_len: usize) -> Vec<u8> {
    let room = "r".repeat(room_name_len);
    let json = format!(
        r#"{{"type":"event","room":"{room}","seq":12345678,"prev":12345600,"id":"evt_{}","event":"bench.tick","ts":"2026-12-01T21:00:00.000Z","source":"api","data":{{"t":1764622800000000,"p":""}}}}"#,
        "0".repeat(32)
    );
    let mut out = Vec::with_capacity(json.len() + 4);
    out.push(0x81);
    if json.len() < 126 {
        out.push(json.len() as u8);
    } else {
        out.push(126);
        out.extend_from_slice(&(json.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(json.as_bytes());
    out
}

/// `switchboard-bench floor SPEC_JSON`: connects, sends, prints the result.
pub fn main(spec_json: &str) -> anyhow::Result<()> {
    let spec: FloorSpec = serde_json::from_str(spec_json).context("floor: bad spec")?;
    let room_count = spec.rooms.max(1);
    let mut rooms: Vec<Vec<TcpStream>> = (0..room_count).map(|_| Vec::new()).collect();
    for i in 0..spec.sockets {
        let s = TcpStream::connect(spec.sink).context("floor: connecting to the sink")?;
        s.set_nodelay(true)?;
        rooms[i % room_count].push(s);
    }
    let frame = frame(spec.room_name_len);
    // Let the sink accept everything before the clock starts.
    std::thread::sleep(Duration::from_millis(300));
    let me = std::process::id();
    let cpu0 = sys::cpu_secs(me)?;
    let t0 = Instant::now();
    let (mut published, mut sends) = (0u64, 0u64);
    while t0.elapsed().as_secs_f64() < spec.secs {
        let due = (t0.elapsed().as_secs_f64() * spec.publishes_per_s) as u64;
        while published < due {
            let room = &mut rooms[(published % room_count as u64) as usize];
            for s in room.iter_mut() {
                s.write_all(&frame).context("floor: send")?;
                sends += 1;
            }
            published += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let result = FloorResult {
        sends,
        cpu_secs: sys::cpu_secs(me)? - cpu0,
        wall_secs: t0.elapsed().as_secs_f64(),
        frame_bytes: frame.len(),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The receiving side: accepts connections and reads everything.
pub struct Sink {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the sender on core `cpu` (when given) against `sink`.
pub async fn measure(spec: &FloorSpec, cpu: Option<usize>) -> anyhow::Result<FloorResult> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let json = serde_json::to_string(spec)?;
    let mut cmd = match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(&exe);
            cmd
        }
        None => Command::new(&exe),
    };
    let out = cmd
        .arg("floor")
        .arg(json)
        .kill_on_drop(true)
        .output()
        .await
        .context("running the floor sender")?;
    if !out.status.success() {
        bail!(
            "the floor sender failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the floor sender's result")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_frames_are_single_text_frames_of_gateway_size() {
        let f = frame(20);
        assert_eq!(f[0], 0x81);
        let len = if f[1] == 126 {
            u16::from_be_bytes([f[2], f[3]]) as usize + 4
        } else {
            f[1] as usize + 2
        };
        assert_eq!(len, f.len());
        let body = &f[f.len() - (len - if f[1] == 126 { 4 } else { 2 })..];
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], "event");
        assert!((190..260).contains(&f.len()), "{}", f.len());
    }
}
