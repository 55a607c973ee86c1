//! What the tests that open an [`Exchange`] in process share: submitting commands as
//! the exchange itself, reading the engine, and waiting for a condition (polled, with a
//! deadline; never a fixed sleep).

use kura::server::backend::NodeBackend;
use kura::server::custody::CustodyView;
use kura::server::{Exchange, ServerConfig};
use kura_engine::{codec, Command, Engine, Event};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Journals `command` with the exchange's own origin; panics if it is refused.
pub fn submit(ex: &Exchange, command: Command) -> Vec<Event> {
    submit_to(ex.backend(), command)
}

/// [`submit`] through a backend (a node served on a runtime of the test's own).
pub fn submit_to(backend: &NodeBackend, command: Command) -> Vec<Event> {
    let ack = backend
        .handle()
        .submit_wait(codec::Entry {
            ctx_timestamp_ms: 0,
            origin: codec::Origin::Internal,
            command: command.clone(),
        })
        .expect("submitted");
    ack.result
        .unwrap_or_else(|r| panic!("{command:?} refused: {r}"))
}

/// Reads the engine's state.
pub fn query<R: Send + 'static>(ex: &Exchange, f: impl FnOnce(&Engine) -> R + Send + 'static) -> R {
    ex.backend().handle().query_wait(f).expect("query")
}

/// Wait (up to 30 s) until `cond` holds, checking every few milliseconds.
pub fn wait_for(ex: &Exchange, what: &str, mut cond: impl FnMut(&Exchange) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond(ex) {
        if Instant::now() > deadline {
            let view = ex.custody().map(|c| format!("{:?}", c.view().last_error));
            panic!("timed out waiting for {what} (custody error: {view:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The exchange's built-in devnet.
pub fn devnet(ex: &Exchange) -> kura_chain::Devnet {
    ex.custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone()
}

/// A node serving its API and admin socket on a runtime of its own.
pub struct Served {
    pub runtime: tokio::runtime::Runtime,
    pub backend: NodeBackend,
    /// The built-in devnet and the custody task's view, when the node follows one.
    pub devnet: Option<kura_chain::Devnet>,
    pub view: Option<Arc<Mutex<CustodyView>>>,
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Exchange>,
}

impl Served {
    /// The devnet (the node must follow one).
    pub fn chain(&self) -> &kura_chain::Devnet {
        self.devnet.as_ref().expect("the node follows no devnet")
    }

    /// The custody task's view (the node must follow a chain).
    pub fn custody_view(&self) -> &Arc<Mutex<CustodyView>> {
        self.view.as_ref().expect("the node follows no chain")
    }
}

/// Opens an exchange with `config` and serves it on 127.0.0.1 until [`shutdown`]; returns
/// once the admin socket is bound (it is before server.json is written).
pub fn serve(config: ServerConfig) -> Served {
    let dir = config.data_dir().to_path_buf();
    let exchange = Exchange::open(config, |_| {}).expect("open");
    let backend = exchange.backend().clone();
    let devnet = exchange.custody().and_then(|c| c.devnet()).cloned();
    let view = exchange.custody().map(|c| c.view_handle());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        exchange
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        exchange
    });
    wait_until("server.json", || dir.join("server.json").exists());
    Served {
        runtime,
        backend,
        devnet,
        view,
        addr,
        stop,
        task,
    }
}

/// Stops serving, then stops the exchange.
pub fn shutdown(s: Served) {
    let Served {
        runtime,
        backend,
        stop,
        task,
        ..
    } = s;
    drop(backend);
    stop.send(()).expect("signal");
    let exchange = runtime.block_on(task).expect("join");
    exchange.stop().expect("stop");
}

/// Wait (up to 30 s) until `cond` holds, checking every few milliseconds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
