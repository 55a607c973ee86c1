//! J1, the crash test: a child `kura` process streams commands through the real
//! sequencer and prints each acknowledgement; the parent kills it with SIGKILL at random
//! moments and restarts it, many times over the same data directory. After every
//! restart:
//! - every command the child acknowledged is in the journal exactly once, at the
//!   sequence number it was acknowledged with (nothing acknowledged is ever lost);
//! - no command is in the journal twice;
//! - the state the restarted node recovered (snapshot + tail) has the same state hash
//!   as a full replay of the journal from genesis.
//!
//! 200 cycles by default; `KURA_CRASH_CYCLES=10000` for a soak run. The kill points are
//! drawn from a seeded generator (`KURA_CRASH_SEED`), printed so a failure can be rerun.

use kura_engine::{codec, Ctx, Engine, Limits};
use kura_journal::read_records;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every record's key (for the stress commands) → the seqs it appears at, the state
/// hash after replaying records 1..=upto from genesis, and the trades in that replay.
fn read_journal(dir: &Path, upto: u64) -> (BTreeMap<String, Vec<u64>>, Option<String>, usize) {
    let mut keys: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut engine = Engine::new(Limits::DEFAULT);
    let mut events = Vec::new();
    let mut hash_at = (upto == 0).then(|| hex::encode(engine.state_hash()));
    let mut trades = 0;
    let reader = match read_records(dir, 1) {
        Ok(r) => r,
        Err(_) => return (keys, hash_at, trades), // no journal yet
    };
    for record in reader {
        let record = record.expect("the journal reads cleanly after a crash");
        let entry = codec::decode(&record.payload).expect("every record decodes");
        if let Some(key) = kura::drill::key_of(&entry.command) {
            keys.entry(key).or_default().push(record.seq);
        }
        if record.seq <= upto {
            events.clear();
            let ctx = Ctx {
                seq: record.seq,
                timestamp_ms: entry.ctx_timestamp_ms,
            };
            let _ = engine.apply(&entry.command, ctx, &mut events);
            trades += events
                .iter()
                .filter(|e| matches!(e.kind, kura_engine::EventKind::Trade { .. }))
                .count();
            if record.seq == upto {
                hash_at = Some(hex::encode(engine.state_hash()));
            }
        }
    }
    (keys, hash_at, trades)
}

#[test]
fn acknowledged_commands_survive_kill_9() {
    let cycles = env_u64("KURA_CRASH_CYCLES", 200);
    let seed = env_u64("KURA_CRASH_SEED", 0x6b75_7261);
    eprintln!("crash test: {cycles} cycles, KURA_CRASH_SEED={seed}");
    let mut rng = SplitMix(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = env!("CARGO_BIN_EXE_kura");
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_acks = 0u64;
    let mut recoveries_checked = 0u64;
    let mut trades = 0;
    for cycle in 0..=cycles {
        let last = cycle == cycles;
        let mut child = Command::new(bin)
            .args(["debug", "stress-node", "--data"])
            .arg(dir.path())
            .args(["--start", &(cycle * 1_000_000).to_string()])
            .args(["--snapshot-every", &(20 + rng.below(200)).to_string()])
            .args(if last { vec!["--count", "0"] } else { vec![] })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kura");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Sometimes kill before recovery finishes; otherwise after a random number of acks.
        let kill_early = !last && rng.below(10) == 0;
        let wanted_acks = rng.below(150);
        let mut recovered: Option<(u64, String)> = None;
        if !kill_early {
            if let Some(Ok(line)) = lines.next() {
                let mut parts = line.split_whitespace();
                assert_eq!(parts.next(), Some("recovered"), "cycle {cycle}: {line}");
                let seq: u64 = parts.next().and_then(|s| s.parse().ok()).expect("seq");
                let hash = parts.next().expect("hash").to_owned();
                recovered = Some((seq, hash));
            }
            let mut seen = 0;
            while seen < wanted_acks {
                let Some(Ok(line)) = lines.next() else { break };
                let mut parts = line.split_whitespace();
                assert_eq!(parts.next(), Some("ack"), "cycle {cycle}: {line}");
                let seq: u64 = parts.next().and_then(|s| s.parse().ok()).expect("seq");
                let key = parts.next().expect("key").to_owned();
                assert!(
                    acked.insert(key.clone(), seq).is_none(),
                    "cycle {cycle}: {key} acknowledged twice"
                );
                seen += 1;
                total_acks += 1;
            }
        }
        if last {
            let status = child.wait().expect("wait");
            assert!(status.success(), "the final clean run failed");
        } else {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        drop(lines);

        // The journal as the crash left it.
        let upto = recovered.as_ref().map_or(0, |r| r.0);
        let (keys, replay_hash, replay_trades) = read_journal(dir.path(), upto);
        trades = replay_trades;
        for (key, seqs) in &keys {
            assert_eq!(seqs.len(), 1, "cycle {cycle}: {key} journaled at {seqs:?}");
        }
        for (key, seq) in &acked {
            assert_eq!(
                keys.get(key),
                Some(&vec![*seq]),
                "cycle {cycle}: acknowledged {key} (seq {seq}) is not in the journal where it was acknowledged"
            );
        }
        if let Some((seq, hash)) = recovered {
            assert_eq!(
                replay_hash.as_deref(),
                Some(hash.as_str()),
                "cycle {cycle}: recovered state at seq {seq} differs from a full replay"
            );
            recoveries_checked += 1;
        }
    }
    eprintln!(
        "crash test: {total_acks} acknowledged commands, {recoveries_checked} recoveries checked, {trades} trades replayed"
    );
    assert!(
        total_acks > cycles,
        "too few acknowledgements to mean anything"
    );
    assert!(
        recoveries_checked * 2 > cycles,
        "too few recoveries checked"
    );

    // Finally the offline verifier agrees: every checksum, the chain, every snapshot.
    let out = Command::new(bin)
        .args(["journal", "verify", "--json", "--data"])
        .arg(dir.path())
        .output()
        .expect("run kura journal verify");
    assert!(
        out.status.success(),
        "journal verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- start-up checks (docs/adr/0006-startup-verification.md) -------------------------

mod startup {
    use kura::drill::{command, USERS};
    use kura::node::{internal, recover, Node, NodeConfig};
    use kura_engine::{codec, genesis, Command, Ctx, Engine, Limits};
    use kura_journal::{list_snapshots, read_records};
    use std::path::{Path, PathBuf};

    /// Small segments, so a few hundred commands make several.
    fn config(dir: &Path) -> NodeConfig {
        let mut c = NodeConfig::new(dir);
        c.journal.segment_target_bytes = 4_096;
        c.snapshot_every_commands = 100;
        c.snapshot_every = None;
        c
    }

    /// A data directory with `n` drill commands (keys from `first`), several segments and
    /// snapshots (the last one at the head, written at shutdown).
    fn populated(n: u64, first: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let (node, handle) = Node::start(config(dir.path())).expect("start");
        let setup = genesis::genesis()
            .into_iter()
            .chain((0..USERS).map(|_| Command::CreateUser));
        for c in setup {
            handle.submit_wait(internal(c)).expect("setup");
        }
        for i in first..first + n {
            handle.submit_wait(internal(command(i).1)).expect("command");
        }
        drop(handle);
        node.shutdown().expect("shutdown");
        assert!(segments(dir.path()).len() >= 4, "several segments");
        assert!(list_snapshots(dir.path()).expect("snapshots").len() >= 2);
        dir
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut s: Vec<_> = std::fs::read_dir(dir.join("journal"))
            .expect("journal dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        s.sort();
        s
    }

    /// The state hash after replaying the whole journal from genesis.
    fn full_replay_hash(dir: &Path) -> [u8; 32] {
        let mut engine = Engine::new(Limits::DEFAULT);
        let mut events = Vec::new();
        for record in read_records(dir, 1).expect("journal") {
            let record = record.expect("record");
            let entry = codec::decode(&record.payload).expect("decodes");
            let ctx = Ctx {
                seq: record.seq,
                timestamp_ms: entry.ctx_timestamp_ms,
            };
            let _ = engine.apply(&entry.command, ctx, &mut events);
        }
        engine.state_hash()
    }

    fn recover_err(dir: &Path) -> String {
        match recover(&config(dir), |_| {}) {
            Ok((_, _, r)) => panic!("start-up must be refused, recovered {r:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn name(p: &Path) -> String {
        p.file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_owned()
    }

    #[test]
    fn recovery_from_any_snapshot_equals_a_full_replay() {
        let dir = populated(300, 0);
        let expected = full_replay_hash(dir.path());
        let mut snapshots = list_snapshots(dir.path()).expect("snapshots");
        let head = snapshots.last().expect("a snapshot").seq;
        loop {
            let (engine, journal, recovered) =
                recover(&config(dir.path()), |_| {}).expect("recover");
            assert_eq!(recovered.head.seq, head);
            assert_eq!(recovered.head, journal.head());
            let from = snapshots.last().map_or(0, |s| s.seq);
            assert_eq!(recovered.snapshot_seq, (from > 0).then_some(from));
            assert_eq!(recovered.replayed, head - from, "only the tail is replayed");
            assert_eq!(engine.state_hash(), expected, "from snapshot {from}");
            drop(journal);
            // Next time from the snapshot before (finally from genesis).
            let Some(s) = snapshots.pop() else { break };
            std::fs::remove_file(&s.path).expect("remove snapshot");
        }
    }

    #[test]
    fn a_snapshot_of_another_history_stops_start_up() {
        let a = populated(250, 0);
        let b = populated(250, 1_000_000);
        let snap_a = list_snapshots(a.path())
            .expect("a")
            .pop()
            .expect("snapshot");
        let snap_b = list_snapshots(b.path())
            .expect("b")
            .pop()
            .expect("snapshot");
        assert_eq!(
            snap_a.seq, snap_b.seq,
            "same length, same final snapshot seq"
        );
        std::fs::copy(&snap_b.path, &snap_a.path).expect("copy");
        let err = recover_err(a.path());
        assert!(err.contains("does not match the journal"), "{err}");
        assert!(
            err.contains(&name(&snap_a.path)),
            "names the snapshot: {err}"
        );
        assert!(err.contains(&format!("seq {}", snap_a.seq)), "{err}");
        let last = segments(a.path()).pop().expect("segment");
        assert!(err.contains(&name(&last)), "names the segment: {err}");
        assert!(err.contains("offset"), "{err}");
    }

    #[test]
    fn a_snapshot_beyond_the_journal_stops_start_up_and_nothing_is_truncated() {
        let dir = populated(250, 0);
        let segs = segments(dir.path());
        let last = segs.last().expect("segment");
        // The last segment lost: the journal looks shorter, the snapshot says otherwise.
        std::fs::remove_file(last).expect("remove");
        let before: Vec<_> = segs[..segs.len() - 1]
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        let err = recover_err(dir.path());
        assert!(err.contains("acknowledged records are missing"), "{err}");
        assert!(err.contains("offset"), "{err}");
        let after: Vec<_> = segs[..segs.len() - 1]
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn a_missing_segment_before_the_snapshot_stops_start_up() {
        let dir = populated(250, 0);
        let segs = segments(dir.path());
        std::fs::remove_file(&segs[1]).expect("remove");
        let err = recover_err(dir.path());
        assert!(
            err.contains(&name(&segs[2])),
            "names the next segment: {err}"
        );
        assert!(err.contains("byte offset 0"), "{err}");
        assert!(err.contains("missing segment"), "{err}");
        assert!(err.contains("(seq "), "{err}");
    }

    #[test]
    fn damage_after_the_snapshot_with_valid_records_after_it_stops_start_up() {
        let dir = populated(250, 0);
        // Keep only the oldest snapshot, so most of the journal is replayed.
        let mut snaps = list_snapshots(dir.path()).expect("snapshots");
        for s in snaps.drain(1..) {
            std::fs::remove_file(&s.path).expect("remove snapshot");
        }
        let last = segments(dir.path()).pop().expect("segment");
        let mut bytes = std::fs::read(&last).expect("read");
        let at = 56 + 60; // inside the first record of the last segment
        bytes[at] ^= 0x20;
        std::fs::write(&last, &bytes).expect("write");
        let err = recover_err(dir.path());
        assert!(err.contains(&name(&last)), "{err}");
        assert!(err.contains("byte offset 56"), "{err}");
        assert!(err.contains("(seq "), "{err}");
    }

    #[test]
    fn a_torn_final_record_is_truncated_and_reported() {
        let dir = populated(250, 0);
        let expected = full_replay_hash(dir.path());
        let last = segments(dir.path()).pop().expect("segment");
        let len = std::fs::metadata(&last).expect("stat").len();
        let mut bytes = std::fs::read(&last).expect("read");
        bytes.extend_from_slice(&[0x33; 40]); // a record header, cut short
        std::fs::write(&last, &bytes).expect("write");
        let (engine, _journal, recovered) = recover(&config(dir.path()), |_| {}).expect("recover");
        assert_eq!(recovered.truncated_bytes, 40);
        assert_eq!(std::fs::metadata(&last).expect("stat").len(), len);
        assert_eq!(engine.state_hash(), expected);
    }
}
