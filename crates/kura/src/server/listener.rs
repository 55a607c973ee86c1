//! The HTTP listener: each accepted connection passes two checks before the HTTP server
//! reads a byte of it. A connection from an address that admission has banned
//! (`kura_api::limits`: past its 429s, or forged and oversized requests) is closed at
//! once, with a reset, so a banned flood costs an accept and a close, not a parse, a
//! signature check and an answer per request. And an address may hold at most
//! [`Limits::connections_per_address`](kura_api::limits::Limits) connections; more are
//! closed the same way.
//!
//! In front of both, the kernel drops a banned address's packets before a handshake
//! ([`super::ban_filter`]); the check at accept catches what the filter does not hold.

use super::ban_filter::BanFilter;
use axum::serve::Listener;
use kura_api::limits::{client_key, Lane, Limiter};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Connections open per address.
type OpenCounts = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// A [`TcpListener`] that refuses banned addresses and caps connections per address.
#[derive(Debug)]
pub struct GuardedListener {
    inner: TcpListener,
    limiter: Arc<Limiter>,
    open: OpenCounts,
    now_ms: fn() -> u64,
    /// Connections refused at accept since start (banned, or over the cap).
    refused: Arc<std::sync::atomic::AtomicU64>,
    /// The kernel filter following the bans, when the socket could be shared with it.
    filter: Option<BanFilter>,
}

impl GuardedListener {
    /// Guard `inner` with `limiter`'s bans and caps. Within a Tokio runtime, this also
    /// starts the kernel filter that follows the bans.
    pub fn new(inner: TcpListener, limiter: Arc<Limiter>, now_ms: fn() -> u64) -> Self {
        let filter = match socket2::SockRef::from(&inner).try_clone() {
            Ok(socket) if tokio::runtime::Handle::try_current().is_ok() => {
                Some(BanFilter::follow(socket, Arc::clone(&limiter), now_ms))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("no kernel ban filter: cannot share the listening socket: {e}");
                None
            }
        };
        GuardedListener {
            inner,
            limiter,
            open: Arc::default(),
            now_ms,
            refused: Arc::default(),
            filter,
        }
    }

    /// Connections refused at accept so far (shared counter).
    pub fn refused(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.refused)
    }

    /// The lane of a connection from `peer` ([`super::lanes`]): a customer's address
    /// ([`Limiter::is_customer`]) or a trusted proxy takes the customers' lane.
    pub fn lane_of(&self, peer: SocketAddr) -> Lane {
        let ip = client_key(peer.ip());
        if kura_api::limits::is_trusted_proxy(ip, self.limiter.limits())
            || self.limiter.is_customer(ip, (self.now_ms)())
        {
            Lane::Customer
        } else {
            Lane::Guest
        }
    }

    /// Whether a connection from `ip` may be served now; counts it if so.
    fn admit(&self, ip: IpAddr) -> bool {
        // A trusted proxy carries many clients: admission judges them one by one.
        if kura_api::limits::is_trusted_proxy(ip, self.limiter.limits()) {
            return true;
        }
        if self.limiter.banned(ip, (self.now_ms)()) {
            return false;
        }
        let cap = self.limiter.limits().connections_per_address;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }
}

impl Listener for GuardedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            let ip = client_key(addr.ip());
            if self.admit(ip) {
                if self.filter.as_ref().is_some_and(BanFilter::attached) {
                    super::ban_filter::detach(&stream);
                }
                return (
                    CountedStream {
                        stream,
                        _slot: OpenSlot {
                            ip,
                            open: Arc::clone(&self.open),
                        },
                    },
                    addr,
                );
            }
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A reset rather than an orderly close: no TIME_WAIT is left behind and the
            // client learns at once.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection, counted against its address until dropped.
#[derive(Debug)]
pub struct CountedStream {
    stream: TcpStream,
    _slot: OpenSlot,
}

/// A [`CountedStream`] between two runtimes (see [`CountedStream::into_std`]).
#[derive(Debug)]
pub struct StdStream {
    stream: std::net::TcpStream,
    slot: OpenSlot,
}

impl CountedStream {
    /// The connection, taken off this runtime's reactor (still counted).
    pub fn into_std(self) -> io::Result<StdStream> {
        let CountedStream { stream, _slot } = self;
        Ok(StdStream {
            stream: stream.into_std()?,
            slot: _slot,
        })
    }

    /// The connection, on the reactor of the runtime this is called on.
    pub fn from_std(s: StdStream) -> io::Result<CountedStream> {
        Ok(CountedStream {
            stream: TcpStream::from_std(s.stream)?,
            _slot: s.slot,
        })
    }
}

/// One open connection of an address, counted until dropped.
#[derive(Debug)]
struct OpenSlot {
    ip: IpAddr,
    open: OpenCounts,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
