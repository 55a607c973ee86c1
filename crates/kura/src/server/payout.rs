//! Paying chain withdrawals: the custody task's batcher.
//!
//! Every `batch_interval`, the approved withdrawals whose release time has come are
//! paid by one transaction:
//!
//! 1. a PSBT is built from our confirmed, unlocked coins (never unconfirmed change);
//! 2. `BuildWithdrawalBatch` is journaled — the coins it spends, the payments, the
//!    change index, the fee and the txid — before anything is signed;
//! 3. the signer checks the PSBT against exactly that record and its own velocity caps,
//!    and signs;
//! 4. the signed transaction is written to `DIR/custody/outbox/<batch>.tx` (fsynced) and
//!    broadcast.
//!
//! A crash at any point is safe: before step 2 nothing happened; after it the batch is
//! in the books and its coins are locked, and whichever version of it confirms (found by
//! the coins it spends, never by txid) settles it exactly once. An open batch whose
//! transaction is in neither the mempool nor the chain is broadcast again from the
//! outbox; if the outbox does not have it (the node stopped between steps 2 and 4), it
//! is rebuilt from the books, checked against the recorded txid, signed and kept. A fee bump ([`Payout::bump`]) spends the same coins, pays the same outputs
//! and takes the difference from the change.

use crate::signing::HotSigner;
use anyhow::{anyhow, Context, Result};
use kura_chain::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use kura_chain::bitcoin::hashes::Hash;
use kura_chain::bitcoin::psbt::Psbt;
use kura_chain::bitcoin::{Network, OutPoint, ScriptBuf, Transaction, Txid};
use kura_chain::ChainSource;
use kura_custody::band::{Band, Move};
use kura_custody::psbt::{
    build_psbt, bump_psbt, rebuild_psbt, ChangeTarget, Payment, SpendableCoin,
};
use kura_custody::Watcher;
use kura_engine::{BatchState, Command, Engine, EventKind, Outpoint, WalletRole, WithdrawalBatch};
use kura_signer::Authorization;
use kura_units::{Amount, AssetId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The batcher's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayoutConfig {
    /// Fee rate of new batches, in sat/vB.
    pub fee_rate_sat_vb: u64,
    /// How often approved withdrawals are gathered into a batch.
    pub batch_interval: Duration,
    /// The hot float band (`None`: never sweep nor prepare refills).
    pub band: Option<Band>,
}

impl Default for PayoutConfig {
    fn default() -> Self {
        PayoutConfig {
            fee_rate_sat_vb: 2,
            batch_interval: Duration::from_secs(60),
            band: Some(Band::default()),
        }
    }
}

/// What the batcher needs of the books, copied out of the engine in one query.
#[derive(Clone, Debug, Default)]
pub struct PayoutBooks {
    pub halted: bool,
    /// (wallet id, descriptor) of the wallets the signer can spend (deposit and hot).
    pub spendable: Vec<(u32, String)>,
    /// The hot wallet: id, descriptor, next unused index.
    pub hot: Option<(u32, String, u32)>,
    /// Coins locked by open batches.
    pub locked: BTreeSet<OutPoint>,
    /// Approved, released withdrawals: (id, address, amount paid out in sat).
    pub ready: Vec<(String, String, u64)>,
    /// Open batches: id → (coins, payments, latest txid).
    pub open: BTreeMap<u64, OpenBatch>,
    /// The newest cold wallet: id, descriptor, next unused index.
    pub cold: Option<(u32, String, u32)>,
    /// (wallet id, descriptor) of every cold wallet (coins may sit in older ones).
    pub cold_wallets: Vec<(u32, String)>,
    /// Every descriptor registered for the asset (the signer learns new ones).
    pub descriptors: Vec<String>,
    /// What customers are owed now, in sat.
    pub liabilities_sat: u128,
    /// Holdings at the last reconciliation less what customers are owed now: what a
    /// transfer's network fee may come out of without making the books short.
    pub surplus_sat: Option<i128>,
}

#[derive(Clone, Debug)]
pub struct OpenBatch {
    pub inputs: Vec<OutPoint>,
    pub payments: Vec<Payment>,
    pub txid: Txid,
    pub network_fee: u64,
    /// The change output's index in the hot wallet, if the batch has change.
    pub change: Option<u32>,
    /// The wallet the change goes to (the hot wallet when the batch was built).
    pub change_wallet: Option<u32>,
    /// A transfer between our own wallets (a sweep or a refill), not withdrawals.
    pub transfer: bool,
    /// A refill of the hot wallet from cold storage: signed offline, never here.
    pub refill: bool,
}

/// One of our confirmed coins, as the batcher needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coin {
    pub outpoint: OutPoint,
    pub value_sat: u64,
    pub wallet: u32,
    pub index: u32,
}

/// Our confirmed coins, copied out of the watcher.
pub fn coins_of(watcher: &Watcher) -> Vec<Coin> {
    watcher
        .coins()
        .map(|(outpoint, value_sat, owner, _)| Coin {
            outpoint,
            value_sat,
            wallet: owner.wallet,
            index: owner.index,
        })
        .collect()
}

fn outpoint(o: &Outpoint) -> OutPoint {
    OutPoint::new(Txid::from_byte_array(o.txid), o.vout)
}

/// The payments of a set of withdrawals: each address's script, the amount less fee.
fn payments(engine: &Engine, ids: &[String], network: Network) -> Option<Vec<Payment>> {
    ids.iter()
        .map(|id| {
            let w = engine.withdrawal(id)?;
            let address = super::custody::check_withdrawal_address(&w.address, network).ok()?;
            Some(Payment {
                script_pubkey: address.script_pubkey(),
                amount_sat: w.amount.get().checked_sub(w.fee.get())?,
            })
        })
        .collect()
}

/// What batch `b` must pay: its withdrawals, or a transfer's one output to our own
/// wallet (its script derived from the wallet's descriptor).
pub fn batch_payments(
    engine: &Engine,
    b: &WithdrawalBatch,
    network: Network,
) -> Option<Vec<Payment>> {
    match b.transfer {
        None => payments(engine, &b.withdrawals, network),
        Some(t) => {
            let wallet = engine.wallets().get(t.to.0 as usize)?;
            let (script_pubkey, _) =
                kura_custody::derive(&wallet.descriptor, t.to.1, network).ok()?;
            Some(vec![Payment {
                script_pubkey,
                amount_sat: t.amount.get(),
            }])
        }
    }
}

/// Copy what the batcher needs out of the engine.
pub fn payout_books(engine: &Engine, asset: AssetId, network: Network, now_ms: u64) -> PayoutBooks {
    let wallets = engine.wallets();
    let spendable = wallets
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.asset == asset && matches!(w.role, WalletRole::Deposit | WalletRole::Hot)
        })
        .map(|(i, w)| (i as u32, w.descriptor.clone()))
        .collect();
    let hot = wallets
        .iter()
        .enumerate()
        .rev()
        .find(|(_, w)| w.asset == asset && w.role == WalletRole::Hot)
        .map(|(i, w)| (i as u32, w.descriptor.clone(), w.next_index));
    let mut locked = BTreeSet::new();
    let mut open = BTreeMap::new();
    for id in engine.open_withdrawal_batches() {
        let Some(b) = engine.withdrawal_batch(id) else {
            continue;
        };
        if b.asset != asset || b.state != BatchState::Open {
            continue;
        }
        let inputs: Vec<OutPoint> = b.inputs.iter().map(outpoint).collect();
        locked.extend(inputs.iter().copied());
        let Some(latest) = b.versions.last() else {
            continue;
        };
        let refill = b.transfer.is_some_and(|t| {
            wallets
                .get(t.to.0 as usize)
                .is_some_and(|w| w.role == WalletRole::Hot)
        });
        if let Some(payments) = batch_payments(engine, b, network) {
            open.insert(
                id,
                OpenBatch {
                    inputs,
                    payments,
                    txid: Txid::from_byte_array(latest.txid),
                    network_fee: latest.network_fee.get(),
                    change: b.change.map(|(_, index)| index),
                    change_wallet: b.change.map(|(wallet, _)| wallet),
                    transfer: b.transfer.is_some(),
                    refill,
                },
            );
        }
    }
    let ready = engine
        .ready_withdrawals(asset, now_ms)
        .into_iter()
        .filter_map(|(id, w)| {
            let net = w.amount.get().checked_sub(w.fee.get())?;
            Some((id.to_owned(), w.address.clone(), net))
        })
        .collect();
    let cold_wallets: Vec<(u32, String)> = wallets
        .iter()
        .enumerate()
        .filter(|(_, w)| w.asset == asset && w.role == WalletRole::Cold)
        .map(|(i, w)| (i as u32, w.descriptor.clone()))
        .collect();
    let cold = cold_wallets
        .last()
        .and_then(|(i, d)| Some((*i, d.clone(), wallets.get(*i as usize)?.next_index)));
    let liabilities_sat = engine.ledger().customer_total(asset).unwrap_or(0);
    let surplus_sat = engine.last_reconciliation(asset).map(|r| {
        i128::from(r.holdings.get()) - i128::try_from(liabilities_sat).unwrap_or(i128::MAX)
    });
    PayoutBooks {
        halted: engine.withdrawals_halted(asset).is_some(),
        spendable,
        hot,
        locked,
        ready,
        open,
        cold,
        cold_wallets,
        descriptors: wallets
            .iter()
            .filter(|w| w.asset == asset)
            .map(|w| w.descriptor.clone())
            .collect(),
        liabilities_sat,
        surplus_sat,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The batcher: signer, outbox, and the PSBTs of the batches it built.
pub struct Payout {
    signer: HotSigner,
    config: PayoutConfig,
    network: Network,
    asset: AssetId,
    /// Signed transactions kept until they are on the network: `<batch>.tx`
    /// (`DIR/custody/outbox/`).
    outbox: PathBuf,
    /// Where nodes before 2026-11-25 kept them (`DIR/signer/outbox/`, which is now
    /// the signer's alone): still read, never written.
    legacy_outbox: PathBuf,
    /// Where refill PSBTs wait for the offline ceremony: `<batch>.psbt`.
    refills: PathBuf,
    last_batch: Option<Instant>,
    /// The unsigned PSBT of each batch's latest version built by this process.
    psbts: HashMap<u64, Psbt>,
    /// What went wrong last, for status displays.
    pub last_problem: Option<String>,
}

impl std::fmt::Debug for Payout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payout")
            .field("config", &self.config)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// Submits a command and returns its events (or the engine's refusal).
pub type Submit<'a> = &'a mut dyn FnMut(
    Command,
) -> Result<
    std::result::Result<Vec<kura_engine::Event>, kura_engine::Reject>,
>;

impl Payout {
    pub fn new(
        signer: HotSigner,
        config: PayoutConfig,
        network: Network,
        asset: AssetId,
        data: &std::path::Path,
    ) -> Result<Payout> {
        let outbox = data.join("custody").join("outbox");
        let refills = data.join("custody").join("refills");
        std::fs::create_dir_all(&outbox)
            .with_context(|| format!("creating the outbox {}", outbox.display()))?;
        std::fs::create_dir_all(&refills)
            .with_context(|| format!("creating {}", refills.display()))?;
        Ok(Payout {
            signer,
            config,
            network,
            asset,
            outbox,
            legacy_outbox: data.join("signer").join("outbox"),
            refills,
            last_batch: None,
            psbts: HashMap::new(),
            last_problem: None,
        })
    }

    fn outbox_file(&self, batch: u64) -> PathBuf {
        self.outbox.join(format!("{batch}.tx"))
    }

    /// Keep the signed transaction of `batch` (fsynced) before it is broadcast.
    fn keep(&self, batch: u64, tx: &Transaction) -> Result<()> {
        write_synced(&self.outbox_file(batch), serialize_hex(tx).as_bytes())
    }

    /// The kept signed transaction of `batch`: from the outbox, or else from the
    /// legacy outbox.
    fn kept(&self, batch: u64) -> Option<Transaction> {
        let file = format!("{batch}.tx");
        let text = std::fs::read_to_string(self.outbox.join(&file))
            .or_else(|_| std::fs::read_to_string(self.legacy_outbox.join(&file)))
            .ok()?;
        deserialize_hex(text.trim()).ok()
    }

    /// One pass: broadcast again what was lost, then pay what is ready, or else bring
    /// the hot float back into its band.
    pub fn pass(
        &mut self,
        books: &PayoutBooks,
        coins: &[Coin],
        source: &dyn ChainSource,
        submit: Submit<'_>,
    ) -> Result<()> {
        match self.signer.learn(&books.descriptors) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                descriptors = n,
                "the signer learned newly registered wallets"
            ),
            Err(e) => tracing::warn!(error = %e, "the signer refused a registered descriptor"),
        }
        self.rebroadcast(books, coins, source)?;
        if books.halted {
            return Ok(());
        }
        let due = self
            .last_batch
            .is_none_or(|t| t.elapsed() >= self.config.batch_interval);
        let result = if !books.ready.is_empty() && due {
            self.last_batch = Some(Instant::now());
            self.pay(books, coins, source, submit)
        } else if books.ready.is_empty() {
            // Nothing to pay: the books are as of this pass, so the float is too.
            self.rebalance(books, coins, source, submit)
        } else {
            return Ok(());
        };
        match result {
            Ok(()) => {
                self.last_problem = None;
                Ok(())
            }
            Err(e) => {
                self.last_problem = Some(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// The unlocked confirmed coins of every cold wallet.
    fn cold_coins(books: &PayoutBooks, coins: &[Coin]) -> Vec<SpendableCoin> {
        coins
            .iter()
            .filter(|c| !books.locked.contains(&c.outpoint))
            .filter_map(|c| {
                let (_, descriptor) = books.cold_wallets.iter().find(|(id, _)| *id == c.wallet)?;
                Some(SpendableCoin {
                    outpoint: c.outpoint,
                    value_sat: c.value_sat,
                    descriptor: descriptor.clone(),
                    index: c.index,
                })
            })
            .collect()
    }

    /// Bring the hot float back into its band: sweep the surplus to cold storage, or
    /// prepare a refill for the offline ceremony. One transfer at a time.
    fn rebalance(
        &mut self,
        books: &PayoutBooks,
        coins: &[Coin],
        source: &dyn ChainSource,
        submit: Submit<'_>,
    ) -> Result<()> {
        let Some(band) = self.config.band else {
            return Ok(());
        };
        let (Some(cold), Some(hot)) = (books.cold.clone(), books.hot.clone()) else {
            return Ok(());
        };
        // Only while nothing is in flight: an open batch's coins are locked and its
        // change is not confirmed yet, so the float would look smaller than it is (and
        // one transfer at a time).
        if !books.open.is_empty() {
            return Ok(());
        }
        let float = Self::spendable(books, coins, false);
        let cold_coins = Self::cold_coins(books, coins);
        let sum = |c: &[SpendableCoin]| c.iter().map(|c| c.value_sat).sum::<u64>();
        match band.decide(sum(&float), sum(&cold_coins), books.liabilities_sat) {
            None => Ok(()),
            Some(Move::Sweep { amount_sat }) => {
                let to = ChangeTarget {
                    descriptor: cold.1,
                    index: cold.2,
                };
                let change = ChangeTarget {
                    descriptor: hot.1,
                    index: hot.2,
                };
                let built = self.transfer_psbt(&float, amount_sat, &to, &change)?;
                let fee_fits = books
                    .surplus_sat
                    .is_some_and(|s| s >= i128::from(built.fee_sat));
                if !fee_fits {
                    tracing::warn!(
                        amount_sat,
                        fee_sat = built.fee_sat,
                        surplus_sat = ?books.surplus_sat,
                        "hot float above high water, but the books' surplus does not cover the sweep's fee; not sweeping"
                    );
                    return Ok(());
                }
                let batch = self.journal_transfer(
                    &built,
                    (cold.0, cold.2),
                    amount_sat,
                    (hot.0, hot.2),
                    submit,
                )?;
                tracing::info!(batch, amount_sat, txid = %built.txid, "sweeping the hot float above high water to cold storage");
                let auth = Authorization {
                    batch,
                    inputs: built.inputs.clone(),
                    payments: vec![Payment {
                        script_pubkey: Self::script_at(&to, self.network)?,
                        amount_sat,
                    }],
                };
                self.psbts.insert(batch, built.psbt.clone());
                self.sign_and_send(batch, &built.psbt, &auth, source)
            }
            Some(Move::Refill { amount_sat }) => {
                let to = ChangeTarget {
                    descriptor: hot.1,
                    index: hot.2,
                };
                let change = ChangeTarget {
                    descriptor: cold.1,
                    index: cold.2,
                };
                let built = self.transfer_psbt(&cold_coins, amount_sat, &to, &change)?;
                let batch = self.journal_transfer(
                    &built,
                    (hot.0, hot.2),
                    amount_sat,
                    (cold.0, cold.2),
                    submit,
                )?;
                let path = self.refill_file(batch);
                write_synced(&path, built.psbt.to_string().as_bytes())?;
                tracing::warn!(
                    batch,
                    amount_sat,
                    txid = %built.txid,
                    psbt = %path.display(),
                    "hot float below low water: a refill from cold storage waits for the offline ceremony (kura cold sign, then kura cold finalize --broadcast)"
                );
                Ok(())
            }
        }
    }

    /// Where the refill PSBT of batch `batch` is written.
    pub fn refill_file(&self, batch: u64) -> PathBuf {
        self.refills.join(format!("{batch}.psbt"))
    }

    fn script_at(target: &ChangeTarget, network: Network) -> Result<ScriptBuf> {
        kura_custody::derive(&target.descriptor, target.index, network)
            .map(|(script, _)| script)
            .map_err(|e| anyhow!("deriving {}/{}: {e}", target.descriptor, target.index))
    }

    /// A PSBT paying `amount_sat` from `coins` to our own `to`, change to `change`, with
    /// the key origins of the payment filled in so that a signer sees it is ours.
    fn transfer_psbt(
        &self,
        coins: &[SpendableCoin],
        amount_sat: u64,
        to: &ChangeTarget,
        change: &ChangeTarget,
    ) -> Result<kura_custody::BuiltPsbt> {
        let script_pubkey = Self::script_at(to, self.network)?;
        let payment = Payment {
            script_pubkey: script_pubkey.clone(),
            amount_sat,
        };
        let mut built = build_psbt(
            coins,
            &[payment],
            change,
            self.config.fee_rate_sat_vb,
            self.network,
        )
        .map_err(|e| anyhow!("building the transfer: {e}"))?;
        let vout = built
            .psbt
            .unsigned_tx
            .output
            .iter()
            .position(|o| o.script_pubkey == script_pubkey && o.value.to_sat() == amount_sat)
            .ok_or_else(|| anyhow!("the transfer's output is missing from its PSBT"))?;
        kura_custody::psbt::describe_output(&mut built.psbt, vout, to, self.network)
            .map_err(|e| anyhow!("describing the transfer's output: {e}"))?;
        Ok(built)
    }

    /// Journal a transfer before anything is signed or handed out; its batch id.
    /// `change` is the change output's (wallet, index), used if the PSBT has change.
    fn journal_transfer(
        &self,
        built: &kura_custody::BuiltPsbt,
        to: (u32, u32),
        amount_sat: u64,
        change: (u32, u32),
        submit: Submit<'_>,
    ) -> Result<u64> {
        let command = Command::BuildTransfer {
            asset: self.asset,
            inputs: built
                .inputs
                .iter()
                .map(|o| Outpoint {
                    txid: o.txid.to_byte_array(),
                    vout: o.vout,
                })
                .collect(),
            to,
            amount: Amount::new(amount_sat),
            change: (built.change_sat > 0).then_some(change),
            network_fee: Amount::new(built.fee_sat),
            txid: built.txid.to_byte_array(),
        };
        let events = submit(command)?
            .map_err(|reject| anyhow!("the books refused the transfer: {reject}"))?;
        events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::TransferBuilt { batch, .. } => Some(*batch),
                _ => None,
            })
            .ok_or_else(|| anyhow!("the transfer was built but its id is missing"))
    }

    /// Every open batch whose transaction is in neither the mempool nor the chain is
    /// broadcast again: from the outbox, or, when the node stopped between journaling
    /// the batch and keeping its signed transaction, rebuilt from the books (checked
    /// against the recorded txid), signed and kept first.
    fn rebroadcast(
        &mut self,
        books: &PayoutBooks,
        coins: &[Coin],
        source: &dyn ChainSource,
    ) -> Result<()> {
        for (&batch, open) in &books.open {
            // A refill is signed and broadcast by the offline ceremony, not here.
            if open.refill || source.get_tx(&open.txid)?.is_some() {
                continue;
            }
            match self.kept(batch) {
                Some(tx) if tx.compute_txid() == open.txid => match source.broadcast(&tx) {
                    Ok(txid) => tracing::info!(batch, %txid, "withdrawal batch broadcast again"),
                    Err(e) => {
                        tracing::warn!(batch, error = %e, "broadcasting a batch again failed")
                    }
                },
                _ => {
                    let resigned = self.recorded_psbt(batch, books, coins).and_then(|psbt| {
                        let auth = Authorization {
                            batch,
                            inputs: open.inputs.clone(),
                            payments: open.payments.clone(),
                        };
                        self.sign_and_send(batch, &psbt, &auth, source)
                    });
                    match resigned {
                        Ok(()) => tracing::info!(
                            batch,
                            txid = %open.txid,
                            "withdrawal batch had no signed transaction; rebuilt from the books, signed and broadcast"
                        ),
                        Err(e) => tracing::warn!(
                            batch,
                            txid = %open.txid,
                            error = %format!("{e:#}"),
                            "open withdrawal batch has no signed transaction and cannot be rebuilt; waiting"
                        ),
                    }
                }
            }
        }
        Ok(())
    }

    /// The PSBT of open batch `batch` as last recorded: the one this process built, or
    /// rebuilt from the books (its coins, payments, change and fee) and checked against
    /// the recorded txid.
    fn recorded_psbt(&mut self, batch: u64, books: &PayoutBooks, coins: &[Coin]) -> Result<Psbt> {
        let open = books
            .open
            .get(&batch)
            .ok_or_else(|| anyhow!("batch {batch} is not open"))?;
        if let Some(psbt) = self.psbts.get(&batch) {
            if psbt.unsigned_tx.compute_txid() == open.txid {
                return Ok(psbt.clone());
            }
        }
        let ours = Self::spendable(books, coins, true);
        let inputs = open
            .inputs
            .iter()
            .map(|o| {
                ours.iter()
                    .find(|c| c.outpoint == *o)
                    .cloned()
                    .ok_or_else(|| {
                        anyhow!("coin {o} of batch {batch} is not one of our confirmed coins")
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let change = match (open.change_wallet, open.change) {
            (Some(wallet), Some(index)) => Some(ChangeTarget {
                descriptor: books
                    .spendable
                    .iter()
                    .find(|(id, _)| *id == wallet)
                    .map(|(_, d)| d.clone())
                    .ok_or_else(|| {
                        anyhow!("the change wallet {wallet} of batch {batch} is unknown")
                    })?,
                index,
            }),
            _ => None,
        };
        let rebuilt = rebuild_psbt(
            &inputs,
            &open.payments,
            change.as_ref(),
            open.network_fee,
            self.network,
        )
        .map_err(|e| anyhow!("rebuilding batch {batch}: {e}"))?;
        if rebuilt.txid != open.txid {
            return Err(anyhow!(
                "rebuilding batch {batch} gives txid {}, the books record {}; not signing",
                rebuilt.txid,
                open.txid
            ));
        }
        self.psbts.insert(batch, rebuilt.psbt.clone());
        Ok(rebuilt.psbt)
    }

    /// Our coins the signer can spend; with `include_locked`, also those of open batches.
    fn spendable(books: &PayoutBooks, coins: &[Coin], include_locked: bool) -> Vec<SpendableCoin> {
        let descriptors: HashMap<u32, &str> = books
            .spendable
            .iter()
            .map(|(id, d)| (*id, d.as_str()))
            .collect();
        coins
            .iter()
            .filter(|c| include_locked || !books.locked.contains(&c.outpoint))
            .filter_map(|c| {
                Some(SpendableCoin {
                    outpoint: c.outpoint,
                    value_sat: c.value_sat,
                    descriptor: (*descriptors.get(&c.wallet)?).to_owned(),
                    index: c.index,
                })
            })
            .collect()
    }

    fn pay(
        &mut self,
        books: &PayoutBooks,
        coins: &[Coin],
        source: &dyn ChainSource,
        submit: Submit<'_>,
    ) -> Result<()> {
        let (hot_id, hot_descriptor, next_index) = books
            .hot
            .clone()
            .ok_or_else(|| anyhow!("no hot wallet is registered"))?;
        let mut ids = Vec::new();
        let mut pays = Vec::new();
        for (id, address, amount_sat) in &books.ready {
            let Ok(address) = super::custody::check_withdrawal_address(address, self.network)
            else {
                tracing::error!(id, address, "approved withdrawal has an unusable address");
                continue;
            };
            ids.push(id.clone());
            pays.push(Payment {
                script_pubkey: address.script_pubkey(),
                amount_sat: *amount_sat,
            });
        }
        if ids.is_empty() {
            return Ok(());
        }
        let change = ChangeTarget {
            descriptor: hot_descriptor,
            index: next_index,
        };
        let coins = Self::spendable(books, coins, false);
        let built = build_psbt(
            &coins,
            &pays,
            &change,
            self.config.fee_rate_sat_vb,
            self.network,
        )
        .map_err(|e| anyhow!("building the withdrawal transaction: {e}"))?;
        let inputs: Vec<Outpoint> = built
            .inputs
            .iter()
            .map(|o| Outpoint {
                txid: o.txid.to_byte_array(),
                vout: o.vout,
            })
            .collect();
        let command = Command::BuildWithdrawalBatch {
            asset: self.asset,
            withdrawals: ids.clone(),
            inputs,
            change: (built.change_sat > 0).then_some((hot_id, next_index)),
            network_fee: Amount::new(built.fee_sat),
            txid: built.txid.to_byte_array(),
        };
        let events = match submit(command)? {
            Ok(events) => events,
            Err(reject) => {
                return Err(anyhow!("the books refused the withdrawal batch: {reject}"));
            }
        };
        let batch = events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::WithdrawalBatchBuilt { batch, .. } => Some(*batch),
                _ => None,
            })
            .ok_or_else(|| anyhow!("the batch was built but its id is missing"))?;
        tracing::info!(batch, txid = %built.txid, withdrawals = ids.len(), fee = built.fee_sat, "withdrawal batch built");
        let auth = Authorization {
            batch,
            inputs: built.inputs.clone(),
            payments: pays,
        };
        self.psbts.insert(batch, built.psbt.clone());
        self.sign_and_send(batch, &built.psbt, &auth, source)
    }

    fn sign_and_send(
        &mut self,
        batch: u64,
        psbt: &Psbt,
        auth: &Authorization,
        source: &dyn ChainSource,
    ) -> Result<()> {
        let signed = self
            .signer
            .sign(psbt, auth, now_ms())
            .map_err(|e| anyhow!("the signer refused batch {batch}: {e:#}"))?;
        self.keep(batch, &signed.tx)?;
        let txid = source
            .broadcast(&signed.tx)
            .map_err(|e| anyhow!("broadcasting batch {batch}: {e}"))?;
        tracing::info!(batch, %txid, "withdrawal batch broadcast");
        Ok(())
    }

    /// Replace an open batch's transaction with one paying `fee_rate_sat_vb`: the same
    /// coins and payments, less change. Returns the new txid.
    pub fn bump(
        &mut self,
        batch: u64,
        fee_rate_sat_vb: u64,
        books: &PayoutBooks,
        coins: &[Coin],
        source: &dyn ChainSource,
        submit: Submit<'_>,
    ) -> Result<Txid> {
        let open = books
            .open
            .get(&batch)
            .ok_or_else(|| anyhow!("batch {batch} is not open"))?;
        let original = self.recorded_psbt(batch, books, coins)?;
        let coins = Self::spendable(books, coins, true);
        let change = ChangeTarget {
            descriptor: books
                .hot
                .as_ref()
                .map(|(_, d, _)| d.clone())
                .ok_or_else(|| anyhow!("no hot wallet"))?,
            index: open
                .change
                .ok_or_else(|| anyhow!("batch {batch} has no change to pay a higher fee from"))?,
        };
        let bumped = bump_psbt(&original, &coins, &change, fee_rate_sat_vb, self.network)
            .map_err(|e| anyhow!("bumping batch {batch}: {e}"))?;
        if bumped.fee_sat <= open.network_fee {
            return Err(anyhow!(
                "a fee rate of {fee_rate_sat_vb} sat/vB does not raise the fee of batch {batch}"
            ));
        }
        match submit(Command::BumpWithdrawalBatch {
            batch,
            txid: bumped.txid.to_byte_array(),
            network_fee: Amount::new(bumped.fee_sat),
        })? {
            Ok(_) => {}
            Err(r) => return Err(anyhow!("the books refused the bump: {r}")),
        }
        let auth = Authorization {
            batch,
            inputs: open.inputs.clone(),
            payments: open.payments.clone(),
        };
        self.psbts.insert(batch, bumped.psbt.clone());
        self.sign_and_send(batch, &bumped.psbt, &auth, source)?;
        Ok(bumped.txid)
    }
}

impl Payout {
    /// Cancel open batch `batch`: a version spending the same coins back to the hot
    /// wallet (its change index if it has one, else its next index) at a higher fee,
    /// journaled as a new version of the batch, signed as a payment to ourselves only,
    /// kept and broadcast. Returns its txid. Whichever version confirms decides: the
    /// planner refunds the members when this one does.
    pub fn cancel(
        &mut self,
        batch: u64,
        fee_rate_sat_vb: u64,
        books: &PayoutBooks,
        coins: &[Coin],
        source: &dyn ChainSource,
        submit: Submit<'_>,
    ) -> Result<Txid> {
        let open = books
            .open
            .get(&batch)
            .ok_or_else(|| anyhow!("batch {batch} is not open"))?;
        if open.refill {
            return Err(anyhow!(
                "batch {batch} is a refill from cold storage: only the cold ceremony can sign a replacement"
            ));
        }
        let (_, hot_descriptor, next_index) =
            books.hot.clone().ok_or_else(|| anyhow!("no hot wallet"))?;
        let original = self.recorded_psbt(batch, books, coins)?;
        let spendable = Self::spendable(books, coins, true);
        let to = ChangeTarget {
            descriptor: hot_descriptor,
            index: open.change.unwrap_or(next_index),
        };
        let cancel =
            kura_custody::cancel_psbt(&original, &spendable, &to, fee_rate_sat_vb, self.network)
                .map_err(|e| anyhow!("cancelling batch {batch}: {e}"))?;
        match submit(Command::BumpWithdrawalBatch {
            batch,
            txid: cancel.txid.to_byte_array(),
            network_fee: Amount::new(cancel.fee_sat),
        })? {
            Ok(_) => {}
            Err(r) => return Err(anyhow!("the books refused the cancelling version: {r}")),
        }
        let auth = Authorization {
            batch,
            inputs: open.inputs.clone(),
            payments: Vec::new(),
        };
        self.psbts.insert(batch, cancel.psbt.clone());
        self.sign_and_send(batch, &cancel.psbt, &auth, source)?;
        tracing::warn!(batch, txid = %cancel.txid, "withdrawal batch cancelled by a double-spend to our hot wallet; refunded when it confirms");
        Ok(cancel.txid)
    }
}

/// Write `bytes` to `path` durably: a temporary file, fsynced, renamed, and the
/// directory fsynced.
fn write_synced(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The script of every payment, for the planner's batch facts.
pub fn payment_scripts(payments: &[Payment]) -> Vec<(ScriptBuf, u64)> {
    payments
        .iter()
        .map(|p| (p.script_pubkey.clone(), p.amount_sat))
        .collect()
}
