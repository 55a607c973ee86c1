//! Admission at the listener of a served node: an address that sends forged requests
//! (no API key, a bad signature) is banned after a handful, the answer that bans it
//! closes its connection, and from then on its connections are reset at accept, before
//! any HTTP is read, while other addresses are served; and an address holds at most
//! `connections_per_address` connections at once. A storm of WebSocket upgrades over the
//! per-address limit bans its address too, and the ban closes the WebSocket connections
//! it already held.

use crate::node_common::{serve, shutdown};
use kura::server::ServerConfig;
use kura_api::limits::Limits;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `from`; an error when the server reset it at once (on loopback
/// the reset may come before the connect completes).
async fn try_connect(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
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

#[test]
fn forged_requests_get_an_address_refused_at_accept_and_connections_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path());
    config.api.limits = Limits {
        failures_before_ban: 3,
        connections_per_address: 4,
        ..Limits::default()
    };
    let s = serve(config);
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
        // A new connection from the banned address is reset before any answer.
        assert_eq!(once(forger, addr, PING).await, None);
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
fn a_storm_of_websocket_upgrades_over_the_limit_is_banned_and_then_reset_at_accept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = serve(ServerConfig::new(dir.path()));
    let addr = s.addr;
    s.runtime.block_on(async {
        let storm = Ipv4Addr::new(127, 9, 0, 4);
        // An upgrade: the connection, or the refusal's HTTP status (`None`: reset).
        let upgrade = |from: Ipv4Addr| async move {
            let stream = try_connect(from, addr).await.map_err(|_| None)?;
            match tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await {
                Ok((ws, _)) => Ok(ws),
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                    Err(Some(r.status().as_u16()))
                }
                Err(_) => Err(None),
            }
        };
        // The address holds as many WebSocket connections as the limit allows …
        let mut held = Vec::new();
        for _ in 0..kura_api::ws::WsConfig::default().connections_per_ip_max {
            held.push(upgrade(storm).await.expect("upgraded"));
        }
        // … then each further upgrade is refused with 429, and past the allowed
        // failures the address is banned: its next connections are reset at accept.
        let mut refusals = 0;
        let mut reset = false;
        for _ in 0..Limits::default().failures_before_ban + 5 {
            match upgrade(storm).await {
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
            let reason = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                use futures_util::StreamExt;
                while let Some(message) = ws.next().await {
                    if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = message {
                        return frame.map(|f| f.reason.to_string());
                    }
                }
                None
            })
            .await
            .expect("closed in time");
            assert_eq!(reason.as_deref(), Some("this address is banned"));
        }
        // Another address still upgrades.
        upgrade(Ipv4Addr::new(127, 9, 0, 5))
            .await
            .expect("another address");
        drop(held);
    });
    shutdown(s);
}

/// The nice values of this process's threads named `name` (Linux: /proc/self/task).
fn nice_of_threads(name: &str) -> Vec<i64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which ends with ')'): state is field 3,
            // nice field 19.
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split_whitespace().nth(16)?.parse().ok()
        })
        .collect()
}

#[test]
fn market_data_runs_below_order_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = serve(ServerConfig::new(dir.path()));
    let addr = s.addr;
    s.runtime.block_on(async {
        let stream = connect(Ipv4Addr::new(127, 9, 0, 6), addr).await;
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .expect("upgraded");
        let ws_threads = nice_of_threads("kura-ws");
        assert!(!ws_threads.is_empty(), "no WebSocket runtime thread found");
        assert!(
            ws_threads.iter().all(|n| *n > 0),
            "the WebSocket runtime's threads run at nice {ws_threads:?}"
        );
        drop(ws);
    });
    shutdown(s);
}
