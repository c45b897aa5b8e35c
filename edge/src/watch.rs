//! `ConnectionWatch`: when a connection last read something and whether a request head is
//! overdue, so the edge can drop slowloris clients and close idle keep-alive connections.
//!
//! hyper's own `header_read_timeout` also runs while an HTTP/1.1 connection waits idle between
//! requests, which would make the idle timeout no longer than the header timeout; this one starts
//! at a request's first byte.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::EdgeLimits;

/// `head_started` when no request head is being read.
const NO_HEAD: u64 = u64::MAX;

/// What [`ConnectionWatch::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Nothing overdue; look again after this long.
    Fine(Duration),
    /// A request head has taken longer than the header read timeout.
    HeadTooSlow,
    /// No request and nothing read for the idle timeout.
    Idle,
}

/// Activity of one connection, shared by its I/O, its service and its driver.
#[derive(Debug)]
pub(crate) struct ConnectionWatch {
    base: Instant,
    /// Milliseconds since `base` of the last read that returned bytes, or of the last response end.
    last_read: AtomicU64,
    /// Milliseconds since `base` when the pending request head's first byte came, or `NO_HEAD`.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    watch_heads: bool,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnectionWatch {
    /// A watch for a new connection. `watch_heads` is for HTTP/1 only: HTTP/2 reads control
    /// frames between requests.
    pub(crate) fn new(limits: &EdgeLimits, watch_heads: bool) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last_read: AtomicU64::new(0),
            // A client that connects and sends nothing is as slow as one that sends too little.
            head_started: AtomicU64::new(if watch_heads { 0 } else { NO_HEAD }),
            in_flight: AtomicUsize::new(0),
            watch_heads,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_read.store(now, Ordering::Relaxed);
        if self.watch_heads && self.in_flight.load(Ordering::Acquire) == 0 {
            // Only the first byte of a head starts its clock.
            let _ = self.head_started.compare_exchange(
                NO_HEAD,
                now,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// A request's head arrived; the returned guard marks it in flight until it is dropped
    /// (with the response body).
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        RequestGuard(Arc::clone(self))
    }

    /// Whether the connection is overdue, or when to look again.
    pub(crate) fn check(&self) -> Check {
        let now = self.now_ms();
        let mut next = u64::MAX;
        if self.watch_heads {
            let started = self.head_started.load(Ordering::Acquire);
            if started != NO_HEAD {
                let deadline = started.saturating_add(millis(self.header_read_timeout));
                if now >= deadline {
                    return Check::HeadTooSlow;
                }
                next = next.min(deadline);
            }
        }
        let idle_ms = millis(self.idle_timeout);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let deadline = self
                .last_read
                .load(Ordering::Relaxed)
                .saturating_add(idle_ms);
            if now >= deadline {
                return Check::Idle;
            }
            next = next.min(deadline);
        } else {
            next = next.min(now.saturating_add(idle_ms));
        }
        Check::Fine(Duration::from_millis(next.saturating_sub(now).max(1)))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Marks a request in flight on its connection while alive.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ConnectionWatch>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let watch = &self.0;
        // Idle time counts from the end of the last response.
        watch.last_read.store(watch.now_ms(), Ordering::Relaxed);
        watch.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An I/O stream that tells its [`ConnectionWatch`] about every read.
#[derive(Debug)]
pub(crate) struct WatchedIo<IO> {
    io: IO,
    watch: Arc<ConnectionWatch>,
}

impl<IO> WatchedIo<IO> {
    pub(crate) fn new(io: IO, watch: Arc<ConnectionWatch>) -> Self {
        Self { io, watch }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WatchedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WatchedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header_ms: u64, idle_ms: u64) -> EdgeLimits {
        EdgeLimits {
            header_read_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            ..EdgeLimits::default()
        }
    }

    #[test]
    fn a_request_in_flight_is_never_idle_nor_slow() {
        let watch = ConnectionWatch::new(&limits(0, 0), true);
        assert_eq!(watch.check(), Check::HeadTooSlow);
        let guard = watch.request_started();
        assert!(matches!(watch.check(), Check::Fine(_)));
        // Body bytes of the request in flight do not start a head.
        watch.on_read();
        assert!(matches!(watch.check(), Check::Fine(_)));
        drop(guard);
        assert_eq!(watch.check(), Check::Idle);
        watch.on_read();
        assert_eq!(watch.check(), Check::HeadTooSlow);
    }

    #[test]
    fn http2_connections_are_only_checked_for_idleness() {
        let watch = ConnectionWatch::new(&limits(0, 0), false);
        watch.on_read();
        assert_eq!(watch.check(), Check::Idle);
        let quiet = ConnectionWatch::new(&limits(0, 60_000), false);
        assert!(matches!(quiet.check(), Check::Fine(_)));
    }
}
