//! The devnet's consensus checks, mempool, reorgs and persistence, in process.

use crate::common;

use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, Block, OutPoint, ScriptBuf, TxOut};
use common::{devnet, fund, wait_for, Key};
use kura_chain::devnet::consensus::{self, bip34_prefix, subsidy, REGTEST_BITS};
use kura_chain::{ChainSource, Devnet, DevnetError, DevnetOptions, TxStatus};

fn remerkle(block: &mut Block) {
    block.header.merkle_root = block.compute_merkle_root().expect("root");
    consensus::solve(&mut block.header);
}

fn mtp(devnet: &Devnet) -> u32 {
    let tip = devnet.tip().height;
    let mut times: Vec<u32> = (tip.saturating_sub(10)..=tip)
        .map(|h| {
            let hash = devnet.block_hash(h).expect("hash");
            devnet.block(&hash).expect("block").header.time
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

#[test]
fn starts_from_regtest_genesis_and_mines_valid_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devnet = Devnet::open(dir.path()).expect("open");
    let genesis = devnet.block_hash(0).expect("genesis");
    assert_eq!(
        genesis.to_string(),
        "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    );
    let hashes = devnet.mine(3).expect("mine");
    assert_eq!(devnet.tip().height, 3);
    for (i, hash) in hashes.iter().enumerate() {
        let height = i as u32 + 1;
        let block = devnet.block(hash).expect("block");
        assert_eq!(block.header.bits.to_consensus(), REGTEST_BITS);
        assert!(block
            .header
            .validate_pow(consensus::regtest_target())
            .is_ok());
        assert!(block.check_merkle_root());
        let cb = &block.txdata[0];
        assert!(cb.input[0]
            .script_sig
            .as_bytes()
            .starts_with(&bip34_prefix(height)));
        assert_eq!(cb.output[0].value, subsidy(height));
        assert_eq!(
            cb.output[0].script_pubkey,
            devnet.faucet_address().script_pubkey()
        );
    }
}

#[test]
fn block_checks_refuse_tampered_blocks() {
    let (_dir, devnet) = devnet();
    let key = Key::new(7);
    // A segwit transaction in the mempool, so the template carries a witness commitment.
    let txid = devnet
        .send(&key.address, Amount::from_sat(1_000_000))
        .expect("send");
    let (fee, _) = {
        let (tx, _) = devnet.tx(&txid).expect("in mempool");
        devnet.test_accept(&tx).expect_err("already in mempool");
        let inputs: Amount = tx
            .input
            .iter()
            .map(|i| {
                let (prev, _) = devnet.tx(&i.previous_output.txid).expect("prev");
                prev.output[i.previous_output.vout as usize].value
            })
            .sum();
        let outs: Amount = tx.output.iter().map(|o| o.value).sum();
        (inputs - outs, ())
    };
    assert!(fee > Amount::ZERO);
    let script = devnet.faucet_address().script_pubkey();
    let good = devnet
        .block_template(&script, Vec::new(), true)
        .expect("template");
    let height = devnet.tip().height + 1;
    assert_eq!(good.txdata.len(), 2);
    assert!(good.check_witness_commitment());
    assert_eq!(good.txdata[0].output[0].value, subsidy(height) + fee);

    let reject = |b: Block| devnet.submit_block(b).expect_err("must be refused");

    let mut b = good.clone();
    b.header.bits = bitcoin::CompactTarget::from_consensus(0x207f_fffe);
    assert_eq!(reject(b), "bad-diffbits");

    let mut b = good.clone();
    while b.header.validate_pow(consensus::regtest_target()).is_ok() {
        b.header.nonce = b.header.nonce.wrapping_add(1);
    }
    assert_eq!(reject(b), "high-hash");

    let mut b = good.clone();
    b.header.merkle_root = bitcoin::TxMerkleNode::all_zeros();
    consensus::solve(&mut b.header);
    assert_eq!(reject(b), "bad-txnmrklroot");

    let mut b = good.clone();
    let last = b.txdata[0].output.len() - 1;
    let mut spk = b.txdata[0].output[last].script_pubkey.to_bytes();
    spk[10] ^= 1;
    b.txdata[0].output[last].script_pubkey = ScriptBuf::from_bytes(spk);
    remerkle(&mut b);
    assert_eq!(reject(b), "bad-witness-merkle-match");

    let mut b = good.clone();
    b.txdata[0].output.pop();
    remerkle(&mut b);
    assert_eq!(reject(b), "unexpected-witness");

    let mut b = good.clone();
    let mut sig = bip34_prefix(height + 1);
    sig.extend_from_slice(&[0x01, 0x00]);
    b.txdata[0].input[0].script_sig = ScriptBuf::from_bytes(sig);
    remerkle(&mut b);
    assert_eq!(reject(b), "bad-cb-height");

    let mut b = good.clone();
    b.txdata[0].output[0].value += Amount::from_sat(1);
    remerkle(&mut b);
    assert_eq!(reject(b), "bad-cb-amount");

    let median = mtp(&devnet);
    let mut b = good.clone();
    b.header.time = median;
    consensus::solve(&mut b.header);
    assert_eq!(reject(b), "time-too-old");

    let mut b = good.clone();
    b.header.time = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 3 * 3600,
    )
    .expect("time");
    consensus::solve(&mut b.header);
    assert_eq!(reject(b), "time-too-new");

    // Nothing above changed the chain; the untampered block (time just past the median) is
    // accepted and confirms the transaction.
    assert_eq!(devnet.tip().height, height - 1);
    let mut b = good.clone();
    b.header.time = median + 1;
    consensus::solve(&mut b.header);
    let hash = b.block_hash();
    devnet.submit_block(b.clone()).expect("valid block");
    assert_eq!(devnet.tip().hash, hash);
    assert_eq!(devnet.submit_block(b).expect_err("again"), "duplicate");
    assert!(matches!(devnet.tx(&txid), Some((_, TxStatus::Confirmed(r))) if r.hash == hash));
    assert!(devnet.mempool_txids().is_empty());
}

#[test]
fn coinbase_needs_100_confirmations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devnet = Devnet::open(dir.path()).expect("open");
    let key = Key::new(3);
    let first = devnet.mine_to(1, &key.script).expect("mine")[0];
    devnet.mine(98).expect("mine");
    assert_eq!(devnet.tip().height, 99);
    let cb = devnet.block(&first).expect("block").txdata[0].clone();
    let coin = (OutPoint::new(cb.compute_txid(), 0), cb.output[0].value);
    let spend = key.pay(coin, &key.script, 1_000);

    // The next block is 100: the coinbase of block 1 has only 99 confirmations.
    let r = devnet.test_accept(&spend).expect_err("immature");
    assert_eq!(
        (r.code, r.reason.as_str()),
        (-26, "bad-txns-premature-spend-of-coinbase")
    );
    let block = devnet
        .block_template(&key.script, vec![spend.clone()], false)
        .expect("template");
    assert_eq!(
        devnet.submit_block(block).expect_err("immature in block"),
        "bad-txns-premature-spend-of-coinbase"
    );
    // The faucet has nothing mature either.
    assert!(matches!(
        devnet.send(&key.address, Amount::from_sat(10_000)),
        Err(DevnetError::InsufficientFunds { .. })
    ));

    devnet.mine(1).expect("mine");
    let txid = devnet.submit_tx(&spend).expect("mature now");
    devnet.mine(1).expect("mine");
    assert!(matches!(devnet.tx(&txid), Some((_, TxStatus::Confirmed(r))) if r.height == 101));
}

#[test]
fn bad_signature_is_refused_by_the_consensus_check() {
    let (_dir, devnet) = devnet();
    let key = Key::new(4);
    let other = Key::new(5);
    let coin = fund(&devnet, &key, Amount::from_sat(500_000));

    let mut tx = key.pay(coin, &other.script, 1_000);
    let mut items: Vec<Vec<u8>> = tx.input[0].witness.iter().map(|w| w.to_vec()).collect();
    items[0][10] ^= 0x01;
    tx.input[0].witness = bitcoin::Witness::from_slice(&items);
    let r = devnet.test_accept(&tx).expect_err("bad signature");
    assert_eq!(r.code, -26);
    assert!(
        r.reason.starts_with("mandatory-script-verify-flag-failed"),
        "{}",
        r.reason
    );

    // Signed by the wrong key.
    let wrong = other.pay(coin, &other.script, 1_000);
    let r = devnet.submit_tx(&wrong).expect_err("wrong key");
    assert!(
        r.reason.starts_with("mandatory-script-verify-flag-failed"),
        "{}",
        r.reason
    );

    // And in a block.
    let block = devnet
        .block_template(&key.script, vec![tx], false)
        .expect("template");
    let reason = devnet.submit_block(block).expect_err("bad block");
    assert!(
        reason.contains("mandatory-script-verify-flag-failed"),
        "{reason}"
    );

    // The correctly signed spend goes through.
    let good = key.pay(coin, &other.script, 1_000);
    devnet.submit_tx(&good).expect("valid");
}

#[test]
fn mempool_replace_by_fee() {
    let (_dir, devnet) = devnet();
    let key = Key::new(8);
    let a = Key::new(9);
    let b = Key::new(10);
    let coin = fund(&devnet, &key, Amount::from_sat(1_000_000));

    let first = key.pay(coin, &a.script, 1_000);
    let first_id = devnet.submit_tx(&first).expect("first");
    // A child of the first, which the replacement must evict too.
    let child = a.pay(
        (OutPoint::new(first_id, 0), first.output[0].value),
        &a.script,
        500,
    );
    let child_id = devnet.submit_tx(&child).expect("child");
    assert_eq!(devnet.mempool_txids(), vec![first_id, child_id]);

    // A double spend that pays the same fee is refused.
    let same_fee = key.pay(coin, &b.script, 1_000);
    let r = devnet.submit_tx(&same_fee).expect_err("no higher fee");
    assert_eq!(r.code, -26);
    assert!(r.reason.starts_with("insufficient fee"), "{}", r.reason);

    // Higher feerate than the first but less than first + child's fees: refused (rule 3).
    let r = devnet
        .submit_tx(&key.pay(coin, &b.script, 1_200))
        .expect_err("less than the fees it evicts");
    assert!(
        r.reason.contains("less fees than conflicting txs"),
        "{}",
        r.reason
    );

    // Enough to pay for both plus its own relay: accepted, both evicted.
    let replacement = key.pay(coin, &b.script, 5_000);
    let rid = devnet.submit_tx(&replacement).expect("replacement");
    assert_eq!(devnet.mempool_txids(), vec![rid]);
    assert!(devnet.tx(&first_id).is_none());
    assert!(devnet.tx(&child_id).is_none());

    // Going back to a lower fee is refused.
    let r = devnet.submit_tx(&first).expect_err("lower fee");
    assert!(r.reason.starts_with("insufficient fee"), "{}", r.reason);

    // Mining confirms the replacement; the original is now a spend of a spent output.
    devnet.mine(1).expect("mine");
    assert!(matches!(devnet.tx(&rid), Some((_, TxStatus::Confirmed(_)))));
    let r = devnet
        .submit_tx(&first)
        .expect_err("conflicts with the chain");
    assert_eq!(
        (r.code, r.reason.as_str()),
        (-25, "bad-txns-inputs-missingorspent")
    );
    let r = devnet
        .submit_tx(&replacement)
        .expect_err("already confirmed");
    assert_eq!(r.code, -27);
}

#[test]
fn reorg_returns_transactions_to_the_mempool() {
    let (_dir, devnet) = devnet();
    let key = Key::new(11);
    let before = devnet.tip();
    let txid = devnet
        .send(&key.address, Amount::from_sat(2_000_000))
        .expect("send");
    let mined = devnet.mine(1).expect("mine")[0];
    let height = before.height + 1;
    assert!(matches!(devnet.tx(&txid), Some((_, TxStatus::Confirmed(r))) if r.height == height));
    assert_eq!(devnet.utxos_for(&key.script).len(), 1);
    let (tx, _) = devnet.tx(&txid).expect("tx");
    let spent = tx.input[0].previous_output;
    assert!(!devnet.utxo_set().iter().any(|(op, _)| *op == spent));

    let report = devnet.reorg(1).expect("reorg");
    assert_eq!(report.disconnected, vec![mined]);
    assert_eq!(report.returned_to_mempool, vec![txid]);
    assert_eq!(report.new_blocks.len(), 2);
    assert_eq!(devnet.tip().height, height + 1);
    assert_ne!(devnet.block_hash(height), Some(mined));
    // The payment is unconfirmed again, its output gone from the UTXO set, and the coin it
    // spends is unspent on chain again.
    assert!(matches!(devnet.tx(&txid), Some((_, TxStatus::Mempool))));
    assert!(devnet.utxos_for(&key.script).is_empty());
    assert!(devnet.utxo_set().iter().any(|(op, _)| *op == spent));
    assert_eq!(devnet.balance(&key.script), (Amount::ZERO, 2_000_000));
    // The stale block is still known, off the active chain.
    assert!(devnet.block(&mined).is_some());

    devnet.mine(1).expect("mine");
    assert!(matches!(
        devnet.tx(&txid),
        Some((_, TxStatus::Confirmed(_)))
    ));
    assert_eq!(
        devnet.balance(&key.script),
        (Amount::from_sat(2_000_000), 0)
    );
}

#[test]
fn invalidate_block_disconnects_and_mining_continues_from_the_parent() {
    let (_dir, devnet) = devnet();
    let key = Key::new(12);
    let txid = devnet
        .send(&key.address, Amount::from_sat(300_000))
        .expect("send");
    let hashes = devnet.mine(3).expect("mine");
    let report = devnet.invalidate_block(&hashes[0]).expect("invalidate");
    assert_eq!(report.disconnected.len(), 3);
    assert_eq!(devnet.tip().height, 101);
    assert!(matches!(devnet.tx(&txid), Some((_, TxStatus::Mempool))));
    let block = devnet.block(&hashes[0]).expect("stale block kept");
    assert_eq!(
        devnet.submit_block(block).expect_err("invalid"),
        "duplicate-invalid"
    );
    let again = devnet.mine(1).expect("mine")[0];
    assert_ne!(again, hashes[0]);
    assert!(matches!(devnet.tx(&txid), Some((_, TxStatus::Confirmed(r))) if r.hash == again));
}

#[test]
fn chain_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Key::new(13);
    let (tip, utxos, faucet) = {
        let devnet = Devnet::open_with(dir.path(), DevnetOptions { premine: 105 }).expect("open");
        let coin = fund(&devnet, &key, Amount::from_sat(700_000));
        devnet
            .submit_tx(&key.pay(coin, &key.script, 2_000))
            .expect("spend");
        devnet.mine(2).expect("mine");
        devnet.reorg(2).expect("reorg");
        devnet.mine(1).expect("mine");
        // A second process (or handle) cannot open the same directory meanwhile.
        assert!(matches!(
            Devnet::open(dir.path()),
            Err(DevnetError::Locked(_))
        ));
        (devnet.tip(), devnet.utxo_set(), devnet.faucet_address())
    };
    let devnet = Devnet::open(dir.path()).expect("reopen");
    assert_eq!(devnet.tip(), tip);
    assert_eq!(devnet.utxo_set(), utxos);
    assert_eq!(devnet.faucet_address(), faucet);
    assert!(devnet.mempool_txids().is_empty());
    drop(devnet);

    // A torn final record (a crash mid-append) is cut off; the chain is intact.
    let file = dir.path().join("blocks.dat");
    let mut data = std::fs::read(&file).expect("read");
    let len = data.len();
    data.extend_from_slice(&[1, 0x10, 0, 0, 0, 0xde, 0xad]);
    std::fs::write(&file, &data).expect("write");
    let devnet = Devnet::open(dir.path()).expect("reopen after torn write");
    assert_eq!(devnet.tip(), tip);
    assert_eq!(std::fs::metadata(&file).expect("meta").len(), len as u64);
    drop(devnet);

    // Damage in the middle is an error, not a silently shorter chain.
    let mut data = std::fs::read(&file).expect("read");
    data[200] ^= 0xff;
    std::fs::write(&file, &data).expect("write");
    assert!(matches!(
        Devnet::open(dir.path()),
        Err(DevnetError::Corrupt(_))
    ));
}

#[test]
fn faucet_key_file_is_private() {
    let (dir, _devnet) = devnet();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("faucet.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn interval_miner_mines_until_stopped() {
    let (_dir, devnet) = devnet();
    let start = devnet.tip().height;
    let miner = devnet.start_miner(Duration::from_millis(10));
    assert!(wait_for(Duration::from_secs(20), || devnet.tip().height >= start + 2));
    miner.stop();
    let stopped = devnet.tip().height;
    // After stop returns the thread has ended: nothing mines any more.
    devnet.mine(1).expect("mine");
    assert_eq!(devnet.tip().height, stopped + 1);
}

#[test]
fn chain_source_on_the_devnet() {
    let (_dir, devnet) = devnet();
    let key = Key::new(14);
    let source: &dyn ChainSource = &devnet;
    let tip = source.tip().expect("tip");
    assert_eq!(tip.height, 101);
    assert_eq!(source.block_hash(101).expect("hash"), Some(tip.hash));
    assert_eq!(source.block_hash(102).expect("hash"), None);
    let block = source.block(&tip.hash).expect("block").expect("known");
    assert_eq!(block.block_hash(), tip.hash);

    let coin = fund(&devnet, &key, Amount::from_sat(100_000));
    let parent = key.pay(coin, &key.script, 1_000);
    let parent_id = source.broadcast(&parent).expect("broadcast");
    let child = key.pay(
        (OutPoint::new(parent_id, 0), parent.output[0].value),
        &key.script,
        1_000,
    );
    source.broadcast(&child).expect("child");
    // Broadcasting again is fine.
    assert_eq!(
        source.broadcast(&child).expect("again"),
        child.compute_txid()
    );
    let mempool = source.mempool_txs().expect("mempool");
    assert_eq!(mempool, vec![parent.clone(), child.clone()]);
    assert_eq!(
        source.get_tx(&parent_id).expect("get"),
        Some((parent, TxStatus::Mempool))
    );
    let err = source
        .broadcast(&key.pay(coin, &Key::new(15).script, 1_000))
        .expect_err("double spend without a higher fee");
    assert!(matches!(
        err,
        kura_chain::ChainError::Rejected { code: -26, .. }
    ));
}

#[test]
fn lock_times_are_enforced() {
    use bitcoin::{absolute::LockTime, Sequence};
    let (_dir, devnet) = devnet();
    let key = Key::new(16);
    let coin = fund(&devnet, &key, Amount::from_sat(300_000));
    let out = |v: u64| {
        vec![TxOut {
            value: Amount::from_sat(v),
            script_pubkey: key.script.clone(),
        }]
    };
    let tip = devnet.tip().height;

    // Absolute: not before the height it names.
    let lock = LockTime::from_height(tip + 3).expect("height");
    let tx = key.spend_locked(
        &[coin],
        out(299_000),
        Sequence::ENABLE_LOCKTIME_NO_RBF,
        lock,
    );
    let r = devnet.test_accept(&tx).expect_err("locked");
    assert_eq!(r.reason, "non-final");
    let block = devnet
        .block_template(&key.script, vec![tx.clone()], false)
        .expect("template");
    assert_eq!(
        devnet.submit_block(block).expect_err("locked"),
        "bad-txns-nonfinal"
    );
    // With every sequence final the lock time is ignored.
    let final_tx = key.spend_locked(&[coin], out(298_000), Sequence::MAX, lock);
    devnet.test_accept(&final_tx).expect("final");

    // Relative (BIP68): 5 blocks after the coin confirmed (it has 1 confirmation).
    let rel = key.spend_locked(
        &[coin],
        out(299_000),
        Sequence::from_height(5),
        LockTime::ZERO,
    );
    let r = devnet.test_accept(&rel).expect_err("relative lock");
    assert_eq!(r.reason, "non-BIP68-final");
    devnet.mine(2).expect("mine");
    // The next block is tip + 3, the height the lock names: still not final (the lock
    // time is the last height at which it is invalid).
    assert_eq!(
        devnet.test_accept(&tx).expect_err("locked").reason,
        "non-final"
    );
    devnet.mine(1).expect("mine");
    devnet.test_accept(&tx).expect("absolute lock met");
    // The coin confirmed at `tip`; a 5-block relative lock needs a block at tip + 5.
    assert_eq!(
        devnet.test_accept(&rel).expect_err("relative").reason,
        "non-BIP68-final"
    );
    devnet.mine(1).expect("mine");
    devnet.submit_tx(&rel).expect("relative lock met");
}

#[test]
fn spends_the_devnet_cannot_verify_are_refused() {
    let (_dir, devnet) = devnet();
    // An output to a taproot key: can be created, but the devnet refuses to spend it
    // rather than accept a spend it cannot check.
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let kp = bitcoin::key::Keypair::from_seckey_slice(&secp, &[9u8; 32]).expect("key");
    let (xonly, _) = kp.x_only_public_key();
    let taproot = bitcoin::Address::p2tr(&secp, xonly, None, bitcoin::Network::Regtest);
    let txid = devnet
        .send(&taproot, Amount::from_sat(50_000))
        .expect("send to taproot");
    devnet.mine(1).expect("mine");
    let (tx, _) = devnet.tx(&txid).expect("tx");
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == taproot.script_pubkey())
        .expect("taproot output");
    let mut spend = Key::new(17).pay(
        (OutPoint::new(txid, vout as u32), Amount::from_sat(50_000)),
        &Key::new(17).script,
        1_000,
    );
    spend.input[0].witness = bitcoin::Witness::from_slice(&[[1u8; 64]]);
    let r = devnet.test_accept(&spend).expect_err("unverifiable");
    assert!(
        r.reason.starts_with("devnet-unverifiable-spend"),
        "{}",
        r.reason
    );
}
