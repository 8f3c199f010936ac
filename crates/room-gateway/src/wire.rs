//! WebSocket frames on the TCP socket itself, once `upgrade` has taken the
//! connection over from the HTTP layer: reading client frames here, writing
//! through the connection's [`Outbox`](crate::outbox::Outbox), which frames
//! with [`frame_header`].
//!
//! Why not actix-ws: it keeps every connection inside actix-http's HTTP/1
//! dispatcher, which holds an 8 KiB read and an 8 KiB write buffer for the
//! connection's whole life, and hands each frame through a channel to that
//! dispatcher before it reaches the socket. Here an idle connection holds no
//! buffer at all, and the frames queued for a connection leave in one
//! vectored write straight from the shared, once-encoded bytes. Parsing
//! client frames (masking, control frames, limits) is actix-http's own
//! `ws::Parser`, the code actix-ws runs too.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::net::TcpStream;

/// Frames written in one system call at most.
pub const MAX_BATCH: usize = 64;
/// How long a closed connection waits for the client's own close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Read buffer grown this much at a time; dropped again when emptied.
const READ_CHUNK: usize = 2048;

/// A whole message (continuations already joined) or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(ByteString),
    Binary,
    Ping(Bytes),
    Pong,
    Close,
}

/// Why reading stopped with an error (the close code follows from it).
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A frame or a joined message over `max_frame_bytes` (1009).
    TooBig,
    /// Anything else RFC 6455 forbids (1002).
    Protocol(String),
}

/// The reading side of an upgraded socket. `already_read` is what the HTTP
/// layer read past the upgrade request (a client may send `join` without
/// waiting for the handshake's answer).
pub fn reader(io: Arc<TcpStream>, already_read: BytesMut, max_frame: usize) -> WsReader {
    WsReader {
        io,
        buf: already_read,
        max: max_frame,
        partial: None,
        done: false,
    }
}

pub struct WsReader {
    io: Arc<TcpStream>,
    buf: BytesMut,
    max: usize,
    /// A fragmented message so far: whether it is text, and its bytes.
    partial: Option<(bool, BytesMut)>,
    done: bool,
}

impl WsReader {
    /// The next message; `None` once the peer is gone. Cancel-safe: what
    /// was read stays here for the next call.
    pub async fn recv(&mut self) -> Option<Result<Incoming, ReadError>> {
        loop {
            if self.done {
                return None;
            }
            match self.parse() {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                // Idle connections hold no read buffer.
                self.buf = BytesMut::new();
            }
            if self.io.readable().await.is_err() {
                self.done = true;
                return None;
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.done = true,
            }
        }
    }

    /// Reads and drops input until the peer closes or [`CLOSE_LINGER`]
    /// passes, so that the close frame just sent is not lost to a reset
    /// (closing a socket with unread input makes the kernel send RST).
    pub async fn linger(mut self) {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                self.buf.clear();
                if self.io.readable().await.is_err() {
                    return;
                }
                if self.buf.capacity() < READ_CHUNK {
                    self.buf.reserve(READ_CHUNK);
                }
                match self.io.try_read_buf(&mut self.buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }

    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            // Refuse an oversized frame from its header, before buffering it.
            if announced_len(&self.buf).is_some_and(|n| n > self.max as u64) {
                return Err(ReadError::TooBig);
            }
            let Some((fin, op, data)) =
                Parser::parse(&mut self.buf, true, self.max).map_err(|e| match e {
                    actix_http::ws::ProtocolError::Overflow => ReadError::TooBig,
                    e => ReadError::Protocol(e.to_string()),
                })?
            else {
                return Ok(None);
            };
            let data = data.unwrap_or_default();
            match op {
                OpCode::Ping => return Ok(Some(Incoming::Ping(data.freeze()))),
                OpCode::Pong => return Ok(Some(Incoming::Pong)),
                OpCode::Close => return Ok(Some(Incoming::Close)),
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "a new message began before the last one's continuation frames ended"
                                .into(),
                        ));
                    }
                    let text = op == OpCode::Text;
                    if fin {
                        return message(text, data).map(Some);
                    }
                    self.partial = Some((text, data));
                }
                OpCode::Continue => {
                    let Some((text, mut joined)) = self.partial.take() else {
                        return Err(ReadError::Protocol(
                            "a continuation frame without a message to continue".into(),
                        ));
                    };
                    if joined.len() + data.len() > self.max {
                        return Err(ReadError::TooBig);
                    }
                    joined.extend_from_slice(&data);
                    if fin {
                        return message(text, joined).map(Some);
                    }
                    self.partial = Some((text, joined));
                }
                OpCode::Bad => return Err(ReadError::Protocol("unknown opcode".into())),
            }
        }
    }
}

fn message(text: bool, data: BytesMut) -> Result<Incoming, ReadError> {
    if !text {
        return Ok(Incoming::Binary);
    }
    ByteString::try_from(data.freeze())
        .map(Incoming::Text)
        .map_err(|_| ReadError::Protocol("a text frame that is not UTF-8".into()))
}

/// The payload length a frame header at the start of `buf` announces, once
/// enough of the header is there.
fn announced_len(buf: &[u8]) -> Option<u64> {
    let short = *buf.get(1)? & 0x7f;
    match short {
        126 => Some(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as u64),
        127 => Some(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)),
        n => Some(n as u64),
    }
}

/// A whole control frame (ping, pong, close) on the wire.
pub fn control_frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut head = [0u8; 10];
    let n = frame_header(&mut head, op, payload.len());
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// Writes an unmasked, final frame header; returns its length.
pub fn frame_header(dst: &mut [u8; 10], op: OpCode, len: usize) -> usize {
    dst[0] = 0x80 | u8::from(op);
    match len {
        0..=125 => {
            dst[1] = len as u8;
            2
        }
        126..=0xffff => {
            dst[1] = 126;
            dst[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            dst[1] = 127;
            dst[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc_6455_length_forms() {
        let mut h = [0u8; 10];
        assert_eq!(frame_header(&mut h, OpCode::Text, 5), 2);
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(frame_header(&mut h, OpCode::Text, 300), 4);
        assert_eq!(&h[..4], &[0x81, 126, 1, 44]);
        assert_eq!(frame_header(&mut h, OpCode::Close, 70_000), 10);
        assert_eq!(h[0], 0x88);
        assert_eq!(&h[1..10], &[127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(frame_header(&mut h, OpCode::Text, 125), 2);
        assert_eq!(frame_header(&mut h, OpCode::Text, 126), 4);
        assert_eq!(frame_header(&mut h, OpCode::Text, 65_535), 4);
        assert_eq!(frame_header(&mut h, OpCode::Text, 65_536), 10);
    }

    #[test]
    fn announced_length_is_read_before_the_payload_arrives() {
        assert_eq!(announced_len(&[0x81]), None);
        assert_eq!(announced_len(&[0x81, 0x80 | 7]), Some(7));
        assert_eq!(announced_len(&[0x81, 0x80 | 126, 1]), None);
        assert_eq!(announced_len(&[0x81, 0x80 | 126, 1, 0]), Some(256));
        assert_eq!(
            announced_len(&[0x81, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
    }
}
