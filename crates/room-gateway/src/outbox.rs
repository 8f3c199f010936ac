//! The one ordered path out of a connection. Everything a socket carries —
//! `welcome`, replies, `joined`, `state`, replays, live events, pings, the
//! close frame — goes through its [`Outbox`], in the order it was pushed.
//!
//! Pushing never waits. A reply is written to the socket by the session
//! that pushes it. Live events are queued by the room's task and written by
//! a [`Flusher`] (one per worker thread) that visits, in turn, every outbox
//! with frames queued and writes all of them with one system call: a lone
//! event costs one plain `send()` per member, and when events come faster
//! than the sockets take them each visit carries more frames — no task is
//! woken per frame, nothing is copied. When
//! the socket does not take everything, the rest waits in `pending` (bytes,
//! up to [`HIGH_WATER`]) and then in a bounded queue of shared frames; the
//! session's writer drains them whenever the socket is writable again. A
//! queue that overflows cuts the connection off (4008) instead of slowing
//! anyone else.
//!
//! The writer's readiness is a condition it re-checks on every poll ("bytes
//! or frames wait, and the socket is writable"), never a one-shot
//! notification that can be spent while work remains.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::ws::OpCode;
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::protocol::{CloseCode, Frame};
use crate::wire::{MAX_BATCH, control_frame};

/// Unsent bytes above which frames wait as shared frames in the queue (not
/// copied) and count against its capacity.
pub const HIGH_WATER: usize = 64 * 1024;
/// How long the close frame may wait behind a slow client's backlog: a
/// client that reads again within this finds its frames, then the close.
const CLOSE_FLUSH: Duration = Duration::from_secs(60);
/// Queue capacity kept after draining; more is given back.
const KEEP_CAPACITY: usize = 8;

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written, or waiting in order.
    Accepted,
    /// The queue overflowed with this push: the connection is cut off
    /// (4008). The caller counts and logs it; it happens once.
    Overflowed,
    /// The connection is closing or gone; nothing was taken.
    Refused,
}

/// What the session's writer saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Everything waiting was written; poll again to wait for more.
    Drained,
    /// The connection was cut off with this close code.
    Killed(u16),
    /// The socket failed.
    Broken,
}

pub struct Outbox {
    socket: Arc<TcpStream>,
    state: Mutex<State>,
    /// Frames that may wait in the queue.
    cap: usize,
    /// Close code once the connection is to be cut off; the first wins.
    kill: AtomicU16,
}

#[derive(Default)]
struct State {
    /// Bytes the socket has not taken yet, in order; empty (and
    /// unallocated) while the client keeps up.
    pending: BytesMut,
    /// Frames (their bytes on the wire) waiting behind `pending` once it is
    /// over [`HIGH_WATER`].
    queue: VecDeque<Bytes>,
    /// The session's writer, woken when there is something to write or the
    /// connection is cut off.
    waker: Option<Waker>,
    broken: bool,
    /// The close frame is pushed: nothing more is accepted.
    closed: bool,
    /// It waits in a [`Flusher`]'s list.
    listed: bool,
}

impl State {
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.queue.is_empty()
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The socket is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Outbox {
    pub fn new(socket: Arc<TcpStream>, cap: usize) -> Self {
        Self {
            socket,
            state: Mutex::new(State::default()),
            cap,
            kill: AtomicU16::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("outbox lock is never poisoned: no code panics while holding it")
    }

    /// The close code the connection was cut off with, if it was.
    pub fn killed(&self) -> Option<u16> {
        match self.kill.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }

    /// Cuts the connection off with `code` (the session closes it); true for
    /// the first reason given.
    pub fn kill(&self, code: CloseCode) -> bool {
        let first = self
            .kill
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.lock().wake();
        }
        first
    }

    /// One frame, after everything pushed before it.
    pub fn text(&self, frame: &Frame) -> Pushed {
        self.push(std::slice::from_ref(frame.wire()), self.cap)
    }

    /// Frames ([`Frame::into_wire`]) in order, written together where the
    /// socket takes them.
    pub fn texts(&self, frames: &[Bytes]) -> Pushed {
        self.push(frames, self.cap)
    }

    /// A burst the caller bounds itself (a join's replay and held events,
    /// each at most a room's history or the queue's capacity): it may wait
    /// beyond the queue's capacity without cutting the connection off.
    pub fn burst(&self, frames: &[Bytes]) -> Pushed {
        self.push(frames, usize::MAX)
    }

    /// Queues frames for `flusher` to write (live events from a room's
    /// task): the writing of many events to many members batches itself.
    pub fn defer(self: &Arc<Self>, frames: &[Bytes], flusher: &Flusher) -> Pushed {
        let mut s = self.lock();
        if s.broken || s.closed || self.killed().is_some() {
            return Pushed::Refused;
        }
        if s.queue.len() + frames.len() > self.cap {
            drop(s);
            return if self.kill(CloseCode::SlowConsumer) {
                Pushed::Overflowed
            } else {
                Pushed::Refused
            };
        }
        s.queue.extend(frames.iter().cloned());
        if !std::mem::replace(&mut s.listed, true) {
            drop(s);
            flusher.list(self.clone());
        }
        Pushed::Accepted
    }

    /// The flusher's visit: writes what is queued, a batch per system call,
    /// while the socket takes it; what it does not take the writer gets.
    fn flush(&self) {
        let mut s = self.lock();
        s.listed = false;
        if s.broken || !s.pending.is_empty() {
            // Backed up: the writer is on it, and waits for the socket.
            return;
        }
        let st = &mut *s;
        while st.pending.is_empty() && !st.queue.is_empty() {
            // Sent from where they wait (no copy, no staging array), then
            // dropped.
            let n = st.queue.len().min(MAX_BATCH);
            let frames = &st.queue.make_contiguous()[..n];
            let sent = send_now(&self.socket, frames, &mut st.pending);
            st.queue.drain(..n);
            if sent.is_err() {
                st.broken = true;
                break;
            }
        }
        if s.queue.is_empty() && s.queue.capacity() > KEEP_CAPACITY {
            s.queue = VecDeque::new();
        }
        if !s.idle() || s.broken {
            s.wake();
        }
    }

    pub fn ping(&self) -> Pushed {
        self.push(&[control_frame(OpCode::Ping, &[])], self.cap)
    }

    pub fn pong(&self, payload: Bytes) -> Pushed {
        self.push(&[control_frame(OpCode::Pong, &payload)], self.cap)
    }

    fn push(&self, frames: &[Bytes], cap: usize) -> Pushed {
        if frames.is_empty() {
            return Pushed::Accepted;
        }
        let mut s = self.lock();
        if s.broken || s.closed || self.killed().is_some() {
            return Pushed::Refused;
        }
        let mut rest = frames;
        if s.idle() {
            // The client keeps up: straight to the socket, a batch per call.
            while !rest.is_empty() && s.pending.is_empty() {
                let n = rest.len().min(MAX_BATCH);
                if send_now(&self.socket, &rest[..n], &mut s.pending).is_err() {
                    s.broken = true;
                    s.wake();
                    return Pushed::Refused;
                }
                rest = &rest[n..];
            }
            if !s.pending.is_empty() {
                s.wake();
            }
        }
        for f in rest {
            if s.queue.is_empty() && s.pending.len() <= HIGH_WATER {
                s.pending.extend_from_slice(f);
            } else if s.queue.len() < cap {
                s.queue.push_back(f.clone());
            } else {
                drop(s);
                return if self.kill(CloseCode::SlowConsumer) {
                    Pushed::Overflowed
                } else {
                    Pushed::Refused
                };
            }
        }
        Pushed::Accepted
    }

    /// The session's writer: writes what waits while the socket takes it.
    /// Pending while there is nothing to write or the socket is full; ready
    /// once everything was written, or the connection is over.
    pub fn poll_write(&self, cx: &mut Context<'_>) -> Poll<Wrote> {
        let mut s = self.lock();
        // Registered on every poll, so a push or a kill from another task
        // always finds the current writer to wake; the kill is read after,
        // under the lock its waking takes, so none falls in between.
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        if let Some(code) = self.killed() {
            return Poll::Ready(Wrote::Killed(code));
        }
        if s.broken {
            return Poll::Ready(Wrote::Broken);
        }
        if s.idle() {
            return Poll::Pending;
        }
        match self.write_some(&mut s, cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Wrote::Drained),
            Poll::Ready(Err(Closed)) => {
                s.broken = true;
                Poll::Ready(Wrote::Broken)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes until nothing waits (ready) or the socket is full (pending).
    /// Through tokio: a full socket clears its readiness, so the next poll
    /// waits for it to drain.
    fn write_some(&self, s: &mut State, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        loop {
            if !s.pending.is_empty() {
                match self.socket.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Closed)),
                    Poll::Ready(Ok(())) => {}
                }
                match self.socket.try_write(&s.pending) {
                    Ok(n) => {
                        let _ = s.pending.split_to(n);
                        if s.pending.is_empty() {
                            // Caught up: give the memory back.
                            s.pending = BytesMut::new();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(Err(Closed)),
                }
                continue;
            }
            if s.queue.is_empty() {
                if s.queue.capacity() > KEEP_CAPACITY {
                    s.queue = VecDeque::new();
                }
                return Poll::Ready(Ok(()));
            }
            let n = s.queue.len().min(MAX_BATCH);
            let mut slices = [IoSlice::new(&[]); MAX_BATCH];
            for (slot, f) in slices.iter_mut().zip(s.queue.iter()) {
                *slot = IoSlice::new(f);
            }
            let written = match self.socket.try_write_vectored(&slices[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(_) => return Poll::Ready(Err(Closed)),
            };
            // Whole frames leave the queue; the one the socket stopped in
            // goes, rest and all, to `pending`.
            let mut left = written;
            while left > 0 {
                let f = s
                    .queue
                    .pop_front()
                    .expect("written bytes came from queued frames");
                if left >= f.len() {
                    left -= f.len();
                } else {
                    s.pending.extend_from_slice(&f[left..]);
                    left = 0;
                }
            }
            if written == 0 {
                // Readiness was cleared: wait for the socket.
                match self.socket.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Closed)),
                    Poll::Ready(Ok(())) => {}
                }
            }
        }
    }

    /// Pushes the close frame after what waits (a slow consumer's queue is
    /// dropped; its unsent bytes stay), waits up to [`CLOSE_FLUSH`] for the
    /// socket to take it all, and half-closes the socket.
    pub async fn close(&self, code: u16, reason: &str) {
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.to_be_bytes());
        // Control frames carry at most 125 bytes.
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        let frame = control_frame(OpCode::Close, &payload);
        {
            let mut s = self.lock();
            if code == CloseCode::SlowConsumer.code() {
                s.queue.clear();
            }
            if !s.broken && !s.closed {
                if s.idle() {
                    if send_now(&self.socket, std::slice::from_ref(&frame), &mut s.pending).is_err()
                    {
                        s.broken = true;
                    }
                } else if s.queue.is_empty() && s.pending.len() <= HIGH_WATER {
                    s.pending.extend_from_slice(&frame);
                } else {
                    s.queue.push_back(frame);
                }
            }
            s.closed = true;
        }
        let drained = std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.broken || s.idle() {
                return Poll::Ready(());
            }
            match self.write_some(&mut s, cx) {
                Poll::Ready(Err(Closed)) => {
                    s.broken = true;
                    Poll::Ready(())
                }
                Poll::Ready(Ok(())) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        });
        let _ = tokio::time::timeout(CLOSE_FLUSH, drained).await;
        // FIN: the client answers our close with its own and hangs up.
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write);
    }
}

/// Sends frames (at most [`MAX_BATCH`]) straight to the socket with one
/// system call — `send()` for one, `sendmsg()` for more — outside tokio's
/// readiness tracking (a full socket here only means the writer's next
/// readiness check finds it full and waits); what the socket does not take
/// is appended to `pending`, in order.
fn send_now(socket: &TcpStream, frames: &[Bytes], pending: &mut BytesMut) -> Result<(), Closed> {
    debug_assert!(frames.len() <= MAX_BATCH && pending.is_empty());
    let sock = socket2::SockRef::from(socket);
    let sent = if let [one] = frames {
        sock.send(one)
    } else {
        let mut slices = [IoSlice::new(&[]); MAX_BATCH];
        for (s, f) in slices.iter_mut().zip(frames) {
            *s = IoSlice::new(f);
        }
        sock.send_vectored(&slices[..frames.len()])
    };
    let written = match sent {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            0
        }
        Err(_) => return Err(Closed),
    };
    let mut skip = written;
    for f in frames {
        if skip >= f.len() {
            skip -= f.len();
            continue;
        }
        pending.extend_from_slice(&f[skip..]);
        skip = 0;
    }
    Ok(())
}

/// Writes the live events rooms queue: one task per worker thread that
/// visits, in the order they were queued to, every outbox with frames
/// waiting, and writes all of each one's frames with one system call.
#[derive(Clone)]
pub struct Flusher {
    inner: Arc<FlusherInner>,
}

/// What a flusher does next: write an outbox, or run what was to follow
/// every write listed before it.
enum Visit {
    Outbox(Arc<Outbox>),
    Then(Box<dyn FnOnce() + Send>),
}

struct FlusherInner {
    listed: Mutex<VecDeque<Visit>>,
    /// Rung when an outbox is listed; the task re-checks the list after
    /// every ring, so none is missed.
    bell: tokio::sync::Notify,
}

/// Outboxes a flusher writes before it lets the rooms on its thread run.
const FLUSH_BEFORE_YIELD: usize = 32;

thread_local! {
    static FLUSHER: std::cell::OnceCell<Flusher> = const { std::cell::OnceCell::new() };
}

impl Flusher {
    /// This worker thread's flusher, started on first use.
    pub fn current() -> Self {
        FLUSHER.with(|f| f.get_or_init(Self::start).clone())
    }

    fn start() -> Self {
        let f = Self {
            inner: Arc::new(FlusherInner {
                listed: Mutex::new(VecDeque::new()),
                bell: tokio::sync::Notify::new(),
            }),
        };
        let inner = f.inner.clone();
        tokio::spawn(async move {
            let mut visits = 0usize;
            loop {
                let next = inner
                    .listed
                    .lock()
                    .expect("flusher list lock is never poisoned")
                    .pop_front();
                match next {
                    Some(Visit::Outbox(outbox)) => {
                        outbox.flush();
                        visits += 1;
                        if visits.is_multiple_of(FLUSH_BEFORE_YIELD) {
                            // Let rooms queue what came meanwhile: the
                            // outboxes still listed then carry more at once.
                            tokio::task::yield_now().await;
                        }
                    }
                    Some(Visit::Then(f)) => f(),
                    None => inner.bell.notified().await,
                }
            }
        });
        f
    }

    fn push(&self, visit: Visit) {
        let was_empty = {
            let mut listed = self
                .inner
                .listed
                .lock()
                .expect("flusher list lock is never poisoned");
            listed.push_back(visit);
            listed.len() == 1
        };
        // A list that held something already has the task's attention: it
        // empties the list before it waits again.
        if was_empty {
            self.inner.bell.notify_one();
        }
    }

    fn list(&self, outbox: Arc<Outbox>) {
        self.push(Visit::Outbox(outbox));
    }

    /// Runs `f` once this flusher has written every outbox listed with it
    /// so far: when what a room just queued on this thread is on the wire
    /// (or waits for a client that does not read). It times sampled events
    /// and ends their traces' write spans.
    pub fn then(&self, f: impl FnOnce() + Send + 'static) {
        self.push(Visit::Then(Box::new(f)));
    }
}
