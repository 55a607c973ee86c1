//! Admission at the listener of a served node: an address that sends forged requests
//! (no API key, a bad signature) is banned after a handful, the answer that bans it
//! closes its connection, and from then on its connections never reach the HTTP server
//! (the kernel drops their SYNs, or they are reset at accept), while other addresses are
//! served; when the ban ends the address connects again. An address holds at most
//! `connections_per_address` connections at once. A storm of WebSocket upgrades over the
//! per-address limits bans its address too, and so do WebSocket connections closed again
//! and again for breaking the rules; a ban closes the WebSocket connections the address
//! already held.

use crate::node_common::{serve, shutdown};
use kura::server::ServerConfig;
use kura_api::limits::Limits;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a connection attempt may wait for its handshake. The kernel retransmits a
/// dropped SYN after 1 s; an answered one completes in microseconds on loopback.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_millis(2_500);

/// A connection from `from`; an error when the server reset it at once (on loopback
/// the reset may come before the connect completes), or `TimedOut` when its SYNs went
/// unanswered for [`CONNECT_WAIT`] (the kernel ban filter dropped them).
async fn try_connect(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    match tokio::time::timeout(CONNECT_WAIT, socket.connect(to)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Whether a connection attempt from `from` goes unanswered (the kernel drops a banned
/// address's SYNs), rather than being accepted, refused or reset.
async fn unanswered(from: Ipv4Addr, to: SocketAddr) -> bool {
    matches!(try_connect(from, to).await, Err(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// Wait until `from`'s connection attempts go unanswered: the filter follows a ban a
/// moment after it is made, and meanwhile the address is reset at accept.
async fn until_unanswered(from: Ipv4Addr, to: SocketAddr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !unanswered(from, to).await {
        assert!(
            std::time::Instant::now() < deadline,
            "{from}'s SYNs were still answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn connect(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    try_connect(from, to).await.expect("connect")
}

/// One request on a new connection from `from`: its answer, or `None` if the
/// connection was refused, reset or closed without one.
async fn once(from: Ipv4Addr, to: SocketAddr, request: &str) -> Option<(u16, String)> {
    let mut stream = try_connect(from, to).await.ok()?;
    exchange(&mut stream, request).await
}

/// Write `request` and read one answer: its status and head, or `None` when the server
/// closed or reset the connection without answering.
async fn exchange(stream: &mut TcpStream, request: &str) -> Option<(u16, String)> {
    if stream.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while seen.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let status = head.get(9..12).and_then(|s| s.parse().ok())?;
    Some((status, head))
}

const PING: &str = "GET /api/v3/ping HTTP/1.1\r\nHost: kura\r\n\r\n";
const UNSIGNED_ORDER: &str = "POST /api/v3/order HTTP/1.1\r\nHost: kura\r\n\
    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 24\r\n\r\n\
    symbol=BTCJPY&side=BUY&x";

/// A served node (in a new directory) with these admission limits.
fn serve_with(limits: Limits) -> (tempfile::TempDir, crate::node_common::Served) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path());
    config.api.limits = limits;
    let served = serve(config);
    (dir, served)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket upgrade from `from`: the connection, or the refusal's HTTP status
/// (`None`: no answer, the connection was reset or its SYNs dropped).
async fn upgrade(from: Ipv4Addr, to: SocketAddr) -> Result<Ws, Option<u16>> {
    let stream = try_connect(from, to).await.map_err(|_| None)?;
    match tokio_tungstenite::client_async(format!("ws://{to}/ws"), stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(Some(r.status().as_u16())),
        Err(_) => Err(None),
    }
}

/// The reason of the close frame that ends `ws` (waiting at most 30 s).
async fn close_reason(ws: &mut Ws) -> Option<String> {
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(message) = ws.next().await {
            if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = message {
                return frame.map(|f| f.reason.to_string());
            }
        }
        None
    })
    .await
    .expect("closed in time")
}

#[test]
fn forged_requests_get_an_address_refused_at_accept_and_connections_are_capped() {
    let (_dir, s) = serve_with(Limits {
        failures_before_ban: 3,
        connections_per_address: 4,
        ..Limits::default()
    });
    let addr = s.addr;
    s.runtime.block_on(async {
        // Three unsigned orders are answered 401; the fourth bans the address, and its
        // answer closes the connection.
        let forger = Ipv4Addr::new(127, 9, 0, 1);
        let mut c = connect(forger, addr).await;
        for _ in 0..3 {
            let (status, head) = exchange(&mut c, UNSIGNED_ORDER).await.expect("answered");
            assert_eq!(status, 401, "{head}");
            assert!(!head.contains("connection: close"), "{head}");
        }
        let (status, head) = exchange(&mut c, UNSIGNED_ORDER).await.expect("answered");
        assert_eq!(status, 401, "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            exchange(&mut c, PING).await.is_none(),
            "the connection is closed"
        );
        // A new connection from the banned address gets no answer: the kernel filter
        // drops its SYNs (or, until the filter has the ban, it is reset at accept).
        assert_eq!(once(forger, addr, PING).await, None);
        until_unanswered(forger, addr).await;
        // Another address is served.
        let mut other = connect(Ipv4Addr::new(127, 9, 0, 2), addr).await;
        assert_eq!(exchange(&mut other, PING).await.map(|a| a.0), Some(200));

        // Four connections from one address are served; a fifth is reset.
        let busy = Ipv4Addr::new(127, 9, 0, 3);
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut c = connect(busy, addr).await;
            assert_eq!(exchange(&mut c, PING).await.map(|a| a.0), Some(200));
            held.push(c);
        }
        assert_eq!(once(busy, addr, PING).await, None, "a fifth connection");
        // Once one is closed, the address may connect again.
        drop(held.pop());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if once(busy, addr, PING).await.map(|a| a.0) == Some(200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a closed connection was never given back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    shutdown(s);
}

#[test]
fn the_kernel_drops_a_banned_address_until_its_ban_ends() {
    let (_dir, s) = serve_with(Limits {
        failures_before_ban: 1,
        ban_first_ms: 3_000,
        ..Limits::default()
    });
    let addr = s.addr;
    s.runtime.block_on(async {
        let forger = Ipv4Addr::new(127, 9, 1, 1);
        let neighbour = Ipv4Addr::new(127, 9, 1, 2);
        for _ in 0..2 {
            assert_eq!(
                once(forger, addr, UNSIGNED_ORDER).await.map(|a| a.0),
                Some(401)
            );
        }
        let banned_at = std::time::Instant::now();
        until_unanswered(forger, addr).await;
        // The filter holds one address, not its neighbours.
        assert_eq!(once(neighbour, addr, PING).await.map(|a| a.0), Some(200));
        // When the ban ends, the address is taken out of the filter and served again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if once(forger, addr, PING).await.map(|a| a.0) == Some(200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the address was never let back in"
            );
        }
        assert!(
            banned_at.elapsed() >= std::time::Duration::from_millis(2_500),
            "let back in {:?} after a 3 s ban",
            banned_at.elapsed()
        );
    });
    shutdown(s);
}

#[test]
fn websocket_connections_closed_for_breaking_the_rules_ban_their_address() {
    let (_dir, s) = serve_with(Limits {
        failures_before_ban: 2,
        ws_connections_per_5m: 6,
        ..Limits::default()
    });
    let addr = s.addr;
    s.runtime.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;

        // New connections per window: six are allowed from one address, even when
        // none is held any more; the seventh is refused.
        let counted = Ipv4Addr::new(127, 9, 2, 1);
        for _ in 0..6 {
            let mut ws = upgrade(counted, addr).await.expect("upgraded");
            ws.close(None).await.expect("closed");
        }
        assert_eq!(upgrade(counted, addr).await.err(), Some(Some(429)));

        // Connections closed for sending too many messages: offences of their address.
        let rude = Ipv4Addr::new(127, 9, 2, 2);
        let mut quiet = upgrade(rude, addr).await.expect("upgraded");
        for round in 0..3 {
            let mut ws = upgrade(rude, addr).await.expect("upgraded");
            let reason = loop {
                let ping = r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#;
                if ws.send(Message::text(ping)).await.is_err() {
                    break close_reason(&mut ws).await;
                }
                if let Some(Ok(Message::Close(frame))) = ws.next().await {
                    break frame.map(|f| f.reason.to_string());
                }
            };
            let reason = reason.unwrap_or_default();
            assert!(
                reason.starts_with("too many messages"),
                "round {round}: {reason}"
            );
        }
        // The third offence banned the address: the connection it still held is closed
        // and its next attempts are dropped.
        assert_eq!(
            close_reason(&mut quiet).await.as_deref(),
            Some("this address is banned")
        );
        until_unanswered(rude, addr).await;
        upgrade(Ipv4Addr::new(127, 9, 2, 3), addr)
            .await
            .expect("another address");
    });
    shutdown(s);
}

#[test]
fn a_storm_of_websocket_upgrades_over_the_limit_is_banned_and_then_reset_at_accept() {
    let (_dir, s) = serve_with(Limits::default());
    let addr = s.addr;
    s.runtime.block_on(async {
        let storm = Ipv4Addr::new(127, 9, 0, 4);
        // The address holds as many WebSocket connections as the limit allows …
        let mut held = Vec::new();
        for _ in 0..kura_api::ws::WsConfig::default().connections_per_ip_max {
            held.push(upgrade(storm, addr).await.expect("upgraded"));
        }
        // … then each further upgrade is refused with 429, and past the allowed
        // failures the address is banned: its next connections are reset at accept.
        let mut refusals = 0;
        let mut reset = false;
        for _ in 0..Limits::default().failures_before_ban + 5 {
            match upgrade(storm, addr).await {
                Err(Some(status)) => {
                    assert_eq!(status, 429);
                    refusals += 1;
                }
                Err(None) => {
                    reset = true;
                    break;
                }
                Ok(_) => panic!("upgraded over the limit"),
            }
        }
        assert!(reset, "never banned after {refusals} refused upgrades");
        assert_eq!(refusals, Limits::default().failures_before_ban + 1);
        // The ban also ends the connections the address already held.
        for ws in held.iter_mut().take(3) {
            assert_eq!(
                close_reason(ws).await.as_deref(),
                Some("this address is banned")
            );
        }
        // Another address still upgrades.
        upgrade(Ipv4Addr::new(127, 9, 0, 5), addr)
            .await
            .expect("another address");
        drop(held);
    });
    shutdown(s);
}

/// The nice values of this process's threads named `name` (Linux: /proc/self/task).
/// Field `field` (numbered as in proc(5)) of `/proc/self/task/*/stat` for the threads
/// named `name`.
fn stat_of_threads(name: &str, field: usize) -> Vec<i64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which ends with ')') start at the state,
            // field 3.
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split_whitespace()
                .nth(field.checked_sub(3)?)?
                .parse()
                .ok()
        })
        .collect()
}

/// `SCHED_IDLE` in the `policy` field (41) of a thread's stat.
const SCHED_IDLE: i64 = 5;

#[test]
fn market_data_runs_below_order_entry() {
    let (_dir, s) = serve_with(Limits::default());
    let addr = s.addr;
    s.runtime.block_on(async {
        let stream = connect(Ipv4Addr::new(127, 9, 0, 6), addr).await;
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .expect("upgraded");
        // Under SCHED_IDLE, though the thread that started them may not be.
        let policies = stat_of_threads("kura-ws", 41);
        assert!(!policies.is_empty(), "no WebSocket runtime thread found");
        assert!(
            policies.iter().all(|p| *p == SCHED_IDLE),
            "the WebSocket runtime's threads run under the policies {policies:?}"
        );
        drop(ws);
    });
    shutdown(s);
}

/// A key for a new user of the served node in `dir`: (key, secret).
async fn api_key(dir: &std::path::Path, name: &str) -> (String, String) {
    use kura::server::admin::{call, Envelope, Request};
    let dir = dir.to_path_buf();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let admin = |request| {
            call(
                &dir,
                &Envelope {
                    operator: "ops-1".into(),
                    request,
                },
            )
        };
        admin(Request::UserCreate { name: name.clone() }).expect("user");
        let key = admin(Request::KeyCreate {
            user: name,
            perms: vec!["read".into()],
            ed25519_public: None,
            ip_allow: vec![],
            label: String::new(),
        })
        .expect("key");
        (
            key["key"].as_str().expect("key").to_owned(),
            key["secret"].as_str().expect("secret").to_owned(),
        )
    })
    .await
    .expect("join")
}

/// A signed `GET /api/v3/account` (a bad signature when `forged`).
fn account_request(to: SocketAddr, key: &str, secret: &str, forged: bool) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let query = format!("timestamp={now}&recvWindow=10000");
    let signature = if forged {
        "0".repeat(64)
    } else {
        kura_api::auth::HmacSecret::from_text(secret).sign(query.as_bytes())
    };
    format!(
        "GET /api/v3/account?{query}&signature={signature} HTTP/1.1\r\nHost: {to}\r\n\
         X-MBX-APIKEY: {key}\r\n\r\n"
    )
}

fn asks_to_close(head: &str) -> bool {
    head.to_ascii_lowercase().contains("\r\nconnection: close")
}

#[test]
fn customers_connections_take_their_own_lane_and_strangers_the_guest_lane() {
    let (dir, s) = serve_with(Limits::default());
    let to = s.addr;
    s.runtime.block_on(async {
        let (key, secret) = api_key(dir.path(), "ann").await;
        let ann = Ipv4Addr::new(127, 9, 1, 1);
        // A stranger's connection: served (on the guest runtime, below the server's
        // priority), and kept open after a public request.
        let mut first = connect(ann, to).await;
        let get_time = format!("GET /api/v3/time HTTP/1.1\r\nHost: {to}\r\n\r\n");
        let (status, head) = exchange(&mut first, &get_time).await.expect("answered");
        assert_eq!(status, 200, "{head}");
        assert!(!asks_to_close(&head), "{head}");
        let guests = stat_of_threads("kura-guest", 41);
        assert!(!guests.is_empty(), "no guest runtime thread found");
        assert!(
            guests.iter().all(|p| *p == SCHED_IDLE),
            "the guest runtime's threads run under the scheduling policies {guests:?}"
        );
        // A correctly signed request makes the address a customer's: the answer asks the
        // client to come back on a new connection...
        let (status, head) = exchange(&mut first, &account_request(to, &key, &secret, false))
            .await
            .expect("answered");
        assert_eq!(status, 200, "{head}");
        assert!(asks_to_close(&head), "{head}");
        // ...which is a customer's: it stays open, request after request.
        let mut second = connect(ann, to).await;
        for _ in 0..2 {
            let (status, head) = exchange(&mut second, &account_request(to, &key, &secret, false))
                .await
                .expect("answered");
            assert_eq!(status, 200, "{head}");
            assert!(!asks_to_close(&head), "{head}");
        }
        // A forged signature from a stranger makes no customer: refused, and its
        // connection is not turned over.
        let mut forged = connect(Ipv4Addr::new(127, 9, 1, 2), to).await;
        for _ in 0..2 {
            let (status, head) = exchange(&mut forged, &account_request(to, &key, &secret, true))
                .await
                .expect("answered");
            assert_eq!(status, 400, "{head}");
            assert!(!asks_to_close(&head), "{head}");
        }
    });
    shutdown(s);
}
