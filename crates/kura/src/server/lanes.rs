//! Customers first: the HTTP server's two lanes.
//!
//! A connection from a customer's address (one that made a correctly signed request in
//! the last hour, [`kura_api::limits::Limiter::is_customer`]) or from a trusted proxy
//! is served on the server's runtime, like the order pipeline it feeds. Every other
//! connection (public market-data readers, new clients, and every flood) is served on
//! the guest runtime, whose threads run under `SCHED_IDLE` (ADR 0021; nice 9 where that
//! is refused). While the machine has CPU to spare, both lanes get all they ask for.
//! When it has not, as in the first second of a flood, before its addresses have earned
//! their bans, the kernel gives the customers' lane the CPU first, and the flood's
//! connections wait instead of the orders and cancels.
//!
//! A customer's first connection (after an hour away, or ever) is a guest's: the
//! answer to its first correctly signed request carries `Connection: close`
//! (`kura_api::limits`), and its next connection takes the customers' lane.
//!
//! The server serves each connection with hyper's HTTP/1.1 server and the API's axum
//! router, with upgrades (WebSocket) and graceful shutdown, as `axum::serve` did.

use super::listener::{CountedStream, GuardedListener};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kura_api::limits::Lane;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio::sync::watch;
use tower::ServiceExt;

/// Worker threads of the guest runtime: half the CPUs, at least one.
pub fn guest_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The process's guest runtime (created by the first server that needs it), or `None`
/// when it cannot be started; then guests share the server's runtime.
fn guest_runtime() -> Option<tokio::runtime::Handle> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(guest_threads())
                .thread_name("kura-guest")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .map_err(|e| tracing::warn!(error = %e, "no guest lane: guests share the server's runtime"))
                .ok()
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
}

/// The guest lane's threads run under `SCHED_IDLE`, as the WebSocket runtime's (ADR
/// 0021).
fn lower_priority() {
    kura_api::ws::run_thread_when_idle("the guest lane");
}

/// Serve `router` on `listener` until `shutdown` resolves, each connection on its
/// lane; then stop accepting and wait for the connections in progress to finish their
/// requests. With `two_lanes` false (or without a guest runtime) every connection is a
/// customer's, served on the calling runtime.
pub async fn serve(
    mut listener: GuardedListener,
    router: Router,
    two_lanes: bool,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let guest = if two_lanes { guest_runtime() } else { None };
    // Every connection holds a receiver; the server is done when all are dropped.
    let (stop, watcher) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let lane = match guest {
            Some(_) => listener.lane_of(peer),
            None => Lane::Customer,
        };
        let connection = Connection {
            router: router.clone(),
            peer,
            lane,
            stop: watcher.clone(),
        };
        match (&guest, lane) {
            (Some(rt), Lane::Guest) => {
                // The guest runtime polls the socket from its own reactor.
                match stream.into_std() {
                    Ok(parts) => {
                        rt.spawn(async move {
                            match CountedStream::from_std(parts) {
                                Ok(stream) => connection.serve(stream).await,
                                Err(e) => {
                                    tracing::debug!(error = %e, "guest lane: connection lost")
                                }
                            }
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "guest lane: connection lost"),
                }
            }
            _ => {
                tokio::spawn(connection.serve(stream));
            }
        }
    }
    drop(listener);
    drop(watcher);
    let _ = stop.send(());
    stop.closed().await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    router: Router,
    peer: SocketAddr,
    lane: Lane,
    /// Changes when the server shuts down: finish the request in progress, then close.
    stop: watch::Receiver<()>,
}

impl Connection {
    async fn serve(self, stream: CountedStream) {
        let Connection {
            router,
            peer,
            lane,
            mut stop,
        } = self;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(lane);
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            _ = stop.changed() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::trace!(error = %e, %peer, "http: connection ended with an error");
        }
    }
}
