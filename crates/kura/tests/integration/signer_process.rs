//! The hot signer as a process of its own (`kura signer serve`), driven by a node on
//! the devnet: the node holds no key (the wallets it registers are the signer's), a
//! withdrawal is signed by the separate process and settled; the signer refuses what the
//! journal does not hold (a thief's transaction for an open batch, a batch that does not
//! exist, a cancellation flag on a paying version, anything but a cancellation while
//! withdrawals are halted) however it is asked; and past its own
//! velocity cap it refuses the node itself, until restarted with room, when the batch
//! is rebuilt from the books, signed and settled once.

use crate::custody::{
    available, config, credited_customer_withdrawing, mine, outside_address, received, sync,
};
use crate::node_common::{query, submit, wait_for};
use kura::server::Exchange;
use kura::signing::client::Client;
use kura_chain::bitcoin::hashes::Hash;
use kura_chain::bitcoin::psbt::Psbt;
use kura_chain::bitcoin::{Address, Amount, Network, OutPoint, TxOut, Txid};
use kura_custody::psbt::{rebuild_psbt, ChangeTarget, Payment, SpendableCoin};
use kura_engine::{BatchState, Command, WithdrawalState};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

const PASSPHRASE: &str = "a passphrase only the signer process is given";

/// `kura signer serve` on a data directory, killed when dropped; its output goes to
/// `DIR/signer-process.log`, printed if the test fails while it runs.
struct SignerProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl SignerProcess {
    fn start(data: &Path, extra: &[&str]) -> SignerProcess {
        let log = data.join("signer-process.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Process::new(env!("CARGO_BIN_EXE_kura"))
            .args(["signer", "serve", "--network", "regtest", "--data"])
            .arg(data)
            .args(extra)
            .env("KURA_SIGNER_PASSPHRASE", PASSPHRASE)
            .env_remove("KURA_DATA")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start kura signer serve");
        let socket = kura::signing::default_socket(data);
        let process = SignerProcess { child, socket, log };
        process
            .client()
            .wait_hello(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the signer did not come up: {e:#}\n{}", process.output()));
        process
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- kura signer serve ---\n{}", self.output());
        }
    }
}

/// The node's configuration, signing through `socket`.
fn remote_config(dir: &Path, socket: &Path) -> kura::server::ServerConfig {
    let mut c = config(dir);
    c.custody.signer_socket = Some(socket.to_path_buf());
    // An epoch every block, so that the reserves are proven with the signer's keys.
    c.solvency = kura::solvency::Schedule {
        every_blocks: 1,
        every: None,
        depth: 6,
        poll: Duration::from_millis(20),
        first_after: Duration::ZERO,
    };
    c
}

/// Batch `batch`'s journaled version as the payout hands it to a signer, rebuilt from
/// the books (its coins found among the first addresses of our wallets) the way a
/// restarted node rebuilds a batch it never kept.
fn journaled_psbt(ex: &Exchange, devnet: &kura_chain::Devnet, batch: u64, to: &Address) -> Psbt {
    let (b, wallets) = query(ex, move |e| {
        (
            e.withdrawal_batch(batch).expect("batch").clone(),
            e.wallets().to_vec(),
        )
    });
    let coins: Vec<SpendableCoin> = b
        .inputs
        .iter()
        .map(|o| {
            let outpoint = OutPoint::new(Txid::from_byte_array(o.txid), o.vout);
            let (prev, _) = devnet.tx(&outpoint.txid).expect("on the devnet");
            let out = &prev.output[o.vout as usize];
            let (descriptor, index) = wallets
                .iter()
                .flat_map(|w| (0..50).map(move |i| (w.descriptor.clone(), i)))
                .find(|(d, i)| {
                    kura_custody::derive(d, *i, Network::Regtest)
                        .is_ok_and(|(script, _)| script == out.script_pubkey)
                })
                .expect("one of our coins");
            SpendableCoin {
                outpoint,
                value_sat: out.value.to_sat(),
                descriptor,
                index,
            }
        })
        .collect();
    let (change_wallet, change_index) = b.change.expect("change");
    let change = ChangeTarget {
        descriptor: wallets[change_wallet as usize].descriptor.clone(),
        index: change_index,
    };
    let payment = Payment {
        script_pubkey: to.script_pubkey(),
        amount_sat: 30_000_000 - 10_000,
    };
    let version = b.versions.last().expect("version");
    rebuild_psbt(
        &coins,
        &[payment],
        Some(&change),
        version.network_fee.get(),
        Network::Regtest,
    )
    .expect("rebuilt")
    .psbt
}

#[test]
fn a_separate_signer_signs_only_what_the_journal_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = SignerProcess::start(dir.path(), &[]);
    let hello = signer.client().hello().expect("hello");
    let ex = Exchange::open(remote_config(dir.path(), &signer.socket), |_| {}).expect("open");
    sync(&ex);

    // The wallets the node registered are the signer's, and the node never opened a key:
    // the signer was given the passphrase, the node would have kept one beside the key.
    let wallets = query(&ex, |e| {
        e.wallets()
            .iter()
            .map(|w| w.descriptor.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        wallets,
        vec![hello.deposit_descriptor, hello.hot_descriptor]
    );
    assert!(!dir.path().join("signer").join("hot.pass").exists());

    let to = outside_address(7);
    let (alice, devnet) = credited_customer_withdrawing(&ex, "w-1", &to);
    wait_for(
        &ex,
        "the batch signed by the signer process, in the mempool",
        |ex| {
            query(ex, |e| e.withdrawal_batch(0).map(|b| b.state)) == Some(BatchState::Open)
                && !devnet.mempool_txids().is_empty()
        },
    );
    let [txid] = devnet.mempool_txids()[..] else {
        panic!("one transaction expected: {:?}", devnet.mempool_txids());
    };
    let psbt = journaled_psbt(&ex, &devnet, 0, &to);
    assert_eq!(psbt.unsigned_tx.compute_txid(), txid);
    let client = signer.client();

    // A thief's version of the open batch: the same coins, everything to the thief.
    let mut theft = psbt.clone();
    let total: u64 = theft
        .unsigned_tx
        .output
        .iter()
        .map(|o| o.value.to_sat())
        .sum();
    theft.unsigned_tx.output = vec![TxOut {
        value: Amount::from_sat(total),
        script_pubkey: outside_address(66).script_pubkey(),
    }];
    theft.outputs.truncate(1);
    theft.outputs[0] = Default::default();
    let refused = client
        .sign(0, &theft, false)
        .expect_err("a transaction the journal does not hold is refused");
    assert!(
        format!("{refused:#}").contains("is not batch 0's journaled version"),
        "{refused:#}"
    );
    // The journal's own version, for a batch that does not exist.
    let refused = client.sign(7, &psbt, false).expect_err("no batch 7");
    assert!(
        format!("{refused:#}").contains("no withdrawal batch 7"),
        "{refused:#}"
    );
    // The journal's own version, called a cancellation: it pays a customer, which a
    // cancellation may not.
    let refused = client
        .sign(0, &psbt, true)
        .expect_err("a paying version is no cancellation");
    assert!(
        format!("{refused:#}").contains("which nobody approved and is not ours"),
        "{refused:#}"
    );
    // While the books halt withdrawals, not even the journal's own version is signed.
    submit(
        &ex,
        Command::HaltWithdrawals {
            asset: kura_units::AssetId(0),
            reason: "drill".into(),
        },
    );
    let refused = client.sign(0, &psbt, false).expect_err("halted");
    assert!(
        format!("{refused:#}").contains("withdrawals are halted (drill)"),
        "{refused:#}"
    );
    submit(
        &ex,
        Command::ResumeWithdrawals {
            asset: kura_units::AssetId(0),
        },
    );
    // Asked properly, it signs the same transaction again (counted once in its caps).
    let again = client.sign(0, &psbt, false).expect("the journaled version");
    assert_eq!(again.txid, txid);

    mine(&ex, 1);
    wait_for(&ex, "the settlement", |ex| {
        query(ex, |e| e.withdrawal("w-1").map(|w| w.state)) == Some(WithdrawalState::Settled)
    });
    assert_eq!(received(&ex, &to), vec![30_000_000 - 10_000]);
    assert_eq!(available(&ex, alice), 70_000_000);
    // The epoch after the settlement proves the reserves with the separate signer's
    // signatures: every coin is hot or deposit, so the proof is complete.
    let store = kura::solvency::SolvencyStore::new(dir.path());
    mine(&ex, 1);
    wait_for(&ex, "an epoch with a complete proof of reserves", |_| {
        store.epochs().unwrap_or_default().into_iter().any(|n| {
            store.report(Some(n)).ok().flatten().is_some_and(|(_, r)| {
                r["assets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["asset"] == "BTC" && a["reserves_proof"]["complete"] == true)
            })
        })
    });
    assert!(signer.output().contains("signed a proof of reserves"));
    assert!(!dir.path().join("signer").join("hot.pass").exists());
    // The velocity record is the signer process's.
    let velocity =
        std::fs::metadata(dir.path().join("signer").join("velocity.log")).expect("velocity.log");
    assert!(velocity.len() > 0);
    drop(devnet);
    ex.stop().expect("stop");
}

#[test]
fn a_separate_signer_past_its_cap_refuses_the_node_until_restarted_with_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 0.2 BTC an hour: the 0.3 BTC withdrawal does not fit.
    let signer = SignerProcess::start(dir.path(), &["--hourly-cap-sat", "20000000"]);
    let ex = Exchange::open(remote_config(dir.path(), &signer.socket), |_| {}).expect("open");
    sync(&ex);
    let to = outside_address(8);
    let (_alice, devnet) = credited_customer_withdrawing(&ex, "w-1", &to);
    wait_for(&ex, "the signer's refusal", |_| {
        signer.output().contains("above the cap of 20000000 sat")
    });
    // The batch is in the books, its coins locked, and nothing was broadcast.
    assert_eq!(
        query(&ex, |e| e.withdrawal_batch(0).map(|b| b.state)),
        Some(BatchState::Open)
    );
    assert!(devnet.mempool_txids().is_empty());

    // Restarted with the default caps, the signer signs the batch as the books have it
    // (rebuilt by the node, checked against the journaled txid), and it settles once.
    drop(signer);
    let signer = SignerProcess::start(dir.path(), &[]);
    let journaled = query(&ex, |e| {
        e.withdrawal_batch(0).expect("batch").versions[0].txid
    });
    wait_for(&ex, "the batch in the mempool", |_| {
        devnet
            .mempool_txids()
            .iter()
            .any(|t| t.to_byte_array() == journaled)
    });
    mine(&ex, 1);
    wait_for(&ex, "the settlement", |ex| {
        query(ex, |e| e.withdrawal("w-1").map(|w| w.state)) == Some(WithdrawalState::Settled)
    });
    assert_eq!(received(&ex, &to), vec![30_000_000 - 10_000]);
    drop(devnet);
    ex.stop().expect("stop");
    drop(signer);
}

/// A node that signs in process holds `DIR/signer/`'s lock: a `kura signer serve` on
/// the same directory refuses to start while it runs (two processes would otherwise
/// hold the hot key and append to one velocity record), and starts once it stopped.
#[test]
fn a_node_signing_in_process_keeps_a_separate_signer_off_its_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = |data: &Path| kura::signing::service::ServiceConfig {
        data: data.to_path_buf(),
        socket: data.join("signer").join("signer.sock"),
        network: Network::Regtest,
        policy: kura_signer::Policy::default(),
    };
    let ex = Exchange::open(config(dir.path()), |_| {}).expect("open");
    let refused = kura::signing::service::Service::open(&service(dir.path()))
        .expect_err("the signer started beside a node signing in process");
    assert!(
        format!("{refused:#}").contains("in use by another kura process"),
        "{refused:#}"
    );
    ex.stop().expect("stop");
    kura::signing::service::Service::open(&service(dir.path()))
        .expect("the signer starts once the node stopped");
}
