//! The node end to end, in process: durability before acknowledgement, fsync failure,
//! and J7 (snapshot + tail replay = full replay = the live state).

use kura::node::{internal, recover, Node, NodeConfig, Recovered, SubmitError};
use kura_engine::{genesis, Command, Ctx, Engine, Limits, OrderType, Side, TimeInForce};
use kura_journal::testing::{Fault, SimFs};
use kura_journal::{list_snapshots, load_snapshot, read_records, Journal, JournalConfig};
use kura_units::{Amount, MarketId, PriceTicks, QtyLots, UserId};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A small, deterministic workload with trades: genesis, users, deposits, orders.
fn workload(n: u64) -> Vec<Command> {
    let mut cmds = genesis::genesis();
    for u in 0..4u32 {
        cmds.push(Command::CreateUser);
        for asset in [genesis::BTC, genesis::JPY] {
            cmds.push(Command::Deposit {
                user: UserId(u),
                asset,
                amount: Amount::new(100_000_000),
                reference: format!("seed-{u}-{}", asset.0),
            });
        }
    }
    for i in 0..n {
        cmds.push(Command::PlaceOrder {
            user: UserId((i % 4) as u32),
            market: MarketId(0),
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            order: OrderType::Limit {
                price: PriceTicks::new(15_000_000 + (i * 37 % 11) * 1_000),
                qty: QtyLots::new(1 + i % 7),
                tif: TimeInForce::Gtc,
                post_only: false,
            },
            client_id: None,
            stp: None,
        });
    }
    cmds
}

fn full_replay(dir: &Path) -> (u64, [u8; 32]) {
    let mut engine = Engine::new(Limits::DEFAULT);
    let mut events = Vec::new();
    let mut seq = 0;
    for record in read_records(dir, 1).expect("journal") {
        let record = record.expect("record");
        let entry = kura_engine::codec::decode(&record.payload).expect("decodes");
        events.clear();
        let ctx = Ctx {
            seq: record.seq,
            timestamp_ms: entry.ctx_timestamp_ms,
        };
        let _ = engine.apply(&entry.command, ctx, &mut events);
        seq = record.seq;
    }
    (seq, engine.state_hash())
}

#[test]
fn snapshot_plus_tail_equals_full_replay_equals_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::new(dir.path());
    config.snapshot_every_commands = 40;
    config.snapshot_every = None;
    let (node, handle) = Node::start(config.clone()).expect("start");
    let mut trades = 0;
    for cmd in workload(300) {
        let ack = handle.submit_wait(internal(cmd)).expect("ack");
        if let Ok(events) = &ack.result {
            trades += events
                .iter()
                .filter(|e| matches!(e.kind, kura_engine::EventKind::Trade { .. }))
                .count();
        }
    }
    assert!(trades > 10, "the workload must trade ({trades} trades)");
    drop(handle);
    let head = node.shutdown().expect("clean shutdown");
    // The shutdown snapshot holds the live state at the head.
    let snaps = list_snapshots(dir.path()).expect("snapshots");
    assert!(
        snaps.len() >= 3,
        "periodic snapshots were written: {snaps:?}"
    );
    let last = load_snapshot(&snaps.last().expect("one").path).expect("load");
    assert_eq!(last.meta.seq, head.seq);
    let live = last.meta.state_hash;
    // Full replay from genesis.
    let (seq, replayed) = full_replay(dir.path());
    assert_eq!(seq, head.seq);
    assert_eq!(replayed, live, "full replay differs from the live state");
    // Snapshot + tail, from an older snapshot: remove the newest ones.
    for s in snaps.iter().rev().take(2) {
        std::fs::remove_file(&s.path).expect("remove snapshot");
    }
    let (engine, _journal, rec) = recover(&config, |_| {}).expect("recover");
    assert!(rec.snapshot_seq.is_some_and(|s| s < head.seq));
    assert!(rec.replayed > 0, "a tail was replayed");
    assert_eq!(engine.state_hash(), live, "snapshot + tail differs");
    engine
        .check_invariants()
        .expect("invariants after recovery");
}

#[test]
fn a_restarted_node_continues_the_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = NodeConfig::new(dir.path());
    let cmds = workload(50);
    let (a, b) = cmds.split_at(30);
    let (node, handle) = Node::start(config.clone()).expect("start");
    for c in a {
        handle.submit_wait(internal(c.clone())).expect("ack");
    }
    drop(handle);
    let first = node.shutdown().expect("shutdown");
    let (node, handle) = Node::start(config).expect("restart");
    assert_eq!(node.recovered.head, first);
    let mut last_seq = 0;
    for c in b {
        last_seq = handle.submit_wait(internal(c.clone())).expect("ack").seq;
    }
    assert_eq!(last_seq, first.seq + b.len() as u64);
    drop(handle);
    node.shutdown().expect("shutdown");
    assert_eq!(full_replay(dir.path()).0, last_seq);
}

/// J5 at the node: when fsync fails, the command is not acknowledged, the node stops,
/// and every later command is refused; what is durable is exactly what was acknowledged.
#[test]
fn fsync_failure_stops_the_node_without_acknowledging() {
    let fs = SimFs::new();
    let dir = Path::new("/sim/data");
    let (journal, _) =
        Journal::open_with(fs.clone(), dir, JournalConfig::default()).expect("open sim journal");
    let mut config = NodeConfig::new(dir);
    config.snapshot_every_commands = 0;
    config.snapshot_every = None;
    let recovered = Recovered {
        head: journal.head(),
        snapshot_seq: None,
        replayed: 0,
        truncated_bytes: 0,
        replay_secs: 0.0,
    };
    // Opening synced once or more; allow five more syncs, fail the next one.
    fs.fail_sync_after(5, Fault::Eio);
    let (node, handle) =
        Node::start_with(config, Engine::new(Limits::DEFAULT), journal, recovered).expect("start");
    let mut acked = Vec::new();
    let mut refused = 0;
    for cmd in workload(20) {
        match handle.submit_wait(internal(cmd)) {
            Ok(ack) => acked.push(ack.seq),
            Err(SubmitError::Stopped(why)) => {
                assert!(why.contains("stopped"), "{why}");
                refused += 1;
            }
            Err(e @ (SubmitError::Busy | SubmitError::Invalid(_))) => panic!("unexpected {e}"),
        }
    }
    assert!(
        !acked.is_empty() && refused > 0,
        "acked {acked:?}, refused {refused}"
    );
    assert_eq!(acked, (1..=acked.len() as u64).collect::<Vec<_>>());
    drop(handle);
    assert!(
        node.shutdown().is_err(),
        "a stopped node reports its failure"
    );
    // After power loss, the durable journal holds exactly the acknowledged commands.
    let after = fs.crash(kura_journal::testing::Unsynced::Lost);
    let (journal, _) = Journal::open_with(after, dir, JournalConfig::default()).expect("reopen");
    assert_eq!(journal.head().seq, acked.len() as u64);
}

/// A command the journal format cannot hold is refused before it gets a sequence
/// number; the commands around it are sequenced as usual.
#[test]
fn unjournalable_commands_are_refused_before_sequencing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, handle) = Node::start(NodeConfig::new(dir.path())).expect("start");
    let first = handle
        .submit_wait(internal(Command::CreateUser))
        .expect("ack");
    let refused = handle.submit_wait(internal(Command::HaltMarket {
        market: MarketId(0),
        reason: "x".repeat(10_000),
    }));
    assert!(
        matches!(refused, Err(SubmitError::Invalid(_))),
        "{refused:?}"
    );
    let second = handle
        .submit_wait(internal(Command::CreateUser))
        .expect("ack");
    assert_eq!(second.seq, first.seq + 1);
    drop(handle);
    node.shutdown().expect("shutdown");
}

/// Commands journaled by [`hold_sequencer`].
const HOLD_COMMANDS: u64 = kura::node::HANDOVER_BATCHES as u64 + 1;

/// Stop the sequencer from taking anything more from its queues until the returned
/// sender is used (or dropped): the apply stage is held inside a query, then the
/// journal stage is given one command at a time, each waited for until journaled,
/// until its hand-over to the apply stage is full and it waits. What is queued next
/// stays in the queues. Those [`HOLD_COMMANDS`] commands (accounts created) are answered
/// after the release.
fn hold_sequencer(node: &Node, handle: &kura::node::NodeHandle) -> std::sync::mpsc::Sender<()> {
    let (running_tx, running_rx) = std::sync::mpsc::channel();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    handle
        .query(Box::new(move |_| {
            running_tx.send(()).expect("signal");
            let _ = gate_rx.recv();
        }))
        .expect("query");
    running_rx.recv().expect("the apply stage is held");
    for _ in 0..HOLD_COMMANDS {
        let journaled = node.stats.records.load(Ordering::SeqCst);
        handle.submit(
            internal(Command::CreateUser),
            Box::new(|r| {
                assert!(r.is_ok(), "{r:?}");
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.stats.records.load(Ordering::SeqCst) == journaled {
            assert!(Instant::now() < deadline, "the command was never journaled");
            std::thread::yield_now();
        }
    }
    gate_tx
}

/// More queued bytes than one journal batch may hold: the sequencer commits what fits
/// and carries the rest to the next batch; every command is acknowledged, in order,
/// with consecutive sequence numbers, and nothing is refused.
#[test]
fn batches_larger_than_the_journal_batch_limit_are_split() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::new(dir.path());
    config.batch_max = 1 << 16;
    config.journal.max_batch_bytes = kura_journal::MAX_RECORD_LEN;
    let (node, handle) = Node::start(config).expect("start");
    handle
        .submit_wait(internal(Command::CreateUser))
        .expect("user");
    // Hold the sequencer until everything else is queued, so the next batch takes all
    // of it at once.
    let go_tx = hold_sequencer(&node, &handle);
    let n = 6_000u64; // ~300 bytes each: ~1.8 MB, more than one batch holds
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        handle.submit(
            // A normal-lane command (halts take the priority lane) with a long text.
            internal(Command::Adjust {
                user: UserId(0),
                asset: kura_units::AssetId(0),
                delta: kura_units::AmountDelta::credit(Amount::new(1)),
                reason: format!("{i:0>250}"),
            }),
            Box::new(move |r| {
                let _ = tx.send((i, r.map(|ack| ack.seq)));
            }),
        );
    }
    drop(tx);
    go_tx.send(()).expect("release the sequencer");
    let mut acks: Vec<(u64, u64)> = rx
        .iter()
        .map(|(i, r)| (i, r.expect("every command is acknowledged")))
        .collect();
    acks.sort_unstable();
    assert_eq!(acks.len() as u64, n);
    let first = 2 + HOLD_COMMANDS; // after the user and the commands holding the sequencer
    for (k, (i, seq)) in acks.iter().enumerate() {
        assert_eq!((*i, *seq), (k as u64, k as u64 + first), "order kept");
    }
    let carried = node
        .stats
        .carried_over
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(carried > 0, "the batch was split");
    drop(handle);
    node.shutdown().expect("shutdown");
}

#[test]
fn queries_see_every_answered_command_and_the_observer_sees_batches_before_answers() {
    use kura::node::{recover_observed, AppliedCommand};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::new(dir.path());
    config.snapshot_every_commands = 50;
    config.snapshot_every = None;
    let (engine, journal, recovered) = recover(&config, |_| {}).expect("recover");
    let seen: Arc<Mutex<Vec<AppliedCommand>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let observer: kura::node::Observer = Box::new(move |engine, batch| {
        // The engine as of the batch's end: its users are at least those created so far.
        let created = batch
            .iter()
            .flat_map(|a| &a.events)
            .filter(|e| matches!(e.kind, kura_engine::EventKind::UserCreated { .. }))
            .count();
        assert!(engine.user_count() >= created);
        sink.lock().expect("lock").extend(batch);
    });
    let (node, handle) =
        Node::start_observed(config.clone(), engine, journal, recovered, Some(observer))
            .expect("start");
    let cmds = workload(120);
    let total = cmds.len() as u64;
    for cmd in cmds {
        let ack = handle.submit_wait(internal(cmd)).expect("ack");
        // The observer saw this command before its caller heard back.
        let last = seen.lock().expect("lock").last().map(|a| a.ctx.seq);
        assert_eq!(last, Some(ack.seq));
        // A query after the answer sees the command's effect.
        let users = handle.query_wait(|e| e.user_count()).expect("query");
        assert!(users <= 4);
    }
    assert_eq!(handle.query_wait(|e| e.user_count()), Ok(4));
    let live_hash = handle.query_wait(|e| e.state_hash()).expect("hash");
    {
        let seen = seen.lock().expect("lock");
        let seqs: Vec<u64> = seen.iter().map(|a| a.ctx.seq).collect();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<u64>>(),
            "every command, in order"
        );
    }
    drop(handle);
    node.shutdown().expect("shutdown");
    assert!(!list_snapshots(dir.path()).expect("list").is_empty());

    // A consumer that stopped at seq 10 gets exactly the events after it on recovery,
    // even though newer snapshots exist; the recovered state is the live one.
    let mut replayed = Vec::new();
    let (engine, _journal, rec) = recover_observed(
        &config,
        |_| {},
        Some(10),
        |ctx, events| replayed.push((ctx.seq, events.to_vec())),
    )
    .expect("recover observed");
    assert_eq!(engine.state_hash(), live_hash);
    assert_eq!(rec.snapshot_seq, None, "no snapshot at or before seq 10");
    let expected: Vec<(u64, Vec<kura_engine::Event>)> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|a| a.ctx.seq > 10)
        .map(|a| (a.ctx.seq, a.events.clone()))
        .collect();
    assert_eq!(replayed, expected);
}

#[test]
fn stop_finishes_queued_commands_and_refuses_later_ones_while_handles_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, handle) = Node::start(NodeConfig::new(dir.path())).expect("start");
    let (tx, rx) = std::sync::mpsc::channel();
    for cmd in workload(20) {
        let tx = tx.clone();
        handle.submit(internal(cmd), Box::new(move |r| tx.send(r).expect("send")));
    }
    let queued = workload(20).len();
    let head = node.stop().expect("stop");
    // Every command queued before the stop was made durable and answered.
    let answers: Vec<_> = rx.try_iter().collect();
    assert_eq!(answers.len(), queued);
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(head.seq, queued as u64);
    // The handle outlived the node: it is told so, it does not hang.
    assert!(matches!(
        handle.submit_wait(internal(Command::CreateUser)),
        Err(SubmitError::Stopped(_))
    ));
    assert!(matches!(
        handle.query_wait(|e| e.user_count()),
        Err(SubmitError::Stopped(_))
    ));
}

#[test]
fn cancels_get_through_and_go_first_while_new_orders_are_shed() {
    use kura_engine::{EventKind, OrderRef};
    use std::sync::mpsc;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::new(dir.path());
    config.queue_capacity = 4;
    config.priority_capacity = 4;
    let (node, handle) = Node::start(config).expect("start");
    for cmd in workload(1) {
        handle.submit_wait(internal(cmd)).expect("setup");
    }
    let order = |price: u64| Command::PlaceOrder {
        user: UserId(0),
        market: MarketId(0),
        side: Side::Buy,
        order: OrderType::Limit {
            price: PriceTicks::new(price),
            qty: QtyLots::new(1),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: None,
        stp: None,
    };
    // The resting order the cancel is for (workload(1) placed order 1 already).
    let resting = handle
        .submit_wait(internal(order(14_000_000)))
        .expect("ack");
    let id = resting
        .result
        .expect("placed")
        .iter()
        .find_map(|e| match e.kind {
            EventKind::OrderAccepted { order, .. } => Some(order),
            _ => None,
        })
        .expect("order id");

    let gate_tx = hold_sequencer(&node, &handle);
    let (tx, rx) = mpsc::channel();
    let send = |tag: &'static str, cmd: Command| {
        let tx = tx.clone();
        handle.submit(
            internal(cmd),
            Box::new(move |r| tx.send((tag, r)).expect("send")),
        );
    };
    for _ in 0..4 {
        send("order", order(13_000_000));
    }
    send("shed", order(13_000_000));
    // The fifth order was refused at once: the normal lane is full.
    let (tag, shed) = rx.recv().expect("answer");
    assert_eq!((tag, shed.map(|a| a.seq)), ("shed", Err(SubmitError::Busy)));
    // A lookup on the normal lane is refused too, but the one a cancel makes first
    // (its market) takes the priority lane and is answered.
    assert!(matches!(
        handle.query(Box::new(|_| {})),
        Err(SubmitError::Busy)
    ));
    let (looked_tx, looked_rx) = mpsc::channel();
    handle
        .query_priority(Box::new(move |e| {
            looked_tx.send(e.market_by_symbol("BTCJPY")).expect("send");
        }))
        .expect("the priority lane takes the lookup");
    send(
        "cancel",
        Command::CancelOrder {
            user: UserId(0),
            market: MarketId(0),
            order: OrderRef::Id(id),
        },
    );
    gate_tx.send(()).expect("release");
    assert_eq!(looked_rx.recv().expect("looked up"), Some(MarketId(0)));
    let mut seqs = std::collections::BTreeMap::new();
    for _ in 0..5 {
        let (tag, r) = rx.recv().expect("answer");
        let ack = r.expect("accepted");
        if tag == "cancel" {
            let events = ack.result.as_ref().expect("cancelled");
            assert!(events.iter().any(|e| matches!(
                e.kind,
                EventKind::OrderCancelled { order, .. } if order == id
            )));
        }
        seqs.entry(tag).or_insert_with(Vec::new).push(ack.seq);
    }
    // The cancel was sequenced before every order queued ahead of it.
    let cancel = seqs["cancel"][0];
    assert!(seqs["order"].iter().all(|&s| s > cancel), "{seqs:?}");
    assert_eq!(seqs["order"].len(), 4);
    drop(handle);
    node.shutdown().expect("shutdown");
}

/// A query that panics takes the apply stage down with it: the node stops, and every
/// caller still hears back (nothing hangs), and shutting down reports the failure.
#[test]
fn a_panicking_query_stops_the_node_without_hanging_anyone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, handle) = Node::start(NodeConfig::new(dir.path())).expect("start");
    handle
        .submit_wait(internal(Command::CreateUser))
        .expect("before");
    handle
        .query(Box::new(|_| {
            panic!("a query that panics (expected in this test)")
        }))
        .expect("queued");
    // The journal stage learns of it at its next hand-over; from then on, and for
    // everything queued meanwhile, the answer is "stopped".
    let mut answers = Vec::new();
    for _ in 0..2 * kura::node::HANDOVER_BATCHES + 2 {
        answers.push(handle.submit_wait(internal(Command::CreateUser)));
    }
    assert!(
        matches!(answers.last(), Some(Err(SubmitError::Stopped(_)))),
        "{answers:?}"
    );
    assert!(matches!(
        handle.query_wait(|e| e.user_count()),
        Err(SubmitError::Stopped(_))
    ));
    drop(handle);
    assert!(node.shutdown().is_err(), "the failure is reported");
}
