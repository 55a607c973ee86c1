//! Custody drills against the real node with the built-in devnet as its chain, read
//! through the devnet's JSON-RPC (the production code path): a deposit is pending in the
//! mempool, credited at the third confirmation exactly once, reversed when a
//! reorganisation removes it and credited again when it confirms again; a thief spending
//! a deposit coin with the deposit key outside kura halts withdrawals within one block,
//! the halt survives a restart, and reconciliation is journaled every block; a deposit
//! double-spent by RBF before it confirms is never credited; a withdrawal is batched,
//! signed, bumped by RBF, rebroadcast after a restart and settled exactly once.

use crate::node_common;
use kura::server::custody::{ChainChoice, CustodyConfig, DEFAULT_WITHDRAWAL_POLICY};
use kura::server::payout::PayoutConfig;
use kura::server::{Exchange, ServerConfig};
use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv};
use kura_chain::bitcoin::secp256k1::{Message, Secp256k1};
use kura_chain::bitcoin::sighash::{EcdsaSighashType, SighashCache};
use kura_chain::bitcoin::{
    absolute::LockTime, transaction::Version, Address, Amount, CompressedPublicKey, Network,
    OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use kura_engine::{codec, BatchState, Command, WalletRole, WithdrawalPolicy};
use kura_units::{AssetId, UserId};
use node_common::{query, submit, wait_for};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

const BTC: AssetId = AssetId(0);

pub(crate) fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.custody = CustodyConfig {
        chain: ChainChoice::Devnet {
            block_interval: None,
        },
        confirmations: 3,
        dust_sat: 546,
        poll: Duration::from_millis(20),
        start_height: 0,
        payout: PayoutConfig {
            fee_rate_sat_vb: 2,
            batch_interval: Duration::ZERO,
            band: None,
        },
        withdrawal_policy: WithdrawalPolicy {
            address_delay_ms: 0,
            ..DEFAULT_WITHDRAWAL_POLICY
        },
        ..CustodyConfig::default()
    };
    c
}

/// The custody task has followed the devnet up to its tip.
pub(crate) fn caught_up(ex: &Exchange) -> bool {
    let Some(c) = ex.custody() else { return false };
    let tip = c.devnet().map(|d| d.tip().height);
    let v = c.view();
    v.synced && v.watcher.tip().map(|(h, _)| h) == tip
}

pub(crate) fn sync(ex: &Exchange) {
    wait_for(ex, "the custody task to reach the devnet tip", caught_up);
}

/// The reconciliation of the devnet's tip block, once recorded (it is a command of its
/// own, which may follow the block's credits).
fn reconciled_at_tip(ex: &Exchange) -> kura_engine::custody::Reconciliation {
    let tip = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .tip()
        .height;
    wait_for(ex, "the tip's reconciliation", |ex| {
        query(ex, |e| e.last_reconciliation(BTC)).is_some_and(|rec| rec.height == tip)
    });
    query(ex, |e| e.last_reconciliation(BTC)).expect("reconciled")
}

pub(crate) fn mine(ex: &Exchange, n: u32) {
    ex.custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .mine(n)
        .expect("mine");
    sync(ex);
}

/// A customer with a deposit address: (user, address, derivation index).
pub(crate) fn customer(ex: &Exchange, name: &str) -> (UserId, Address, u32) {
    let events = submit(
        ex,
        Command::RegisterUser {
            name: name.to_owned(),
        },
    );
    let user = events
        .iter()
        .find_map(|e| match e.kind {
            kura_engine::EventKind::UserCreated { user } => Some(user),
            _ => None,
        })
        .expect("created");
    submit(ex, Command::AssignDepositAddress { user, asset: BTC });
    let (descriptor, index) = query(ex, move |e| {
        let (wallet, index) = e.deposit_address(user, BTC).expect("assigned");
        (e.wallets()[wallet as usize].descriptor.clone(), index)
    });
    let (_, address) = kura_custody::derive(&descriptor, index, Network::Regtest).expect("derive");
    (user, address, index)
}

pub(crate) fn available(ex: &Exchange, user: UserId) -> u64 {
    query(ex, move |e| {
        e.ledger()
            .balance(user, BTC)
            .map(|b| b.available.get())
            .unwrap_or(0)
    })
}

#[test]
fn deposit_is_credited_at_three_confirmations_reversed_by_a_reorg_and_credited_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    sync(&ex);
    // The deposit and hot wallets are registered once, watch-only.
    let wallets = query(&ex, |e| e.wallets().to_vec());
    assert_eq!(wallets.len(), 2);
    assert_eq!(wallets[0].role, WalletRole::Deposit);
    assert_eq!(wallets[1].role, WalletRole::Hot);
    for w in &wallets {
        assert!(w.descriptor.starts_with("wpkh(["), "{}", w.descriptor);
        assert!(!w.descriptor.contains("prv"));
    }

    let (alice, address, _) = customer(&ex, "alice");
    let devnet = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone();
    let txid = devnet
        .send(&address, Amount::from_sat(1_500_000))
        .expect("send");
    let reference = format!("{txid}:");
    // Pending at once, from the mempool; never credited from it.
    wait_for(&ex, "the pending deposit", |ex| {
        ex.custody()
            .is_some_and(|c| c.view().watcher.pending().any(|d| d.user == alice))
    });
    assert_eq!(available(&ex, alice), 0);
    mine(&ex, 1);
    assert_eq!(available(&ex, alice), 0, "one confirmation is not enough");
    mine(&ex, 1);
    assert_eq!(available(&ex, alice), 0, "two confirmations are not enough");
    mine(&ex, 1);
    wait_for(&ex, "the credit", |ex| available(ex, alice) == 1_500_000);
    let credited: Vec<String> = query(&ex, |e| {
        e.deposit_records()
            .filter(|(_, d)| !d.reversed)
            .map(|(r, _)| r.to_owned())
            .collect()
    });
    let ours: Vec<&String> = credited
        .iter()
        .filter(|r| r.starts_with(&reference))
        .collect();
    assert_eq!(ours.len(), 1, "credited exactly once: {credited:?}");
    // Every block is reconciled (its reconciliation is a command of its own, which may
    // follow the credit's); holdings cover what alice is owed.
    let rec = reconciled_at_tip(&ex);
    assert!(u128::from(rec.holdings.get()) >= rec.liabilities);
    mine(&ex, 2);
    assert_eq!(available(&ex, alice), 1_500_000, "never credited twice");

    // A reorganisation five deep takes the deposit's block away: the credit is reversed.
    devnet.reorg(5).expect("reorg");
    sync(&ex);
    wait_for(&ex, "the reversal", |ex| available(ex, alice) == 0);
    let reversed = query(&ex, move |e| {
        e.deposit_records()
            .any(|(r, d)| r.starts_with(&format!("{txid}:")) && d.reversed)
    });
    assert!(reversed);
    assert_eq!(query(&ex, move |e| e.deficit(alice, BTC).get()), 0);
    // Back in the mempool, it confirms again and is credited again after three blocks.
    mine(&ex, 3);
    wait_for(&ex, "the second credit", |ex| {
        available(ex, alice) == 1_500_000
    });
    drop(devnet);
    ex.stop().expect("stop");

    // A restart rebuilds the watcher from the chain and changes nothing on the books.
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("reopen");
    sync(&ex);
    mine(&ex, 1);
    assert_eq!(available(&ex, alice), 1_500_000);
    assert_eq!(query(&ex, |e| e.wallets().len()), 2, "registered once");
    ex.stop().expect("stop");
}

/// The private key of deposit address `index`, from the seed in the signer directory
/// (what a thief who stole the machine would have).
fn stolen_key(dir: &Path, index: u32) -> kura_chain::bitcoin::PrivateKey {
    let text = std::fs::read_to_string(dir.join("signer").join("deposit.seed")).expect("seed");
    let seed = hex::decode(text.trim()).expect("hex");
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(Network::Regtest, &seed).expect("master");
    let path = DerivationPath::from_str(&format!("m/84'/1'/0'/0/{index}")).expect("path");
    master.derive_priv(&secp, &path).expect("derive").to_priv()
}

/// Spend `outpoint` (value `value`, paid to `key`'s P2WPKH) to `to`, signed with `key`.
fn steal(
    key: &kura_chain::bitcoin::PrivateKey,
    outpoint: OutPoint,
    value: u64,
    to: ScriptBuf,
) -> Transaction {
    spend(key, outpoint, value, to, 10_000)
}

/// [`steal`] with the fee chosen.
fn spend(
    key: &kura_chain::bitcoin::PrivateKey,
    outpoint: OutPoint,
    value: u64,
    to: ScriptBuf,
    fee: u64,
) -> Transaction {
    let secp = Secp256k1::new();
    let public = CompressedPublicKey::from_private_key(&secp, key).expect("compressed");
    let spent_script = ScriptBuf::new_p2wpkh(&public.wpubkey_hash());
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(value - fee),
            script_pubkey: to,
        }],
    };
    let sighash = SighashCache::new(&tx)
        .p2wpkh_signature_hash(
            0,
            &spent_script,
            Amount::from_sat(value),
            EcdsaSighashType::All,
        )
        .expect("sighash");
    let msg = Message::from(sighash);
    let sig = kura_chain::bitcoin::ecdsa::Signature {
        signature: secp.sign_ecdsa(&msg, &key.inner),
        sighash_type: EcdsaSighashType::All,
    };
    tx.input[0].witness = Witness::p2wpkh(&sig, &public.0);
    tx
}

#[test]
fn a_thief_spending_a_deposit_coin_halts_withdrawals_within_one_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    sync(&ex);
    let (bob, address, index) = customer(&ex, "bob");
    let devnet = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone();
    let txid = devnet
        .send(&address, Amount::from_sat(2_000_000))
        .expect("send");
    mine(&ex, 3);
    wait_for(&ex, "the credit", |ex| available(ex, bob) == 2_000_000);
    // bob can withdraw (the request is only a hold; no withdrawal flow signs yet).
    submit(
        &ex,
        Command::RequestWithdrawal {
            user: bob,
            asset: BTC,
            amount: kura_units::Amount::new(1_000),
            id: "w-before".into(),
        },
    );
    let vout = devnet
        .tx(&txid)
        .expect("tx")
        .0
        .output
        .iter()
        .position(|o| o.script_pubkey == address.script_pubkey())
        .expect("output") as u32;
    let key = stolen_key(dir.path(), index);
    let theft = steal(
        &key,
        OutPoint::new(txid, vout),
        2_000_000,
        devnet.faucet_address().script_pubkey(),
    );
    let theft_id = devnet
        .submit_tx(&theft)
        .expect("the devnet accepts the thief's tx");
    // In the mempool only: nothing yet.
    sync(&ex);
    assert_eq!(
        query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)),
        None
    );
    mine(&ex, 1);
    wait_for(&ex, "the halt", |ex| {
        query(ex, |e| e.withdrawals_halted(BTC).is_some())
    });
    let reason = query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)).expect("halted");
    assert!(reason.contains(&format!("{txid}:{vout}")), "{reason}");
    assert!(reason.contains(&theft_id.to_string()), "{reason}");
    let refused = ex
        .backend()
        .handle()
        .submit_wait(kura::node::internal(Command::RequestWithdrawal {
            user: bob,
            asset: BTC,
            amount: kura_units::Amount::new(1_000),
            id: "w-after".into(),
        }))
        .expect("submitted")
        .result;
    assert_eq!(refused, Err(kura_engine::Reject::WithdrawalsHalted));
    // The reconciliation of that block shows the shortfall.
    let rec = query(&ex, |e| e.last_reconciliation(BTC)).expect("reconciled");
    assert!(u128::from(rec.holdings.get()) < rec.liabilities, "{rec:?}");
    drop(devnet);
    ex.stop().expect("stop");

    // It stays halted after a restart until an operator resumes; once resumed, a restart
    // does not judge the same spend again...
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("reopen");
    sync(&ex);
    assert!(query(&ex, |e| e.withdrawals_halted(BTC).is_some()));
    submit(&ex, Command::ResumeWithdrawals { asset: BTC });
    ex.stop().expect("stop");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("reopen");
    sync(&ex);
    assert_eq!(
        query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)),
        None
    );
    // ... but the next block's reconciliation still finds the coins missing and halts.
    mine(&ex, 1);
    wait_for(&ex, "the shortfall halt", |ex| {
        query(ex, |e| e.withdrawals_halted(BTC).is_some())
    });
    let reason = query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)).expect("halted");
    assert!(reason.starts_with("reconciliation at height"), "{reason}");
    ex.stop().expect("stop");
}

/// A fresh regtest P2WPKH address nobody at the exchange controls.
pub(crate) fn outside_address(seed: u8) -> Address {
    let secp = Secp256k1::new();
    let key = kura_chain::bitcoin::secp256k1::SecretKey::from_slice(&[seed; 32]).expect("key");
    let public = CompressedPublicKey(key.public_key(&secp));
    Address::p2wpkh(&public, Network::Regtest)
}

/// What `address` received on the devnet, output by output.
pub(crate) fn received(ex: &Exchange, address: &Address) -> Vec<u64> {
    let devnet = ex.custody().and_then(|c| c.devnet()).expect("devnet");
    devnet
        .utxos_for(&address.script_pubkey())
        .iter()
        .map(|(_, out, _, _)| out.value.to_sat())
        .collect()
}

/// The txid batch 0 was built with, as the books recorded it.
fn first_txid_of_batch_0(ex: &Exchange) -> kura_chain::bitcoin::Txid {
    let txid = query(ex, |e| {
        e.withdrawal_batch(0).expect("batch").versions[0].txid
    });
    kura_chain::bitcoin::Txid::from_raw_hash(kura_chain::bitcoin::hashes::Hash::from_byte_array(
        txid,
    ))
}

/// A customer credited 1 BTC on the devnet who asks for 0.3 BTC to `to` under `id`;
/// returns the customer and the devnet handle.
pub(crate) fn credited_customer_withdrawing(
    ex: &Exchange,
    id: &str,
    to: &Address,
) -> (UserId, kura_chain::Devnet) {
    let (alice, address, _) = customer(ex, "alice");
    let devnet = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone();
    devnet
        .send(&address, Amount::from_sat(100_000_000))
        .expect("send");
    mine(ex, 3);
    wait_for(ex, "the credit", |ex| available(ex, alice) == 100_000_000);
    submit(
        ex,
        Command::RequestChainWithdrawal {
            user: alice,
            asset: BTC,
            amount: kura_units::Amount::new(30_000_000),
            id: id.into(),
            address: to.to_string(),
        },
    );
    (alice, devnet)
}

#[test]
fn a_withdrawal_is_batched_signed_bumped_and_settled_once_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    sync(&ex);
    let to = outside_address(7);
    let (alice, devnet) = credited_customer_withdrawing(&ex, "w-1", &to);
    assert_eq!(available(&ex, alice), 70_000_000, "held at request time");
    // The batcher builds, journals, signs and broadcasts it.
    wait_for(&ex, "the batch in the mempool", |ex| {
        let open = query(ex, |e| {
            e.withdrawal_batch(0)
                .map(|b| (b.state, b.versions.first().map(|v| v.txid)))
        });
        matches!(open, Some((BatchState::Open, Some(_)))) && !devnet.mempool_txids().is_empty()
    });
    let original = first_txid_of_batch_0(&ex);
    assert_eq!(devnet.mempool_txids(), vec![original]);

    // Our own fee bump, asked by an operator through the admin socket's handler,
    // replaces it in the mempool: same coins, new txid.
    let custody = ex.custody().expect("custody");
    let chain = kura::server::admin::ChainContext::new(
        &config(dir.path()).custody.chain,
        Some(custody.view_handle()),
    )
    .with_control(Some(custody.control()));
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(kura::server::admin::handle_with_chain(
            ex.backend(),
            &chain,
            kura::server::admin::Envelope {
                operator: "ops-1".into(),
                request: kura::server::admin::Request::BatchBump {
                    batch: 0,
                    fee_rate_sat_vb: 25,
                    reason: "stuck below the market fee".into(),
                },
            },
        ))
        .expect("bump");
    let bumped: kura_chain::bitcoin::Txid = answer["txid"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("txid");
    assert_ne!(bumped, original);
    // The journal says who bumped it and why.
    let bump_origin = kura_journal::read_records(dir.path(), 1)
        .expect("journal")
        .filter_map(|r| codec::decode(&r.expect("record").payload).ok())
        .find(|e| matches!(e.command, Command::BumpWithdrawalBatch { .. }))
        .map(|e| e.origin)
        .expect("the bump is journaled");
    assert_eq!(
        bump_origin,
        codec::Origin::Admin {
            operator: "ops-1".into(),
            reason: "stuck below the market fee".into()
        }
    );
    assert_eq!(
        devnet.mempool_txids(),
        vec![bumped],
        "the original is replaced"
    );
    let versions = query(&ex, |e| {
        e.withdrawal_batch(0).expect("batch").versions.len()
    });
    assert_eq!(versions, 2);

    // The node stops before anything else is recorded (as after a crash); the devnet
    // restarts with an empty mempool. On restart the batch is still open in the books
    // and its latest signed version is broadcast again from the outbox.
    drop(devnet);
    ex.stop().expect("stop");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("reopen");
    sync(&ex);
    let devnet = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone();
    wait_for(&ex, "the rebroadcast", |_| {
        devnet.mempool_txids() == vec![bumped]
    });
    mine(&ex, 1);
    wait_for(&ex, "the settlement", |ex| {
        query(ex, |e| e.withdrawal("w-1").map(|w| w.state))
            == Some(kura_engine::WithdrawalState::Settled)
    });
    // Paid exactly once, by the bump, and the amount left the books.
    assert_eq!(received(&ex, &to), vec![30_000_000 - 10_000]);
    let batch = query(&ex, |e| e.withdrawal_batch(0).expect("batch").state);
    assert!(
        matches!(batch, BatchState::Confirmed { txid, .. } if txid == kura_chain::bitcoin::hashes::Hash::to_byte_array(bumped)),
        "{batch:?}"
    );
    assert_eq!(available(&ex, alice), 70_000_000);
    let held = query(&ex, move |e| {
        e.ledger().balance(alice, BTC).map(|b| b.held.get())
    });
    assert_eq!(held, Ok(0));
    // No halt: every spend of our coins was explained; the chain still covers the books.
    mine(&ex, 2);
    assert_eq!(
        query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)),
        None
    );
    let rec = query(&ex, |e| e.last_reconciliation(BTC)).expect("reconciled");
    assert!(u128::from(rec.holdings.get()) >= rec.liabilities, "{rec:?}");
    assert_eq!(
        received(&ex, &to),
        vec![30_000_000 - 10_000],
        "never paid twice"
    );
    drop(devnet);
    ex.stop().expect("stop");
}

/// The node stops after journaling a batch but before keeping its signed transaction
/// (simulated by removing it from the outbox while the devnet's mempool is lost): on
/// restart the batch is rebuilt from the books, matches the recorded txid, is signed and
/// broadcast; it can still be bumped by the restarted process, and it settles once.
#[test]
fn a_batch_journaled_but_never_kept_is_rebuilt_from_the_books_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    sync(&ex);
    let to = outside_address(9);
    let (_, devnet) = credited_customer_withdrawing(&ex, "w-9", &to);
    wait_for(&ex, "the batch in the mempool", |ex| {
        query(ex, |e| e.withdrawal_batch(0).map(|b| b.state)) == Some(BatchState::Open)
            && !devnet.mempool_txids().is_empty()
    });
    let recorded = first_txid_of_batch_0(&ex);
    drop(devnet);
    ex.stop().expect("stop");
    let kept = dir.path().join("custody").join("outbox").join("0.tx");
    std::fs::remove_file(&kept).expect("the signed transaction was kept in the outbox");

    let ex = Exchange::open(config(dir.path()), |_| {}).expect("reopen");
    sync(&ex);
    let devnet = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone();
    wait_for(&ex, "the rebuilt batch in the mempool", |_| {
        devnet.mempool_txids() == vec![recorded]
    });
    assert!(
        kept.exists(),
        "the re-signed transaction is kept before it is sent"
    );
    // The restarted process can bump a batch it did not build.
    let bumped = ex.custody().expect("custody").bump(0, 25).expect("bump");
    assert_eq!(devnet.mempool_txids(), vec![bumped]);
    mine(&ex, 1);
    wait_for(&ex, "the settlement", |ex| {
        query(ex, |e| e.withdrawal("w-9").map(|w| w.state))
            == Some(kura_engine::WithdrawalState::Settled)
    });
    assert_eq!(received(&ex, &to), vec![30_000_000 - 10_000], "paid once");
    assert_eq!(
        query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)),
        None
    );
    drop(devnet);
    ex.stop().expect("stop");
}

#[test]
fn a_deposit_double_spent_by_rbf_before_it_confirms_is_never_credited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    sync(&ex);
    let (carol, address, _) = customer(&ex, "carol");
    let devnet = ex
        .custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .clone();
    // Carol's own coin, outside the exchange.
    let secp = Secp256k1::new();
    let key = kura_chain::bitcoin::PrivateKey::new(
        kura_chain::bitcoin::secp256k1::SecretKey::from_slice(&[9; 32]).expect("key"),
        Network::Regtest,
    );
    let own = Address::p2wpkh(
        &CompressedPublicKey::from_private_key(&secp, &key).expect("compressed"),
        Network::Regtest,
    );
    let funding = devnet
        .send(&own, Amount::from_sat(2_000_000))
        .expect("send");
    mine(&ex, 1);
    let (tx, _) = devnet.tx(&funding).expect("funding tx");
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == own.script_pubkey())
        .expect("pays carol") as u32;
    let coin = OutPoint::new(funding, vout);
    // She pays her deposit address with a low fee: pending, not credited.
    let pay = spend(&key, coin, 2_000_000, address.script_pubkey(), 1_000);
    devnet.submit_tx(&pay).expect("accepted");
    wait_for(&ex, "the pending deposit", |ex| {
        ex.custody()
            .is_some_and(|c| c.view().watcher.pending().any(|d| d.user == carol))
    });
    // Then replaces it (full RBF) with a higher-fee payment back to herself.
    let back = spend(&key, coin, 2_000_000, own.script_pubkey(), 20_000);
    devnet
        .submit_tx(&back)
        .expect("the replacement is accepted");
    assert_eq!(devnet.mempool_txids(), vec![back.compute_txid()]);
    wait_for(&ex, "the pending deposit to disappear", |ex| {
        ex.custody()
            .is_some_and(|c| !c.view().watcher.pending().any(|d| d.user == carol))
    });
    mine(&ex, 4);
    assert_eq!(available(&ex, carol), 0, "never credited");
    let records = query(&ex, |e| e.deposit_records().count());
    assert_eq!(records, 0, "no deposit on the books");
    assert_eq!(
        query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)),
        None,
        "a customer's own double-spend is not a theft of our coins"
    );
    reconciled_at_tip(&ex);
    drop(devnet);
    ex.stop().expect("stop");
}

#[test]
fn a_batch_cancelled_by_double_spend_refunds_only_when_the_cancel_confirms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    sync(&ex);
    // The operator's own cushion in the hot wallet pays the cancel's fee.
    let hot = query(&ex, |e| {
        e.wallets()
            .iter()
            .find(|w| w.role == WalletRole::Hot)
            .map(|w| w.descriptor.clone())
            .expect("hot wallet")
    });
    let (_, hot_address) = kura_custody::derive(&hot, 0, Network::Regtest).expect("derive");
    ex.custody()
        .and_then(|c| c.devnet())
        .expect("devnet")
        .send(&hot_address, Amount::from_sat(1_000_000))
        .expect("cushion");
    let to = outside_address(8);
    let (alice, devnet) = credited_customer_withdrawing(&ex, "w-c", &to);
    wait_for(&ex, "the batch in the mempool", |ex| {
        let built = query(ex, |e| e.withdrawal_batch(0).is_some());
        built && devnet.mempool_txids() == vec![first_txid_of_batch_0(ex)]
    });
    let cancel = ex
        .custody()
        .expect("custody")
        .cancel(0, 30)
        .expect("cancel");
    assert_eq!(
        devnet.mempool_txids(),
        vec![cancel],
        "the payment is replaced"
    );
    // A cancel in the mempool refunds nothing: the payment could still confirm.
    assert_eq!(available(&ex, alice), 70_000_000);
    let (tx, _) = devnet.tx(&cancel).expect("cancel tx");
    assert!(tx
        .output
        .iter()
        .all(|o| o.script_pubkey != to.script_pubkey()));
    mine(&ex, 1);
    wait_for(&ex, "the refund", |ex| {
        query(ex, |e| e.withdrawal("w-c").map(|w| w.state))
            == Some(kura_engine::WithdrawalState::Cancelled)
    });
    assert_eq!(available(&ex, alice), 100_000_000);
    assert!(received(&ex, &to).is_empty(), "never paid");
    let batch = query(&ex, |e| e.withdrawal_batch(0).expect("batch").state);
    assert!(
        matches!(batch, BatchState::Cancelled { txid, .. } if txid == kura_chain::bitcoin::hashes::Hash::to_byte_array(cancel)),
        "{batch:?}"
    );
    assert_eq!(
        query(&ex, |e| e.withdrawals_halted(BTC).map(str::to_owned)),
        None
    );
    let rec = query(&ex, |e| e.last_reconciliation(BTC)).expect("reconciled");
    assert!(u128::from(rec.holdings.get()) >= rec.liabilities, "{rec:?}");
    drop(devnet);
    ex.stop().expect("stop");
}
