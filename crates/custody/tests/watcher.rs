//! The watcher and the planner over hand-built chains: crediting after N confirmations
//! exactly once, dust, reorganisations (reversal only when synced), unknown spends of our
//! coins, holdings, mempool deposits, and a property: any sequence of connects and
//! disconnects leaves the same state as following the final chain from scratch.

use bitcoin::absolute::LockTime;
use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness,
};
use kura_custody::{
    plan_block, BatchFacts, Books, Owner, PlanParams, SpendReport, WatchError, Watcher,
};
use kura_engine::Command;
use kura_units::{AssetId, UserId};
use proptest::prelude::*;
use std::collections::BTreeSet;

const BTC: AssetId = AssetId(0);

fn script(n: u8) -> ScriptBuf {
    // A P2WPKH script with a distinct 20-byte program per n.
    let mut s = vec![0x00, 0x14];
    s.extend_from_slice(&[n; 20]);
    ScriptBuf::from_bytes(s)
}

fn tx(inputs: &[OutPoint], outputs: &[(u8, u64)], salt: u32) -> Transaction {
    Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: LockTime::from_consensus(salt),
        input: inputs
            .iter()
            .map(|&previous_output| TxIn {
                previous_output,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs
            .iter()
            .map(|&(s, v)| TxOut {
                value: Amount::from_sat(v),
                script_pubkey: script(s),
            })
            .collect(),
    }
}

fn coinbase(height: u32, salt: u32) -> Transaction {
    let mut t = tx(&[OutPoint::null()], &[(200, 50)], salt);
    t.input[0].script_sig = ScriptBuf::from_bytes(height.to_le_bytes().to_vec());
    t
}

fn block(prev: BlockHash, height: u32, txs: Vec<Transaction>, salt: u32) -> Block {
    let mut txdata = vec![coinbase(height, salt)];
    txdata.extend(txs);
    Block {
        header: Header {
            version: Version::TWO,
            prev_blockhash: prev,
            merkle_root: TxMerkleNode::all_zeros(),
            time: height,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: salt,
        },
        txdata,
    }
}

/// A chain builder: blocks from height 0 up.
struct Chain {
    blocks: Vec<Block>,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            blocks: vec![block(BlockHash::all_zeros(), 0, vec![], 0)],
        }
    }
    fn push(&mut self, txs: Vec<Transaction>, salt: u32) -> &Block {
        let prev = self
            .blocks
            .last()
            .map_or(BlockHash::all_zeros(), Block::block_hash);
        let h = self.blocks.len() as u32;
        self.blocks.push(block(prev, h, txs, salt));
        self.blocks.last().expect("pushed")
    }
    fn tip(&self) -> u32 {
        self.blocks.len() as u32 - 1
    }
}

fn follow(w: &mut Watcher, chain: &Chain) -> Vec<SpendReport> {
    let mut spends = Vec::new();
    for h in w.next_height()..=chain.tip() {
        spends.extend(w.connect(h, &chain.blocks[h as usize]).expect("extends"));
    }
    spends
}

fn owner(user: u32, index: u32) -> Owner {
    Owner {
        wallet: 0,
        index,
        user: Some(UserId(user)),
    }
}

/// The books, as the engine would keep them for these commands.
#[derive(Default)]
struct Model {
    credited: BTreeSet<String>,
    halted: bool,
    batches: std::collections::BTreeMap<OutPoint, BatchFacts>,
    finished: Vec<(u64, bool)>,
    credits: usize,
    reversals: usize,
}

impl Books for Model {
    fn credited(&self, reference: &str) -> bool {
        self.credited.contains(reference)
    }
    fn credited_chain_deposits(&self) -> Vec<String> {
        self.credited.iter().cloned().collect()
    }
    fn withdrawals_halted(&self) -> bool {
        self.halted
    }
    fn batch_of(&self, coin: &OutPoint) -> Option<BatchFacts> {
        self.batches.get(coin).cloned()
    }
}

impl Model {
    fn apply(&mut self, commands: &[Command]) {
        for c in commands {
            match c {
                Command::Deposit { reference, .. } => {
                    assert!(self.credited.insert(reference.clone()), "credited twice");
                    self.credits += 1;
                }
                Command::ReverseDeposit { reference, .. } => {
                    assert!(self.credited.remove(reference), "reversed uncredited");
                    self.reversals += 1;
                }
                Command::HaltWithdrawals { .. } => {
                    assert!(!self.halted, "halted twice");
                    self.halted = true;
                }
                Command::Reconcile { .. } => {}
                Command::FinishWithdrawalBatch {
                    batch, txid, paid, ..
                } => {
                    let mut n = 0;
                    for b in self.batches.values_mut().filter(|b| b.id == *batch) {
                        assert!(b.open, "batch {batch} finished twice");
                        b.open = false;
                        b.finished_by = Some(bitcoin::Txid::from_byte_array(*txid));
                        n += 1;
                    }
                    assert!(n > 0, "unknown batch {batch}");
                    self.finished.push((*batch, *paid));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

const PARAMS: PlanParams = PlanParams {
    asset: BTC,
    confirmations: 3,
    dust_sat: 546,
};

fn advance(w: &mut Watcher, m: &mut Model, chain: &Chain) -> Vec<Command> {
    let spends = follow(w, chain);
    step(w, m, &spends, true)
}

fn step(w: &Watcher, m: &mut Model, spends: &[SpendReport], synced: bool) -> Vec<Command> {
    let plan = plan_block(w, m, PARAMS, spends, synced);
    m.apply(&plan.commands);
    plan.commands
}

#[test]
fn deposit_is_credited_at_the_third_confirmation_exactly_once_and_dust_never() {
    let mut chain = Chain::new();
    let mut w = Watcher::new(0);
    let mut m = Model::default();
    w.watch(script(1), owner(7, 0));
    let pay = tx(
        &[OutPoint::new(bitcoin::Txid::all_zeros(), 9)],
        &[(1, 10_000), (1, 545), (9, 5)],
        1,
    );
    let txid = pay.compute_txid();
    chain.push(vec![pay], 1);
    advance(&mut w, &mut m, &chain);
    assert_eq!(
        w.deposits().count(),
        2,
        "both outputs to the address are seen"
    );
    assert_eq!(m.credits, 0, "one confirmation is not enough");
    chain.push(vec![], 2);
    advance(&mut w, &mut m, &chain);
    assert_eq!(m.credits, 0);
    chain.push(vec![], 3);
    let commands = advance(&mut w, &mut m, &chain);
    assert_eq!(m.credits, 1);
    assert!(m.credited.contains(&format!("{txid}:0")));
    assert!(
        !m.credited.contains(&format!("{txid}:1")),
        "545 sat is dust"
    );
    // Credits come before the reconciliation, which reports all our coins.
    assert!(matches!(commands.first(), Some(Command::Deposit { .. })));
    match commands.last() {
        Some(Command::Reconcile {
            height, holdings, ..
        }) => {
            assert_eq!(*height, 3);
            assert_eq!(holdings.get(), 10_545);
        }
        other => panic!("last command {other:?}"),
    }
    for salt in 4..8 {
        chain.push(vec![], salt);
        advance(&mut w, &mut m, &chain);
    }
    assert_eq!(m.credits, 1, "never credited twice");
}

#[test]
fn reorg_reverses_a_credited_deposit_only_when_synced_and_recredits_if_it_returns() {
    let mut chain = Chain::new();
    let mut w = Watcher::new(0);
    let mut m = Model::default();
    w.watch(script(1), owner(7, 0));
    let pay = tx(
        &[OutPoint::new(bitcoin::Txid::all_zeros(), 1)],
        &[(1, 50_000)],
        1,
    );
    chain.push(vec![pay.clone()], 1);
    for salt in 2..5 {
        chain.push(vec![], salt);
    }
    advance(&mut w, &mut m, &chain);
    assert_eq!(m.credits, 1);
    // A longer branch from height 0 without the payment replaces everything.
    while w.tip().is_some_and(|(h, _)| h > 0) {
        w.disconnect().expect("disconnect");
    }
    let mut branch = Chain {
        blocks: vec![chain.blocks[0].clone()],
    };
    for salt in 10..16 {
        branch.push(vec![], salt);
    }
    // Half-way through catching up, no reversal yet.
    w.connect(1, &branch.blocks[1]).expect("connect");
    step(&w, &mut m, &[], false);
    assert_eq!(m.reversals, 0);
    advance(&mut w, &mut m, &branch);
    assert_eq!(m.reversals, 1);
    assert!(m.credited.is_empty());
    // The payment confirms again on the new branch: credited again after 3 blocks.
    branch.push(vec![pay], 20);
    for salt in 21..23 {
        branch.push(vec![], salt);
    }
    advance(&mut w, &mut m, &branch);
    assert_eq!(m.credits, 2);
    assert_eq!(m.credited.len(), 1);
}

#[test]
fn unknown_spend_of_our_coin_halts_withdrawals_once_approved_spend_does_not() {
    let mut chain = Chain::new();
    let mut w = Watcher::new(0);
    let mut m = Model::default();
    w.watch(script(1), owner(7, 0));
    w.watch(
        script(2),
        Owner {
            wallet: 1,
            index: 0,
            user: None,
        },
    );
    let fund = tx(
        &[OutPoint::new(bitcoin::Txid::all_zeros(), 1)],
        &[(1, 40_000), (2, 60_000)],
        1,
    );
    let fid = fund.compute_txid();
    chain.push(vec![fund], 1);
    advance(&mut w, &mut m, &chain);
    assert_eq!(w.holdings_sat(), 100_000);
    // An approved batch spending the hot coin: finished as paid, no halt.
    m.batches.insert(
        OutPoint::new(fid, 1),
        BatchFacts {
            id: 0,
            open: true,
            payments: vec![(script(9), 59_000)],
            finished_by: None,
        },
    );
    chain.push(vec![tx(&[OutPoint::new(fid, 1)], &[(9, 59_000)], 2)], 2);
    let commands = advance(&mut w, &mut m, &chain);
    assert!(!m.halted, "{commands:?}");
    assert_eq!(m.finished, vec![(0, true)]);
    assert!(commands.iter().any(|c| matches!(
        c,
        Command::FinishWithdrawalBatch { network_fee, .. } if network_fee.get() == 1_000
    )));
    assert_eq!(w.holdings_sat(), 40_000);
    // A thief moves the deposit coin: withdrawals halt with where and what.
    chain.push(vec![tx(&[OutPoint::new(fid, 0)], &[(9, 39_000)], 3)], 3);
    let commands = advance(&mut w, &mut m, &chain);
    assert!(m.halted);
    let reason = commands
        .iter()
        .find_map(|c| match c {
            Command::HaltWithdrawals { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("halt");
    assert!(reason.contains(&format!("{fid}:0")), "{reason}");
    assert_eq!(w.holdings_sat(), 0);
}

#[test]
fn coin_created_and_spent_in_one_block_and_mempool_view() {
    let mut chain = Chain::new();
    let mut w = Watcher::new(0);
    w.watch(script(1), owner(3, 0));
    let a = tx(
        &[OutPoint::new(bitcoin::Txid::all_zeros(), 1)],
        &[(1, 1_000)],
        1,
    );
    let b = tx(&[OutPoint::new(a.compute_txid(), 0)], &[(9, 900)], 2);
    let spent = b.compute_txid();
    // In the mempool first: pending, not holdings.
    let c = tx(
        &[OutPoint::new(bitcoin::Txid::all_zeros(), 2)],
        &[(1, 7_000)],
        3,
    );
    w.set_mempool(std::slice::from_ref(&c));
    follow(&mut w, &chain);
    assert_eq!(w.pending().count(), 1);
    chain.push(vec![a, b, c], 1);
    let spends = follow(&mut w, &chain);
    assert_eq!(spends.len(), 1);
    assert_eq!(spends[0].spent_by, spent);
    assert_eq!(w.holdings_sat(), 7_000);
    assert_eq!(w.pending().count(), 0, "confirmed leaves the pending view");
    assert_eq!(
        w.deposits().count(),
        2,
        "a spent deposit is still a deposit"
    );
}

#[test]
fn connect_refuses_a_block_that_does_not_extend_the_tip() {
    let mut chain = Chain::new();
    chain.push(vec![], 1);
    chain.push(vec![], 2);
    let mut w = Watcher::new(0);
    w.connect(0, &chain.blocks[0]).expect("genesis");
    assert!(matches!(
        w.connect(2, &chain.blocks[2]),
        Err(WatchError::NotOnTip { height: 2, .. })
    ));
    let other = block(BlockHash::all_zeros(), 1, vec![], 99);
    assert!(matches!(
        w.connect(1, &other),
        Err(WatchError::NotOnTip { height: 1, .. })
    ));
    w.connect(1, &chain.blocks[1]).expect("extends");
    w.disconnect().expect("one");
    w.disconnect().expect("two");
    assert_eq!(w.disconnect(), Err(WatchError::NothingToDisconnect));
}

/// Everything observable about a watcher: tip, coins, deposits.
type Fingerprint = (Option<(u32, BlockHash)>, Vec<(OutPoint, u64)>, Vec<String>);

fn fingerprint(w: &Watcher) -> Fingerprint {
    (
        w.tip(),
        w.coins().map(|(o, v, _, _)| (o, v)).collect(),
        w.deposits().map(|d| d.reference()).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn undo_is_exact(ops in prop::collection::vec((0u8..4, any::<u8>()), 1..40)) {
        // Each op: 0-2 connect a block (paying, spending or empty), 3 disconnect.
        let mut w = Watcher::new(0);
        for s in 1..=4u8 {
            w.watch(script(s), owner(u32::from(s), 0));
        }
        let mut blocks: Vec<Block> = Vec::new();
        let mut salt = 0u32;
        for (op, x) in ops {
            salt += 1;
            if op == 3 {
                if w.disconnect().is_ok() {
                    blocks.pop();
                }
                continue;
            }
            let prev = blocks.last().map_or(BlockHash::all_zeros(), Block::block_hash);
            let mut txs = Vec::new();
            if op >= 1 {
                txs.push(tx(&[OutPoint::new(bitcoin::Txid::all_zeros(), salt)], &[(x % 5, 1_000 + u64::from(x))], salt));
            }
            if op == 2 {
                if let Some((o, _, _, _)) = w.coins().nth(usize::from(x) % 3) {
                    txs.push(tx(&[o], &[(9, 10)], salt));
                }
            }
            let b = block(prev, blocks.len() as u32, txs, salt);
            w.connect(blocks.len() as u32, &b).expect("extends");
            blocks.push(b);
        }
        let mut fresh = Watcher::new(0);
        for s in 1..=4u8 {
            fresh.watch(script(s), owner(u32::from(s), 0));
        }
        for (h, b) in blocks.iter().enumerate() {
            fresh.connect(h as u32, b).expect("extends");
        }
        prop_assert_eq!(fingerprint(&w), fingerprint(&fresh));
    }
}

/// A watcher with two hot coins (60k and 40k sat, wallet 1) locked by open batch 5,
/// which must pay 50k to script 9.
fn batch_world() -> (Chain, Watcher, Model, [OutPoint; 2]) {
    let mut chain = Chain::new();
    let mut w = Watcher::new(0);
    let mut m = Model::default();
    for (n, index) in [(2u8, 0u32), (3, 1), (4, 2)] {
        w.watch(
            script(n),
            Owner {
                wallet: 1,
                index,
                user: None,
            },
        );
    }
    let fund = tx(
        &[OutPoint::new(bitcoin::Txid::all_zeros(), 1)],
        &[(2, 60_000), (3, 40_000)],
        1,
    );
    let fid = fund.compute_txid();
    chain.push(vec![fund], 1);
    advance(&mut w, &mut m, &chain);
    let coins = [OutPoint::new(fid, 0), OutPoint::new(fid, 1)];
    for coin in coins {
        m.batches.insert(
            coin,
            BatchFacts {
                id: 5,
                open: true,
                payments: vec![(script(9), 50_000)],
                finished_by: None,
            },
        );
    }
    (chain, w, m, coins)
}

#[test]
fn a_fee_bump_settles_the_batch_once_whatever_its_txid() {
    let (mut chain, mut w, mut m, coins) = batch_world();
    // The original pays 50k + 49k change (fee 1k); the bump pays 50k + 47k (fee 3k).
    // Only the bump confirms.
    let bump = tx(&coins, &[(9, 50_000), (4, 47_000)], 7);
    let bump_id = bump.compute_txid();
    chain.push(vec![bump], 2);
    let commands = advance(&mut w, &mut m, &chain);
    assert!(!m.halted, "{commands:?}");
    assert_eq!(m.finished, vec![(5, true)], "one batch, settled once");
    assert!(commands.iter().any(|c| matches!(
        c,
        Command::FinishWithdrawalBatch { txid, network_fee, .. }
            if *txid == bump_id.to_byte_array() && network_fee.get() == 3_000
    )));
    // Our change is ours again: holdings are the change.
    assert_eq!(w.holdings_sat(), 47_000);
}

#[test]
fn a_cancel_back_to_our_wallet_releases_the_batch_and_a_changed_amount_halts() {
    let (mut chain, mut w, mut m, coins) = batch_world();
    let cancel = tx(&coins, &[(4, 98_000)], 8);
    chain.push(vec![cancel], 2);
    let commands = advance(&mut w, &mut m, &chain);
    assert!(!m.halted, "{commands:?}");
    assert_eq!(m.finished, vec![(5, false)]);

    let (mut chain, mut w, mut m, coins) = batch_world();
    // Same coins, but the customer's output is 1 sat short and the rest goes away.
    let tampered = tx(&coins, &[(9, 49_999), (8, 49_000)], 9);
    chain.push(vec![tampered], 2);
    let commands = advance(&mut w, &mut m, &chain);
    assert!(m.halted, "{commands:?}");
    assert!(m.finished.is_empty());

    let (mut chain, mut w, mut m, coins) = batch_world();
    // A transaction spending one batch coin plus a stranger's coin is not ours.
    let mixed = tx(
        &[coins[0], OutPoint::new(bitcoin::Txid::all_zeros(), 77)],
        &[(9, 50_000)],
        10,
    );
    chain.push(vec![mixed], 2);
    advance(&mut w, &mut m, &chain);
    assert!(m.halted);
}

#[test]
fn a_settled_batch_confirmed_again_after_a_reorganisation_is_not_a_theft() {
    let (mut chain, mut w, mut m, coins) = batch_world();
    let pay = tx(&coins, &[(9, 50_000), (4, 49_000)], 7);
    chain.push(vec![pay.clone()], 2);
    advance(&mut w, &mut m, &chain);
    assert_eq!(m.finished, vec![(5, true)]);
    // The block is replaced; the same transaction confirms in the new one.
    w.disconnect().expect("tip");
    chain.blocks.pop();
    chain.push(vec![pay], 3);
    let commands = advance(&mut w, &mut m, &chain);
    assert!(!m.halted, "{commands:?}");
    assert_eq!(m.finished.len(), 1, "not finished twice");
}
