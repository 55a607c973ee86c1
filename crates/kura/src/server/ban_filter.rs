//! Bans enforced by the kernel: a classic BPF program on the listening socket that drops
//! every packet a banned address sends to it (`SO_ATTACH_FILTER`, through `socket2`).
//!
//! Refusing a banned address at accept still costs a whole TCP handshake, an accept, a
//! reset, and the client's immediate next attempt: a banned flood of a few addresses
//! turns into thousands of handshakes a second on the CPUs that serve honest customers.
//! With the filter, a banned address's SYN is dropped in the kernel's receive path, the
//! client's `connect` waits for its own retransmission timer (1 s, 3 s, 7 s, …), and the
//! server spends a few instructions per dropped packet. Addresses whose bans end are
//! taken out of the program when they end.
//!
//! Accept-time refusal ([`super::listener`]) stays behind it: for the bans that do not
//! fit in one program, for handshakes begun before the ban, and where the filter could
//! not be attached. Trusted proxies are never filtered (admission bans their clients,
//! not them).
//!
//! The program (see [`program`]): read the IP version from the network header; for
//! IPv4 compare the source address with each banned address; for IPv6 compare the
//! source's /64 with each banned /64 (admission's key for an IPv6 client). A match
//! returns 0 (drop), anything else keeps the packet whole.

use kura_api::limits::{is_trusted_proxy, Limiter};
use socket2::SockFilter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// The kernel's limit on a classic BPF program's length (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
const ALU_RSH_K: u16 = 0x74;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
/// `SKF_NET_OFF`: offsets from here address the packet's network (IP) header.
const NET: i32 = -0x10_0000;
/// Keep the whole packet.
const ACCEPT: u32 = u32::MAX;
/// Drop it.
const DROP: u32 = 0;

fn net(offset: i32) -> u32 {
    // The kernel reads `k` as a signed offset; negative ones select the headers.
    u32::from_ne_bytes((NET + offset).to_ne_bytes())
}

/// One classic BPF instruction (the kernel's `struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn attach(socket: &socket2::Socket, prog: &[Insn]) -> std::io::Result<()> {
    let prog: Vec<SockFilter> = prog
        .iter()
        .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect();
    socket.attach_filter(&prog)
}

/// What a ban is compared on: an IPv4 address, or an IPv6 /64 as two words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    V4(u32),
    V6(u32, u32),
}

fn key(ip: IpAddr) -> Key {
    match kura_api::limits::client_key(ip) {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            Key::V6(
                u32::from_be_bytes([o[0], o[1], o[2], o[3]]),
                u32::from_be_bytes([o[4], o[5], o[6], o[7]]),
            )
        }
    }
}

/// The filter dropping packets from `bans`, each with the end of its ban. When they do
/// not all fit in [`MAX_INSTRUCTIONS`], the longest bans are kept (the rest are refused
/// at accept). Returns the program and how many bans it holds.
pub fn program(bans: &[(IpAddr, u64)]) -> (Vec<Insn>, usize) {
    // Header (4), the IPv4 load and its accept (2), the IPv6 accept (1).
    const FIXED: usize = 7;
    let mut by_end: Vec<(u64, Key)> = bans.iter().map(|(ip, end)| (*end, key(*ip))).collect();
    by_end.sort_unstable_by(|a, b| b.cmp(a));
    by_end.dedup_by(|a, b| a.1 == b.1);
    let mut room = MAX_INSTRUCTIONS - FIXED;
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (_, k) in by_end {
        let cost = match k {
            Key::V4(_) => 2,
            Key::V6(..) => 5,
        };
        if cost > room {
            continue;
        }
        room -= cost;
        match k {
            Key::V4(a) => v4.push(a),
            Key::V6(hi, lo) => v6.push((hi, lo)),
        }
    }
    v4.sort_unstable();
    v6.sort_unstable();
    let held = v4.len() + v6.len();
    let mut p = Vec::with_capacity(MAX_INSTRUCTIONS - room);
    // The version nibble of the first byte of the IP header.
    p.push(insn(LD_B_ABS, 0, 0, net(0)));
    p.push(insn(ALU_RSH_K, 0, 0, 4));
    p.push(insn(JMP_JEQ_K, 0, 1, 6));
    // IPv6: jump past the IPv4 part (its load, two per address, its accept).
    let skip = u32::try_from(2 + 2 * v4.len()).unwrap_or(u32::MAX);
    p.push(insn(JMP_JA, 0, 0, skip));
    // IPv4 source address.
    p.push(insn(LD_W_ABS, 0, 0, net(12)));
    for a in &v4 {
        p.push(insn(JMP_JEQ_K, 0, 1, *a));
        p.push(insn(RET_K, 0, 0, DROP));
    }
    p.push(insn(RET_K, 0, 0, ACCEPT));
    // IPv6 source /64: words at 8 and 12 of the header.
    for (hi, lo) in &v6 {
        p.push(insn(LD_W_ABS, 0, 0, net(8)));
        p.push(insn(JMP_JEQ_K, 0, 3, *hi));
        p.push(insn(LD_W_ABS, 0, 0, net(12)));
        p.push(insn(JMP_JEQ_K, 0, 1, *lo));
        p.push(insn(RET_K, 0, 0, DROP));
    }
    p.push(insn(RET_K, 0, 0, ACCEPT));
    (p, held)
}

/// The task keeping a listening socket's filter equal to the bans in force.
#[derive(Debug)]
pub struct BanFilter {
    task: tokio::task::JoinHandle<()>,
    attached: Arc<AtomicBool>,
}

impl Drop for BanFilter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BanFilter {
    /// Follow `limiter`'s bans on `socket` (a handle to the listening socket) from now
    /// on. Must be called within a Tokio runtime.
    pub fn follow(socket: socket2::Socket, limiter: Arc<Limiter>, now_ms: fn() -> u64) -> Self {
        let attached = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(socket, limiter, now_ms, Arc::clone(&attached)));
        BanFilter { task, attached }
    }

    /// Whether a filter is on the listening socket now (accepted connections inherit
    /// it, and should drop it: see [`detach`]).
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Relaxed)
    }
}

/// Take the inherited filter off an accepted connection: its peer passed the filter,
/// and its later packets need not run it.
pub fn detach(stream: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).detach_filter();
}

async fn run(
    socket: socket2::Socket,
    limiter: Arc<Limiter>,
    now_ms: fn() -> u64,
    attached: Arc<AtomicBool>,
) {
    let mut feed = limiter.ban_feed().subscribe();
    let mut bans: HashMap<IpAddr, u64> = limiter.bans_in_force(now_ms()).into_iter().collect();
    let mut installed: Option<Vec<(IpAddr, u64)>> = None;
    let mut failed = false;
    loop {
        let now = now_ms();
        bans.retain(|ip, end| now < *end && !is_trusted_proxy(*ip, limiter.limits()));
        let mut wanted: Vec<(IpAddr, u64)> = bans.iter().map(|(ip, end)| (*ip, *end)).collect();
        wanted.sort_unstable();
        if installed.as_ref() != Some(&wanted) {
            let result = if wanted.is_empty() {
                match socket.detach_filter() {
                    // ENOENT: there was none.
                    Err(e) if e.raw_os_error() != Some(2) => Err(e),
                    _ => Ok(0),
                }
            } else {
                let (prog, held) = program(&wanted);
                attach(&socket, &prog).map(|()| held)
            };
            match result {
                Ok(held) => {
                    attached.store(!wanted.is_empty(), Ordering::Relaxed);
                    tracing::debug!(bans = wanted.len(), held, "kernel ban filter updated");
                    failed = false;
                }
                Err(e) if !failed => {
                    tracing::warn!(
                        "could not set the kernel ban filter ({e}); banned addresses are \
                         refused at accept instead"
                    );
                    failed = true;
                }
                Err(_) => {}
            }
            installed = Some(wanted);
        }
        let next_end = bans.values().min().copied();
        let wait = next_end.map(|end| std::time::Duration::from_millis(end.saturating_sub(now)));
        // One ban (or, for a follower that fell behind, every ban in force).
        let take = |bans: &mut HashMap<IpAddr, u64>, got: Option<IpAddr>| match got {
            Some(ip) => {
                if let Some(end) = limiter.ban_end(ip, now_ms()) {
                    bans.insert(ip, end);
                }
            }
            None => *bans = limiter.bans_in_force(now_ms()).into_iter().collect(),
        };
        tokio::select! {
            got = feed.recv() => match got {
                Ok(ip) => take(&mut bans, Some(ip)),
                Err(RecvError::Lagged(_)) => take(&mut bans, None),
                Err(RecvError::Closed) => return,
            },
            () = sleep_or_forever(wait) => {}
        }
        // Take every ban already waiting before rebuilding the program once.
        loop {
            match feed.try_recv() {
                Ok(ip) => take(&mut bans, Some(ip)),
                Err(TryRecvError::Lagged(_)) => take(&mut bans, None),
                Err(_) => break,
            }
        }
    }
}

async fn sleep_or_forever(wait: Option<std::time::Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A classic BPF interpreter for the instructions [`program`] uses, over a packet
    /// whose network header is `ip_header`. Returns the program's verdict, or why the
    /// kernel would have rejected the program.
    fn run(prog: &[Insn], ip_header: &[u8]) -> Result<u32, String> {
        if prog.is_empty() || prog.len() > MAX_INSTRUCTIONS {
            return Err(format!("length {}", prog.len()));
        }
        let (mut a, mut pc) = (0u32, 0usize);
        let load = |k: u32, size: usize| -> Result<u32, String> {
            let off = i32::from_ne_bytes(k.to_ne_bytes()) - NET;
            let off = usize::try_from(off).map_err(|_| format!("offset {k:#x}"))?;
            let bytes = ip_header
                .get(off..off + size)
                .ok_or("read past the header")?;
            Ok(bytes.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)))
        };
        // Jumps only go forward, so a program runs at most its length.
        for _ in 0..=prog.len() {
            let Insn { code, jt, jf, k } = *prog.get(pc).ok_or("ran off the end")?;
            pc += 1;
            match code {
                LD_W_ABS => a = load(k, 4)?,
                LD_B_ABS => a = load(k, 1)?,
                ALU_RSH_K => a >>= k,
                JMP_JA => pc += k as usize,
                JMP_JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                RET_K => return Ok(k),
                other => return Err(format!("opcode {other:#x}")),
            }
        }
        Err("no return".into())
    }

    fn v4_header(src: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        h.extend(src.octets());
        h.extend([127, 0, 0, 1]);
        h
    }

    fn v6_header(src: Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        h.extend(src.octets());
        h.extend(Ipv6Addr::LOCALHOST.octets());
        h
    }

    #[test]
    fn drops_banned_addresses_and_keeps_the_rest() {
        let banned4 = Ipv4Addr::new(127, 2, 0, 7);
        let banned6: Ipv6Addr = "2001:db8:1:2::9".parse().unwrap();
        let bans = [
            (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5),
            (IpAddr::V4(banned4), 9),
            (IpAddr::V6(banned6), 7),
        ];
        let (prog, held) = program(&bans);
        assert_eq!(held, 3);
        assert_eq!(run(&prog, &v4_header(banned4)), Ok(DROP));
        assert_eq!(run(&prog, &v4_header(Ipv4Addr::new(10, 0, 0, 1))), Ok(DROP));
        assert_eq!(
            run(&prog, &v4_header(Ipv4Addr::new(127, 2, 0, 8))),
            Ok(ACCEPT)
        );
        // The whole /64 of a banned IPv6 client, and nothing outside it.
        let same64: Ipv6Addr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other64: Ipv6Addr = "2001:db8:1:3::9".parse().unwrap();
        let other_hi: Ipv6Addr = "2001:db9:1:2::9".parse().unwrap();
        assert_eq!(run(&prog, &v6_header(banned6)), Ok(DROP));
        assert_eq!(run(&prog, &v6_header(same64)), Ok(DROP));
        assert_eq!(run(&prog, &v6_header(other64)), Ok(ACCEPT));
        assert_eq!(run(&prog, &v6_header(other_hi)), Ok(ACCEPT));
        // An IPv4 ban does not catch an IPv6 client whose words happen to match.
        let lookalike = Ipv6Addr::new(0, 0, 0x7f02, 7, 0, 0, 0, 0);
        assert_eq!(run(&prog, &v6_header(lookalike)), Ok(ACCEPT));
    }

    #[test]
    fn an_empty_list_keeps_everything() {
        let (prog, held) = program(&[]);
        assert_eq!(held, 0);
        assert_eq!(run(&prog, &v4_header(Ipv4Addr::LOCALHOST)), Ok(ACCEPT));
        assert_eq!(run(&prog, &v6_header(Ipv6Addr::LOCALHOST)), Ok(ACCEPT));
    }

    #[test]
    fn too_many_bans_keep_the_longest_within_the_kernel_limit() {
        // 3,000 IPv4 bans need 6,000 instructions; the longest fit, the rest do not.
        let bans: Vec<(IpAddr, u64)> = (0..3_000u32)
            .map(|i| (IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)), u64::from(i)))
            .collect();
        let (prog, held) = program(&bans);
        assert!(prog.len() <= MAX_INSTRUCTIONS, "{}", prog.len());
        assert_eq!(held, (MAX_INSTRUCTIONS - 7) / 2);
        let longest = Ipv4Addr::from(0x0A00_0000 + 2_999);
        let shortest = Ipv4Addr::from(0x0A00_0000);
        assert_eq!(run(&prog, &v4_header(longest)), Ok(DROP));
        assert_eq!(run(&prog, &v4_header(shortest)), Ok(ACCEPT));
        // IPv6 bans in a full program cost more each and still fit.
        let mut mixed = bans.clone();
        mixed.extend((0..500u16).map(|i| {
            (
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1)),
                10_000 + u64::from(i),
            )
        }));
        let (prog, held) = program(&mixed);
        assert!(prog.len() <= MAX_INSTRUCTIONS, "{}", prog.len());
        assert!(held > 500, "{held}");
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 499, 0, 0, 0, 0, 1);
        assert_eq!(run(&prog, &v6_header(v6)), Ok(DROP));
    }

    #[test]
    fn the_same_address_twice_is_held_once() {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 2, 0, 1));
        let (prog, held) = program(&[(ip, 5), (ip, 9)]);
        assert_eq!(held, 1);
        assert_eq!(prog.len(), 7 + 2);
    }
}
