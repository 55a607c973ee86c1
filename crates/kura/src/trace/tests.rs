//! Tracing over an in-memory chain: splits, merges, the depth limit, spends in the same
//! block and in the mempool, mixed hops, labels, the pictures, and bad starts.

use super::*;
use kura_chain::bitcoin::block::{Header, Version as BlockVersion};
use kura_chain::bitcoin::hashes::Hash;
use kura_chain::bitcoin::secp256k1::{Secp256k1, SecretKey};
use kura_chain::bitcoin::{
    absolute::LockTime, transaction::Version, Amount, CompactTarget, CompressedPublicKey, Sequence,
    TxIn, TxMerkleNode, Witness,
};
use std::cell::RefCell;

const NET: Network = Network::Regtest;

/// A P2WPKH script nobody at the exchange controls.
fn script(seed: u8) -> ScriptBuf {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[seed; 32]).expect("key");
    Address::p2wpkh(&CompressedPublicKey(key.public_key(&secp)), NET).script_pubkey()
}

/// A transaction spending `inputs` into `outputs` (sat, script seed); `tag` keeps txids
/// apart.
fn tx(tag: u32, inputs: &[OutPoint], outputs: &[(u64, u8)]) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::from_consensus(tag),
        input: inputs
            .iter()
            .map(|o| TxIn {
                previous_output: *o,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs
            .iter()
            .map(|(v, s)| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: script(*s),
            })
            .collect(),
    }
}

fn coinbase(tag: u32, value: u64) -> Transaction {
    tx(tag, &[OutPoint::null()], &[(value, 1)])
}

fn op(t: &Transaction, vout: u32) -> OutPoint {
    OutPoint::new(t.compute_txid(), vout)
}

#[derive(Default)]
struct Chain {
    blocks: RefCell<Vec<Block>>,
    mempool: RefCell<Vec<Transaction>>,
    /// Mined into a new block the first time the mempool is read.
    late: RefCell<Option<Vec<Transaction>>>,
}

impl Chain {
    fn mine(&self, txs: Vec<Transaction>) {
        let mut blocks = self.blocks.borrow_mut();
        let prev = blocks
            .last()
            .map_or(BlockHash::all_zeros(), |b| b.block_hash());
        let height = blocks.len() as u32;
        blocks.push(Block {
            header: Header {
                version: BlockVersion::from_consensus(4),
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time: height,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata: txs,
        });
    }
}

impl BlockReader for Chain {
    fn tip(&self) -> Result<BlockRef, ChainError> {
        let blocks = self.blocks.borrow();
        let last = blocks.last().expect("a chain");
        Ok(BlockRef {
            height: blocks.len() as u32 - 1,
            hash: last.block_hash(),
        })
    }
    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        Ok(self
            .blocks
            .borrow()
            .get(height as usize)
            .map(Block::block_hash))
    }
    fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError> {
        Ok(self
            .blocks
            .borrow()
            .iter()
            .find(|b| b.block_hash() == *hash)
            .cloned())
    }
    fn mempool(&self) -> Result<Vec<Transaction>, ChainError> {
        if let Some(txs) = self.late.borrow_mut().take() {
            let copy = self.mempool.borrow().clone();
            self.mine(txs);
            return Ok(copy);
        }
        Ok(self.mempool.borrow().clone())
    }
    fn transaction(&self, txid: &Txid) -> Result<Option<(Transaction, TxStatus)>, ChainError> {
        for (height, b) in self.blocks.borrow().iter().enumerate() {
            if let Some(t) = b.txdata.iter().find(|t| t.compute_txid() == *txid) {
                let at = BlockRef {
                    height: height as u32,
                    hash: b.block_hash(),
                };
                return Ok(Some((t.clone(), TxStatus::Confirmed(at))));
            }
        }
        Ok(self
            .mempool
            .borrow()
            .iter()
            .find(|t| t.compute_txid() == *txid)
            .map(|t| (t.clone(), TxStatus::Mempool)))
    }
}

/// The theft and what the thief did with it:
///
/// ```text
/// block 1: cb (1 BTC) -> theft: a 60_000_000 (seed 10), b 39_998_000 (seed 11)
/// block 2: split a -> c 25_000_000 (12), d 34_998_000 (13); an unrelated transaction
/// block 3: merge b + c -> e 64_996_000 (14)
/// mempool: d -> f 34_997_000 (15)
/// ```
struct Theft {
    chain: Chain,
    theft: Transaction,
    split: Transaction,
    merge: Transaction,
    unconfirmed: Transaction,
}

fn theft() -> Theft {
    let chain = Chain::default();
    let cb = coinbase(0, 100_000_000);
    let other = coinbase(1, 5_000_000_000);
    chain.mine(vec![other.clone()]);
    chain.mine(vec![cb.clone()]);
    let theft = tx(2, &[op(&cb, 0)], &[(60_000_000, 10), (39_998_000, 11)]);
    // The theft and the split in one block: the split comes after it.
    let split = tx(3, &[op(&theft, 0)], &[(25_000_000, 12), (34_998_000, 13)]);
    let unrelated = tx(4, &[op(&other, 0)], &[(4_999_990_000, 20)]);
    chain.mine(vec![
        coinbase(5, 1),
        theft.clone(),
        split.clone(),
        unrelated,
    ]);
    let merge = tx(6, &[op(&theft, 1), op(&split, 0)], &[(64_996_000, 14)]);
    chain.mine(vec![coinbase(7, 1), merge.clone()]);
    let unconfirmed = tx(8, &[op(&split, 1)], &[(34_997_000, 15)]);
    chain.mempool.borrow_mut().push(unconfirmed.clone());
    Theft {
        chain,
        theft,
        split,
        merge,
        unconfirmed,
    }
}

fn run(chain: &Chain, start: Start, depth: u32, labels: &Labels) -> Result<Trace, TraceError> {
    let options = Options {
        depth,
        network: NET,
    };
    trace(chain, start, &options, labels, &mut |_, _| {})
}

fn hop_of(t: &Trace, tx: &Transaction) -> Option<u32> {
    let id = tx.compute_txid();
    t.hops.iter().find(|h| h.txid == id).map(|h| h.hop)
}

#[test]
fn follows_splits_and_merges_to_the_coins_left_unspent() {
    let f = theft();
    let t = run(
        &f.chain,
        Start::Tx(f.theft.compute_txid()),
        10,
        &Labels::new(),
    )
    .expect("trace");
    assert_eq!(t.hops.len(), 4);
    assert_eq!(hop_of(&t, &f.theft), Some(0));
    assert_eq!(hop_of(&t, &f.split), Some(1));
    // The merge spends coins that moved once and twice: hop 2.
    assert_eq!(hop_of(&t, &f.merge), Some(2));
    assert_eq!(hop_of(&t, &f.unconfirmed), Some(2));
    assert_eq!(t.hops[0].height, Some(2));
    assert_eq!(t.hops[1].height, Some(2), "spent in the theft's own block");
    assert_eq!(t.hops[3].height, None, "the mempool spend");
    // Where the coins are now: e (confirmed) and f (unconfirmed).
    let held: Vec<(String, u64)> = t
        .holdings
        .iter()
        .map(|h| (h.address.clone(), h.traced_sat))
        .collect();
    let address = |seed| {
        Address::from_script(&script(seed), NET)
            .expect("address")
            .to_string()
    };
    assert_eq!(
        held,
        vec![(address(14), 64_996_000), (address(15), 34_997_000)]
    );
    assert_eq!(t.holdings[1].coins[0].height, None);
    let totals = &t.totals;
    assert_eq!(totals.start_sat, 100_000_000);
    assert_eq!(totals.fees_sat, 2_000 + 2_000 + 2_000 + 1_000);
    assert_eq!(totals.unspent_sat, 64_996_000 + 34_997_000);
    assert_eq!(totals.unspent_unconfirmed_sat, 34_997_000);
    assert_eq!(totals.beyond_depth_sat, 0);
    assert!(totals.balanced && totals.shares_known);
    assert_eq!(totals.max_hop, 2);
    // Hop 0's input is the stolen coin, traced in full.
    assert_eq!(t.hops[0].inputs[0].value_sat, Some(100_000_000));
    assert_eq!(t.hops[0].fee_sat, Some(2_000));
    assert_eq!(
        t.hops[0].outputs[1].state,
        OutputState::Spent {
            spent_by: f.merge.compute_txid(),
            spent_height: Some(3),
            spent_hop: 2
        }
    );
    assert_eq!(t.tip.height, 3);
}

#[test]
fn the_depth_limit_stops_at_the_spenders_and_names_them() {
    let f = theft();
    let t = run(
        &f.chain,
        Start::Tx(f.theft.compute_txid()),
        1,
        &Labels::new(),
    )
    .expect("trace");
    assert_eq!(t.hops.len(), 2);
    assert_eq!(hop_of(&t, &f.merge), None);
    let beyond: Vec<(OutPoint, Txid, Option<u32>)> = t
        .beyond_depth
        .iter()
        .map(|b| (b.outpoint, b.spent_by, b.spent_height))
        .collect();
    assert_eq!(
        beyond,
        vec![
            (op(&f.theft, 1), f.merge.compute_txid(), Some(3)),
            (op(&f.split, 0), f.merge.compute_txid(), Some(3)),
            (op(&f.split, 1), f.unconfirmed.compute_txid(), None),
        ]
    );
    assert!(t.holdings.is_empty());
    assert_eq!(t.totals.fees_sat, 4_000);
    assert_eq!(t.totals.beyond_depth_sat, 100_000_000 - 4_000);
    assert!(t.totals.balanced);

    // Depth 0: only the start, and who spent its outputs.
    let t = run(
        &f.chain,
        Start::Tx(f.theft.compute_txid()),
        0,
        &Labels::new(),
    )
    .expect("trace");
    assert_eq!(t.hops.len(), 1);
    assert_eq!(t.beyond_depth.len(), 2);
    assert!(t.totals.balanced);
}

#[test]
fn an_outpoint_start_follows_one_coin_and_a_mixed_hop_passes_on_its_share() {
    let f = theft();
    let t = run(&f.chain, Start::Output(op(&f.theft, 1)), 10, &Labels::new()).expect("trace");
    assert_eq!(t.hops.len(), 2, "the theft and the merge");
    assert_eq!(t.hops[0].outputs[0].state, OutputState::NotFollowed);
    assert_eq!(t.hops[0].outputs[0].traced_sat, 0);
    assert_eq!(t.totals.start_sat, 39_998_000);
    let merge = &t.hops[1];
    assert!(merge.mixed && merge.share_known);
    assert_eq!(merge.hop, 1);
    // The other input (c, 25_000_000) is looked up by txid.
    assert_eq!(merge.inputs[1].value_sat, Some(25_000_000));
    assert_eq!(merge.inputs[1].from_hop, None);
    assert_eq!(merge.value_in_sat, Some(64_998_000));
    assert_eq!(merge.fee_sat, Some(2_000));
    // 39_998_000 of 64_998_000 in, 64_996_000 out: the traced share of the output.
    let share = 39_998_000u128 * 64_996_000 / 64_998_000;
    assert_eq!(u128::from(merge.outputs[0].traced_sat), share);
    assert_eq!(
        u128::from(merge.traced_fee_sat),
        39_998_000 - share,
        "the rest of the traced input is traced fee"
    );
    assert!(t.totals.balanced);
}

#[test]
fn a_spend_mined_while_the_mempool_was_read_is_not_missed() {
    let f = theft();
    // The unconfirmed spend gets mined between the last block read and the mempool.
    f.chain.mempool.borrow_mut().clear();
    *f.chain.late.borrow_mut() = Some(vec![coinbase(9, 1), f.unconfirmed.clone()]);
    let t = run(
        &f.chain,
        Start::Tx(f.theft.compute_txid()),
        10,
        &Labels::new(),
    )
    .expect("trace");
    assert_eq!(t.tip.height, 4);
    let h = t
        .hops
        .iter()
        .find(|h| h.txid == f.unconfirmed.compute_txid())
        .expect("found in the new block");
    assert_eq!(h.height, Some(4));
    assert_eq!(t.totals.unspent_unconfirmed_sat, 0);
}

#[test]
fn an_unconfirmed_start_is_traced_through_the_mempool() {
    let f = theft();
    let child = tx(10, &[op(&f.unconfirmed, 0)], &[(34_996_000, 16)]);
    f.chain.mempool.borrow_mut().push(child.clone());
    let t = run(
        &f.chain,
        Start::Tx(f.unconfirmed.compute_txid()),
        10,
        &Labels::new(),
    )
    .expect("trace");
    assert_eq!(t.hops.len(), 2);
    assert_eq!(hop_of(&t, &child), Some(1));
    assert_eq!(t.totals.unspent_unconfirmed_sat, 34_996_000);
    assert!(t.totals.balanced);
}

#[test]
fn our_addresses_are_labelled_from_the_registered_descriptors() {
    use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(NET, &[7; 32]).expect("master");
    let path = DerivationPath::from_str("m/84'/1'/1'").expect("path");
    let xpub = Xpub::from_priv(&secp, &master.derive_priv(&secp, &path).expect("derive"));
    let descriptor = format!("wpkh([{}/84'/1'/1']{xpub}/0/*)", master.fingerprint(&secp));
    let mut labels = Labels::new();
    let users = BTreeMap::from([(1, 42)]);
    labels
        .add_wallet(3, "deposit", &descriptor, 2, &users, NET)
        .expect("labels");
    assert_eq!(labels.len(), 2 + LABEL_LOOKAHEAD as usize);
    let at = |i| kura_custody::derive(&descriptor, i, NET).expect("derive").0;
    let owner = labels.get(&at(1)).expect("ours");
    assert_eq!((owner.wallet, owner.index, owner.user), (3, 1, Some(42)));
    assert_eq!(owner.to_string(), "ours: deposit #3/1 user 42");
    assert!(labels.get(&at(21)).is_some());
    assert!(labels.get(&at(22)).is_none(), "beyond the lookahead");
    assert!(labels
        .add_wallet(0, "hot", "wpkh(nonsense)", 0, &BTreeMap::new(), NET)
        .is_err());

    // In a trace: the merge's output pays one of them, the stolen coin came from another.
    let f = theft();
    let mut labels = Labels::new();
    let owner = |index| Owner {
        wallet: 1,
        role: "hot".into(),
        index,
        user: None,
    };
    labels.insert(script(1), owner(0));
    labels.insert(script(14), owner(5));
    let t = run(&f.chain, Start::Tx(f.theft.compute_txid()), 10, &labels).expect("trace");
    assert_eq!(t.hops[0].inputs[0].owner, Some(owner(0)));
    assert_eq!(t.holdings[0].owner, Some(owner(5)));
    assert_eq!(t.holdings[1].owner, None);
    let json = serde_json::to_value(&t).expect("json");
    assert_eq!(json["format"], "kura-trace/1");
    assert_eq!(json["holdings"][0]["owner"]["role"], "hot");
    assert_eq!(json["hops"][0]["outputs"][1]["state"], "spent");
    assert_eq!(json["hops"][0]["outputs"][1]["spent_hop"], 2);
    assert_eq!(
        json["hops"][0]["txid"],
        f.theft.compute_txid().to_string().as_str()
    );
}

#[test]
fn bad_starts_are_clear_errors() {
    for bad in [
        "",
        "zz",
        "00",
        "abcd:1",
        &format!("{}:", "ab".repeat(32)),
        &format!("{}:x", "ab".repeat(32)),
        &format!("{}:-1", "ab".repeat(32)),
        &format!("{}:99999999999", "ab".repeat(32)),
        &format!("{}0", "ab".repeat(32)),
    ] {
        let e = Start::from_str(bad).expect_err(bad);
        assert!(e.to_string().contains("neither a txid"), "{bad:?}: {e}");
    }
    let f = theft();
    let unknown = Txid::from_byte_array([9; 32]);
    let e = run(&f.chain, Start::Tx(unknown), 3, &Labels::new()).expect_err("unknown");
    assert!(matches!(e, TraceError::NotFound(t) if t == unknown), "{e}");
    assert!(e.to_string().contains("txindex=1"), "{e}");
    let e = run(&f.chain, Start::Output(op(&f.theft, 2)), 3, &Labels::new()).expect_err("vout");
    assert_eq!(
        e.to_string(),
        format!(
            "transaction {} has 2 output(s): there is no output 2",
            f.theft.compute_txid()
        )
    );
    let s = format!("{}:1", f.theft.compute_txid());
    assert_eq!(
        Start::from_str(&s).expect("outpoint"),
        Start::Output(op(&f.theft, 1))
    );
}

#[test]
fn a_reorganisation_under_the_trace_is_an_error() {
    /// Says the start is confirmed in a block the chain does not have at that height.
    struct Stale(Chain);
    impl BlockReader for Stale {
        fn tip(&self) -> Result<BlockRef, ChainError> {
            self.0.tip()
        }
        fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
            self.0.block_hash(height)
        }
        fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError> {
            self.0.block(hash)
        }
        fn mempool(&self) -> Result<Vec<Transaction>, ChainError> {
            self.0.mempool()
        }
        fn transaction(&self, txid: &Txid) -> Result<Option<(Transaction, TxStatus)>, ChainError> {
            Ok(self.0.transaction(txid)?.map(|(t, s)| match s {
                TxStatus::Confirmed(b) => (
                    t,
                    TxStatus::Confirmed(BlockRef {
                        height: b.height,
                        hash: BlockHash::all_zeros(),
                    }),
                ),
                TxStatus::Mempool => (t, s),
            }))
        }
    }
    let f = theft();
    let stale = Stale(f.chain);
    let options = Options {
        depth: 3,
        network: NET,
    };
    let e = trace(
        &stale,
        Start::Tx(f.theft.compute_txid()),
        &options,
        &Labels::new(),
        &mut |_, _| {},
    )
    .expect_err("reorganised");
    assert!(matches!(e, TraceError::Reorganised { height: 2 }), "{e}");
}

#[test]
fn apportion_adds_up_to_the_satoshi() {
    // (traced in, value in, outputs, expected parts)
    let table: &[(u64, u64, &[u64], &[u64])] = &[
        (100, 100, &[60, 38], &[60, 38]),
        (50, 100, &[60, 38], &[30, 19]),
        (1, 3, &[1, 1], &[0, 0]),
        (2, 3, &[1, 1, 1], &[1, 1, 0]),
        (7, 10, &[3, 3, 3], &[2, 2, 2]),
        (5, 10, &[3, 3, 4], &[2, 1, 2]),
        (0, 100, &[99], &[0]),
        (10, 0, &[5], &[0]),
        (10, 10, &[], &[]),
        (u64::MAX, u64::MAX, &[u64::MAX - 1], &[u64::MAX - 1]),
    ];
    for (traced, value_in, values, expected) in table {
        let parts = apportion(*traced, *value_in, values);
        assert_eq!(&parts, expected, "{traced} of {value_in} into {values:?}");
        let total: u128 = values.iter().map(|v| u128::from(*v)).sum();
        if *value_in > 0 && total > 0 {
            let sum: u128 = parts.iter().map(|p| u128::from(*p)).sum();
            assert_eq!(sum, u128::from(*traced) * total / u128::from(*value_in));
        }
    }
}

#[test]
fn the_pictures_are_well_formed_and_show_every_hop() {
    let f = theft();
    let mut labels = Labels::new();
    labels.insert(
        script(14),
        Owner {
            wallet: 0,
            role: "deposit".into(),
            index: 3,
            user: Some(7),
        },
    );
    let t = run(&f.chain, Start::Tx(f.theft.compute_txid()), 10, &labels).expect("trace");

    let svg = render::svg(&t);
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let hops: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("hop"))
        .collect();
    assert_eq!(hops.len(), 4);
    let unspent = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("output unspent"))
        .count();
    assert_eq!(unspent, 2);
    let edges = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("edge"))
        .count();
    assert_eq!(edges, 4, "split, merge (two inputs), mempool spend");
    assert!(svg.contains(&short_txid(&f.merge.compute_txid())));
    assert!(svg.contains("ours: deposit #0/3 user 7"));
    assert!(svg.contains("0.64996000"));

    let dot = render::dot(&t);
    let mut parser = layout::gv::DotParser::new(&dot);
    let graph = parser.process();
    assert!(graph.is_ok(), "the DOT parses: {:?}\n{dot}", graph.err());
    for h in &t.hops {
        assert!(dot.contains(&format!("\"tx_{}\"", h.txid)));
    }
    assert!(dot.contains("UNSPENT"));
}

#[test]
fn coins_burnt_in_an_op_return_are_counted_as_unspendable() {
    let f = theft();
    let mut burn = tx(11, &[op(&f.merge, 0)], &[(64_000_000, 16)]);
    burn.output.push(TxOut {
        value: Amount::from_sat(995_000),
        script_pubkey: ScriptBuf::new_op_return([0x6b, 0x75, 0x72, 0x61]),
    });
    f.chain.mine(vec![coinbase(12, 1), burn.clone()]);
    let t = run(
        &f.chain,
        Start::Tx(f.theft.compute_txid()),
        10,
        &Labels::new(),
    )
    .expect("trace");
    let hop = t
        .hops
        .iter()
        .find(|h| h.txid == burn.compute_txid())
        .expect("the burn");
    assert_eq!(hop.outputs[1].state, OutputState::Unspendable);
    assert_eq!(hop.outputs[1].address, None);
    assert_eq!(t.totals.unspendable_sat, 995_000);
    assert_eq!(t.totals.fees_sat, 7_000 + 1_000);
    assert!(t.totals.balanced);
    assert!(render::svg(&t).contains("OP_RETURN"));
}
