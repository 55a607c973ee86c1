//! The hot float band against the real node on the devnet: a cold wallet registered
//! while the node runs is watched and learned by the signer; a hot float above high
//! water is swept to it automatically (journaled before signing, settled by outpoint,
//! never a halt); after withdrawals drain the float below low water, a refill PSBT from
//! cold storage is written for the offline ceremony, signed by two of the three holders
//! with `kura cold sign`, broadcast with `kura cold finalize`, and settled without a
//! halt; reconciliation stays covered throughout.

use crate::node_common;
use kura::server::custody::{ChainChoice, CustodyConfig, DEFAULT_WITHDRAWAL_POLICY};
use kura::server::payout::PayoutConfig;
use kura::server::{Exchange, ServerConfig};
use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use kura_chain::bitcoin::secp256k1::Secp256k1;
use kura_chain::bitcoin::{Address, Amount, Network};
use kura_custody::band::Band;
use kura_engine::{BatchState, Command, EventKind, WalletRole, WithdrawalPolicy};
use kura_units::AssetId;
use node_common::{devnet, query, submit, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::str::FromStr;
use std::time::Duration;

const BTC: AssetId = AssetId(0);
const NET: Network = Network::Regtest;
/// The cold wallet's three holders.
const HOLDERS: [u8; 3] = [41, 42, 43];

fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir);
    c.custody = CustodyConfig {
        chain: ChainChoice::Devnet {
            block_interval: None,
        },
        confirmations: 1,
        dust_sat: 546,
        poll: Duration::from_millis(20),
        start_height: 0,
        payout: PayoutConfig {
            fee_rate_sat_vb: 2,
            batch_interval: Duration::ZERO,
            band: Some(Band {
                low_bps: 200,
                high_bps: 500,
                min_move_sat: 10_000,
            }),
        },
        withdrawal_policy: WithdrawalPolicy {
            address_delay_ms: 0,
            ..DEFAULT_WITHDRAWAL_POLICY
        },
        ..CustodyConfig::default()
    };
    c
}

fn master(seed: u8) -> Xpriv {
    Xpriv::new_master(NET, &[seed; 32]).expect("master key")
}

/// 2-of-3 on BIP-48 P2WSH paths, as the holders would register it.
fn cold_descriptor() -> String {
    let secp = Secp256k1::new();
    let path = DerivationPath::from_str("m/48'/1'/0'/2'").expect("path");
    let keys: Vec<String> = HOLDERS
        .iter()
        .map(|s| {
            let m = master(*s);
            let xpub = Xpub::from_priv(&secp, &m.derive_priv(&secp, &path).expect("derive"));
            format!("[{}/48'/1'/0'/2']{xpub}/0/*", m.fingerprint(&secp))
        })
        .collect();
    format!("wsh(sortedmulti(2,{}))", keys.join(","))
}

fn mine(ex: &Exchange) {
    let d = devnet(ex);
    d.mine(1).expect("mine");
    let tip = d.tip().height;
    wait_for(ex, "the custody task to reach the tip", |ex| {
        ex.custody().is_some_and(|c| {
            let v = c.view();
            v.synced && v.watcher.tip().map(|(h, _)| h) == Some(tip)
        })
    });
}

/// The batch `id` once it exists: (is a transfer, state, latest txid).
fn batch(ex: &Exchange, id: u64) -> Option<(bool, BatchState, [u8; 32])> {
    query(ex, move |e| {
        let b = e.withdrawal_batch(id)?;
        Some((b.transfer.is_some(), b.state, b.versions.last()?.txid))
    })
}

fn txid(bytes: [u8; 32]) -> kura_chain::bitcoin::Txid {
    kura_chain::bitcoin::Txid::from_raw_hash(kura_chain::bitcoin::hashes::Hash::from_byte_array(
        bytes,
    ))
}

fn in_mempool(ex: &Exchange, id: [u8; 32]) -> bool {
    matches!(
        devnet(ex).tx(&txid(id)),
        Some((_, kura_chain::TxStatus::Mempool))
    )
}

/// Holdings by wallet role, from the custody task's watcher.
fn held_by(ex: &Exchange, role: WalletRole) -> u64 {
    let roles = query(ex, |e| {
        e.wallets().iter().map(|w| w.role).collect::<Vec<_>>()
    });
    let c = ex.custody().expect("custody");
    let v = c.view();
    v.watcher
        .coins()
        .filter(|(_, _, owner, _)| roles.get(owner.wallet as usize) == Some(&role))
        .map(|(_, value, _, _)| value)
        .sum()
}

fn not_halted(ex: &Exchange) {
    let halt = query(ex, |e| e.withdrawals_halted(BTC).map(str::to_owned));
    assert_eq!(halt, None, "withdrawals halted");
}

fn covered(ex: &Exchange) -> bool {
    query(ex, |e| {
        e.last_reconciliation(BTC)
            .is_some_and(|r| u128::from(r.holdings.get()) >= r.liabilities)
    })
}

fn kura(args: &[&str]) -> String {
    let out = Process::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .output()
        .expect("run kura");
    assert!(
        out.status.success(),
        "kura {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn the_hot_float_is_swept_above_high_water_and_refilled_offline_below_low_water() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = std::sync::Arc::new(Exchange::open(config(dir.path()), |_| {}).expect("open"));
    // The admin socket (for `kura admin`) is served with the API.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let serving = std::sync::Arc::clone(&ex);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    wait_for(&ex, "server.json", |_| {
        dir.path().join("server.json").exists()
    });
    let d = devnet(&ex);
    mine(&ex);

    // A customer deposits 1 BTC; the operator adds 0.01 BTC of its own to the hot
    // wallet (the cushion that pays transfer fees).
    let alice = submit(
        &ex,
        Command::RegisterUser {
            name: "alice".into(),
        },
    )
    .iter()
    .find_map(|e| match e.kind {
        EventKind::UserCreated { user } => Some(user),
        _ => None,
    })
    .expect("created");
    submit(
        &ex,
        Command::AssignDepositAddress {
            user: alice,
            asset: BTC,
        },
    );
    let (deposit, hot) = query(&ex, move |e| {
        let (w, i) = e.deposit_address(alice, BTC).expect("assigned");
        let hot = e
            .wallets()
            .iter()
            .find(|w| w.role == WalletRole::Hot)
            .map(|w| w.descriptor.clone())
            .expect("hot wallet");
        ((e.wallets()[w as usize].descriptor.clone(), i), hot)
    });
    let (_, deposit_address) = kura_custody::derive(&deposit.0, deposit.1, NET).expect("derive");
    let (_, hot_address) = kura_custody::derive(&hot, 0, NET).expect("derive");
    d.send(&deposit_address, Amount::from_sat(100_000_000))
        .expect("deposit");
    d.send(&hot_address, Amount::from_sat(1_000_000))
        .expect("cushion");
    mine(&ex);
    wait_for(&ex, "the credit", |ex| {
        query(ex, move |e| {
            e.ledger()
                .balance(alice, BTC)
                .map(|b| b.available.get())
                .unwrap_or(0)
        }) == 100_000_000
    });
    // No cold wallet yet: nothing moves, however far above high water the float is.
    mine(&ex);
    assert_eq!(batch(&ex, 0), None);

    // The operator registers the cold wallet through the admin socket.
    let answer = kura(&[
        "admin",
        "--data",
        p(dir.path()),
        "wallet",
        "register",
        &cold_descriptor(),
        "--reason",
        "cold storage ceremony 1",
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).expect("json");
    assert_eq!(answer["role"], "cold");
    let cold = answer["descriptor"]
        .as_str()
        .expect("descriptor")
        .to_owned();

    // Sweep: liabilities 1 BTC, band 0.02–0.05 BTC, float 1.01 BTC → 0.975 BTC to cold.
    wait_for(&ex, "the sweep", |ex| {
        batch(ex, 0).is_some_and(|(t, _, id)| t && in_mempool(ex, id))
    });
    let (_, _, sweep_txid) = batch(&ex, 0).expect("sweep");
    let (sweep_tx, _) = d.tx(&txid(sweep_txid)).expect("sweep tx");
    let (cold_script, _) = kura_custody::derive(&cold, 0, NET).expect("derive");
    assert!(sweep_tx
        .output
        .iter()
        .any(|o| o.script_pubkey == cold_script && o.value.to_sat() == 97_500_000));
    mine(&ex);
    wait_for(&ex, "the sweep to settle", |ex| {
        matches!(batch(ex, 0), Some((_, BatchState::Confirmed { .. }, _)))
    });
    wait_for(&ex, "a covered reconciliation", covered);
    not_halted(&ex);
    assert_eq!(held_by(&ex, WalletRole::Cold), 97_500_000);
    // Inside the band now: nothing more moves.
    mine(&ex);
    assert_eq!(batch(&ex, 1), None);

    // Alice withdraws 0.03 BTC: paid from the float, which falls below low water.
    submit(
        &ex,
        Command::RequestChainWithdrawal {
            user: alice,
            asset: BTC,
            amount: kura_units::Amount::new(3_000_000),
            id: "w1".into(),
            address: Address::from_str("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
                .expect("address")
                .assume_checked()
                .to_string(),
        },
    );
    wait_for(&ex, "the withdrawal batch", |ex| {
        batch(ex, 1).is_some_and(|(t, _, id)| !t && in_mempool(ex, id))
    });
    // While it is in flight its change is unconfirmed and the float looks empty: the
    // task must not ask for a refill on that account, however many passes it makes.
    let passes = |ex: &Exchange| ex.custody().map_or(0, |c| c.view().passes);
    let seen = passes(&ex);
    wait_for(&ex, "three more custody passes", |ex| {
        passes(ex) >= seen + 3
    });
    assert_eq!(
        batch(&ex, 2),
        None,
        "a refill while a withdrawal was in flight"
    );
    mine(&ex);
    wait_for(&ex, "the withdrawal to settle", |ex| {
        matches!(batch(ex, 1), Some((_, BatchState::Confirmed { .. }, _)))
    });

    // Refill: prepared from cold coins, journaled, written for the ceremony, not signed.
    let psbt = dir.path().join("custody").join("refills").join("2.psbt");
    wait_for(&ex, "the refill PSBT", |_| psbt.exists());
    let (is_transfer, state, refill_txid) = batch(&ex, 2).expect("refill batch");
    assert!(is_transfer && state == BatchState::Open);
    mine(&ex);
    assert!(d.tx(&txid(refill_txid)).is_none(), "nobody signed it yet");
    not_halted(&ex);

    // The holders do not meet: an operator abandons the refill. Its cold coins are
    // unlocked and the next pass prepares a new refill from them.
    let kura_fails = |args: &[&str]| {
        let out = Process::new(env!("CARGO_BIN_EXE_kura"))
            .args(args)
            .output()
            .expect("run kura");
        assert!(!out.status.success(), "kura {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let abandon = |batch: &str| {
        vec![
            "admin".to_owned(),
            "--data".to_owned(),
            p(dir.path()).to_owned(),
            "batch".to_owned(),
            "abandon".to_owned(),
            batch.to_owned(),
            "--reason".to_owned(),
            "the ceremony was called off".to_owned(),
        ]
    };
    let why = kura_fails(&strs(&abandon("1")));
    assert!(why.contains("batch 1 is not open"), "{why}");
    let locked = query(&ex, |e| {
        e.withdrawal_batch(2).expect("refill").inputs.clone()
    });
    kura(&strs(&abandon("2")));
    let (_, state, _) = batch(&ex, 2).expect("refill batch");
    assert_eq!(state, BatchState::Abandoned);
    let psbt = dir.path().join("custody").join("refills").join("3.psbt");
    wait_for(&ex, "a new refill PSBT", |_| psbt.exists());
    let (is_transfer, state, refill_txid) = batch(&ex, 3).expect("new refill batch");
    assert!(is_transfer && state == BatchState::Open);
    let relocked = query(&ex, |e| {
        e.withdrawal_batch(3).expect("refill").inputs.clone()
    });
    assert_eq!(relocked, locked, "the same cold coins, free again");
    let origin = kura_journal::read_records(dir.path(), 1)
        .expect("journal")
        .filter_map(|r| kura_engine::codec::decode(&r.expect("record").payload).ok())
        .find(|e| matches!(e.command, Command::AbandonTransfer { batch: 2 }))
        .map(|e| e.origin)
        .expect("the abandonment is journaled");
    assert!(
        matches!(&origin, kura_engine::codec::Origin::Admin { reason, .. } if reason == "the ceremony was called off"),
        "{origin:?}"
    );

    // Two of the three holders sign offline; the copies are finalized and broadcast.
    let descriptors = dir.path().join("descriptors.txt");
    let all = query(&ex, |e| {
        e.wallets()
            .iter()
            .map(|w| w.descriptor.clone())
            .collect::<Vec<_>>()
    });
    std::fs::write(&descriptors, all.join("\n")).expect("descriptors");
    let mut signed = Vec::new();
    for (n, seed) in HOLDERS.iter().take(2).enumerate() {
        let key = dir.path().join(format!("holder-{n}.key"));
        std::fs::write(&key, master(*seed).to_string()).expect("key");
        let out: PathBuf = dir.path().join(format!("refill.signed-{n}.psbt"));
        let shown = kura(&[
            "cold",
            "sign",
            "--psbt",
            p(&psbt),
            "--key",
            p(&key),
            "--descriptors",
            p(&descriptors),
            "--network",
            "regtest",
            "--out",
            p(&out),
        ]);
        assert!(shown.contains("added"), "{shown}");
        assert!(!shown.contains("NOT OURS"), "{shown}");
        signed.push(out);
    }
    kura(&[
        "cold",
        "finalize",
        "--psbt",
        p(&signed[0]),
        "--psbt",
        p(&signed[1]),
        "--broadcast",
        "--data",
        p(dir.path()),
    ]);
    wait_for(&ex, "the refill in the mempool", |ex| {
        in_mempool(ex, refill_txid)
    });
    // Once on the network a refill may confirm: it can no longer be abandoned.
    let why = kura_fails(&strs(&abandon("3")));
    assert!(why.contains("is on the network"), "{why}");
    mine(&ex);
    wait_for(&ex, "the refill to settle", |ex| {
        matches!(batch(ex, 3), Some((_, BatchState::Confirmed { .. }, _)))
    });
    wait_for(&ex, "a covered reconciliation", covered);
    not_halted(&ex);
    // The float is back inside the band: 2–5 % of the 0.97 BTC owed.
    let liabilities = query(&ex, |e| e.ledger().customer_total(BTC).expect("asset"));
    let float = held_by(&ex, WalletRole::Hot) + held_by(&ex, WalletRole::Deposit);
    assert!(
        u128::from(float) * 10_000 >= liabilities * 200
            && u128::from(float) * 10_000 <= liabilities * 500,
        "float {float} of {liabilities}"
    );
    let transfers = query(&ex, |e| {
        e.withdrawal_batches()
            .iter()
            .filter(|b| b.transfer.is_some())
            .count()
    });
    assert_eq!(
        transfers, 3,
        "the sweep, the abandoned refill and the refill"
    );
    stop.send(()).expect("stop");
    runtime.block_on(server).expect("join").expect("served");
}
