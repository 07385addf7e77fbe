//! The worker loop's side of `--route` tunnels: consuming the peeked request head, opening the
//! upstream connection, and driving [`Tunnel`]s from readiness events and timers.
//!
//! A tunnel's two sockets share one slot: the client socket is registered with the slot's token,
//! the upstream socket with the same token plus `UPSTREAM_BIT` (`slot.rs`) in its slot half. Slot indexes
//! stay far below that bit (connections are capped at a million per process), and the token keeps
//! the slot's generation, so stale events for either socket find nothing.

use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use hermod_core::reactor::interrupted;
use hermod_core::reactor::slots::Key;
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::slot::{upstream_key, Conn, Slot, UPSTREAM_BIT};
use super::WorkerLoop;
use crate::metrics::Rejected;
use crate::tunnel::http::MAX_HEAD;
use crate::tunnel::relay::Ready;
use crate::tunnel::{answer_and_close, Side, Tunnel, TunnelCx, Verdict};

impl WorkerLoop {
    /// Consumes the request head and starts the upstream connect.
    pub(super) fn open_tunnel(
        &mut self,
        key: Key,
        route: usize,
        len: usize,
        request: Vec<u8>,
        now: Instant,
    ) {
        let Some((mut client, _)) = self.take_routing(key) else {
            return;
        };
        let metrics = Arc::clone(&self.cx.metrics);
        metrics.tunnel_requests.fetch_add(1, Relaxed);
        if !consume(&mut client, len) {
            metrics.rejected(Rejected::Failed);
            return self.remove(key, None);
        }
        let addr = self.cx.settings.routes.get(route).map(|r| r.upstream.addr);
        let upstream = match addr.map(TcpStream::connect) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::debug!("tunnel upstream connect: {e}");
                metrics.tunnel_upstream_failures.fetch_add(1, Relaxed);
                answer_and_close(&mut client, 502);
                return self.remove(key, None);
            }
            None => return self.remove(key, None),
        };
        // Latency matters more than segment count, as for the client socket (nginx: tcp_nodelay).
        let _ = upstream.set_nodelay(true);
        let tunnel = Tunnel::new(client, upstream, request, now, &self.cx.settings);
        metrics.tunnels_open.fetch_add(1, Relaxed);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.conn = Conn::Tunnel(Box::new(tunnel));
        let Conn::Tunnel(t) = &mut slot.conn else {
            return;
        };
        let token = Token(key.token().0 | UPSTREAM_BIT);
        let fits = upstream_key(token) == Some(key);
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = fits
            && self
                .poll
                .registry()
                .register(t.upstream_mut(), token, interest)
                .is_ok();
        if !registered {
            tracing::warn!("cannot register a tunnel's upstream socket");
            return self.remove(key, None);
        }
        self.tunnel_after(key, Verdict::Continue, now);
    }

    /// A readiness event for a tunnel (`None`: from the read-again list).
    pub(super) fn on_tunnel(&mut self, key: Key, event: Option<(Side, Ready)>, now: Instant) {
        self.drive_tunnel(key, now, |t, cx| t.on_event(event, cx));
    }

    /// A tunnel's timer fired.
    pub(super) fn on_tunnel_timer(&mut self, key: Key, now: Instant) {
        self.drive_tunnel(key, now, Tunnel::on_timer);
    }

    /// Runs `step` on the tunnel in `key`'s slot (if it still holds one), then acts on its
    /// verdict.
    fn drive_tunnel(
        &mut self,
        key: Key,
        now: Instant,
        step: impl FnOnce(&mut Tunnel, &mut TunnelCx<'_>) -> Verdict,
    ) {
        let Some(Slot {
            conn: Conn::Tunnel(t),
            ..
        }) = self.slots.get_mut(key)
        else {
            return;
        };
        let mut cx = TunnelCx {
            now,
            pool: &mut self.pool,
            metrics: &self.cx.metrics,
            settings: &self.cx.settings,
        };
        let verdict = step(t, &mut cx);
        self.tunnel_after(key, verdict, now);
    }

    /// Acts on a tunnel's verdict and keeps its timer and the read-again list up to date.
    fn tunnel_after(&mut self, key: Key, verdict: Verdict, _now: Instant) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Conn::Tunnel(t) = &slot.conn else {
            return;
        };
        match verdict {
            Verdict::Close => return self.remove(key, None),
            Verdict::MoreToDo if !slot.read_queued => {
                slot.read_queued = true;
                self.read_list.push(key);
            }
            Verdict::MoreToDo | Verdict::Continue => {}
        }
        let deadline = t.deadline(&self.cx.settings);
        slot.arm_timer(&mut self.timers, key, deadline);
    }
}

/// Reads exactly `len` bytes (the request head, already peeked, so they are all there).
fn consume(stream: &mut TcpStream, mut len: usize) -> bool {
    let mut buf = [0u8; MAX_HEAD];
    while len > 0 {
        match stream.read(&mut buf[..len.min(MAX_HEAD)]) {
            Ok(0) => return false,
            Ok(n) => len -= n,
            Err(e) if interrupted(&e) => {}
            Err(_) => return false,
        }
    }
    true
}
