//! Forensic export (`kura export`): everything the journal says about one customer, one
//! address or one transaction, as a bundle a recipient can check without trusting the
//! operator beyond its published audit key.
//!
//! # What is selected
//!
//! - `--account NAME|ID` (all digits: an id): the customer and everything about them.
//! - `--address ADDR`: the customer a deposit address was assigned to (as for
//!   `--account`), and the chain withdrawals paying that address (with their owners'
//!   identity).
//! - `--txid TXID`: the deposits credited from that transaction's outputs, and the
//!   withdrawal batches whose transaction (any fee-bump version) has that id or spends
//!   one of its outputs, with the owners' identity and the balance changes in those
//!   records.
//!
//! `--from`/`--to` (RFC 3339 or unix milliseconds, inclusive) limit the records by the
//! time the sequencer gave them; the records that create the customer and their API
//! keys, and the records adding assets and markets (public, needed to read amounts),
//! are exported whatever their time.
//!
//! # How
//!
//! The journal is read offline (no lock; safe while a server runs): first a checkpoint is
//! signed with the audit machinery ([`crate::audit::make_checkpoint`], or an existing
//! one with `--checkpoint SIZE`), then the records `1..=size` are read and replayed
//! through the engine from genesis — the only way to know what each command did — while
//! their leaf hashes are rebuilt into the Merkle tree, whose root must be the signed one.
//!
//! # The bundle
//!
//! ```text
//! manifest.json         format, selector, subjects, time range, journal range, the signed
//!                       checkpoint (note text), the verifier key, and per file its SHA-256
//!                       and row count
//! records.jsonl         one line per exported journal record, in seq order
//! identity.csv/.jsonl   account creation, name, API keys (scheme, permissions, IP
//!                       allow-list, label), revocations, fee tiers, withdrawal addresses
//! access.csv/.jsonl     every command the customer sent through an API key: key, IP, user
//!                       agent, time, outcome (accepted or the rejection)
//! orders.csv/.jsonl     order events: accepted, rested, filled, cancelled, expired, amended
//! trades.csv/.jsonl     trades involving the customer, both sides (users, orders, fees)
//! balances.csv/.jsonl   every balance change: before, after, change, the command causing it
//! deposits.csv/.jsonl   addresses assigned, credits (txid:vout, amount, address, chain tip
//!                       height at credit), reversals, deficits repaid
//! withdrawals.csv/.jsonl  requests, routing (destination, fee, review), approvals,
//!                       batches (inputs spent, txid, fee bumps), settlement (height)
//! admin.csv/.jsonl      commands by operators touching the selection (operator, reason)
//! ```
//!
//! Every table row starts with `seq` (the journal record it derives from) and `time`
//! (RFC 3339, UTC). The `.csv` and `.jsonl` of a table hold the same rows in the same
//! order; a JSON line is an object of the same columns in the same order, every value a
//! string (the CSV cell). Amounts are decimals in the asset's units; prices are quote per
//! whole base unit.
//!
//! A line of `records.jsonl` is a JSON object (keys sorted) with: `seq`; `time`;
//! `payload` (hex: the journal record's bytes, the engine codec's encoding of the command,
//! its time and origin); `leaf_hash` = SHA-256(0x00 ‖ u64be(seq) ‖ payload), and `proof`,
//! its RFC 9162 inclusion proof (hex hashes, bottom first) against the checkpoint;
//! then the exporter's account of what the engine did with the command: `outcome` (`ok`
//! or `rejected: …`), `issuer` and `key` (the subject customer and the API key id when the
//! command came through one of their keys, else null) and `events` (the engine's events
//! for the selection, as JSON objects with a `type`).
//!
//! # What a recipient can check, and what not
//!
//! `kura export verify` (and, for the Merkle part, `tools/verify/export_verify.py`)
//! checks: the checkpoint's signature (with a key the auditor obtained independently, or
//! the bundle's); every record's leaf hash and inclusion proof against the signed root;
//! every file's SHA-256 and row count; and every row of every table, re-derived from the
//! records ([`derive()`](derive::derive)), so that a changed cell, a removed, added or reordered row is
//! reported by file, row and column. Payloads (commands, times, origins: who, from
//! which IP and with which user agent) are proven by the signed log. The engine's
//! results (ids it assigned, fills, balances) are the exporter's replay of those proven
//! commands: the verifier checks that they agree with the commands where both speak, but
//! only someone holding the journal can replay them (`kura export` is deterministic: run
//! it again and compare). A record's payload is hashed whole into its leaf, so records
//! about a trade also show the counterparty's command (see ADR 0011).

pub mod derive;
mod verify;

pub use verify::{verify, VerifyReport};

use crate::audit::{self, SignedCheckpoint};
use anyhow::{anyhow, bail, Context, Result};
use derive::{Rows, TABLES};
use kura_chain::bitcoin::Network;
use kura_custody::{parse_descriptor, WatchDescriptor};
use kura_engine::codec::{self, Entry, Origin};
use kura_engine::{Command, Engine, Event, EventKind, Limits, Reject};
use kura_journal::{JournalReader, StdFs};
use kura_proofs::tlog::node_hash;
use kura_proofs::Hash;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The bundle format, in `manifest.json`'s `format`.
pub const FORMAT: &str = "kura-export/1";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The records file's name.
pub const RECORDS: &str = "records.jsonl";

/// What to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// A customer by name, or by id when all digits.
    Account(String),
    /// A deposit address (its customer) or a withdrawal destination (those withdrawals).
    Address(String),
    /// A transaction id, as Bitcoin displays it.
    Txid(String),
}

impl Selector {
    fn kind(&self) -> &'static str {
        match self {
            Selector::Account(_) => "account",
            Selector::Address(_) => "address",
            Selector::Txid(_) => "txid",
        }
    }
    fn value(&self) -> &str {
        match self {
            Selector::Account(v) | Selector::Address(v) | Selector::Txid(v) => v,
        }
    }
}

/// The options of one export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub data: PathBuf,
    pub selector: Selector,
    /// First and last record time included (unix ms, inclusive).
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// The bundle directory: created; must not exist or be empty.
    pub out: PathBuf,
    /// Export against this existing checkpoint instead of signing a new one.
    pub checkpoint: Option<u64>,
    /// The network deposit addresses are shown for (default: regtest when the data
    /// directory has a devnet, else from the deposit descriptor's key version).
    pub network: Option<Network>,
}

/// Where an export is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Signing the checkpoint (reads the records the newest checkpoint does not cover).
    Checkpoint,
    /// Replaying the journal to find the customers behind an address or a txid.
    Resolve,
    /// Replaying the journal and selecting records.
    Scan,
}

/// Progress of an export: `done` of `total` (journal bytes while signing, records after).
#[derive(Clone, Copy, Debug)]
pub struct ExportProgress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

/// What an export did.
#[derive(Clone, Debug)]
pub struct ExportStats {
    /// Journal records read and replayed (counting both passes of `--address`/`--txid`).
    pub records_scanned: u64,
    /// Records written to `records.jsonl`.
    pub records_exported: u64,
    /// Rows written across the eight tables (each counted once, not per format).
    pub rows_written: u64,
    /// Bytes of all files written.
    pub bytes_written: u64,
    /// The size of the checkpoint the bundle is proven against.
    pub checkpoint_size: u64,
    pub elapsed: Duration,
    /// The customers the export is about.
    pub users: Vec<u32>,
}

/// Parses a time given as unix milliseconds (all digits) or RFC 3339.
pub fn parse_time(s: &str) -> Result<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().with_context(|| format!("time {s:?}"));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("time {s:?} is neither unix milliseconds nor RFC 3339"))?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| anyhow!("time {s:?} is before 1970"))
}

/// What [`replay`] calls for each record: seq, payload, entry, outcome, events, engine.
type ReplayFn<'a> =
    dyn FnMut(u64, &[u8], &Entry, Result<(), Reject>, &[Event], &Engine) -> Result<()> + 'a;

/// Reads records `1..=size` and applies each to a fresh engine, calling `f` with the
/// record's seq, payload, entry, outcome and events.
fn replay(
    data: &Path,
    size: u64,
    progress: &mut dyn FnMut(u64),
    f: &mut ReplayFn<'_>,
) -> Result<()> {
    let mut reader = JournalReader::open_with(StdFs, data, 1)
        .with_context(|| format!("reading the journal in {}", data.display()))?;
    let mut engine = Engine::new(Limits::DEFAULT);
    let mut events = Vec::new();
    let mut last = 0;
    while let Some(r) = reader.next_ref() {
        let r = r.with_context(|| format!("reading the journal in {}", data.display()))?;
        if r.seq > size {
            break;
        }
        let entry = codec::decode(r.payload)
            .map_err(|e| anyhow!("journal record {} cannot be decoded: {e}", r.seq))?;
        events.clear();
        let outcome = engine.apply(&entry.command, entry.ctx(r.seq), &mut events);
        f(r.seq, r.payload, &entry, outcome, &events, &engine)?;
        last = r.seq;
        if last.is_multiple_of(4096) {
            progress(last);
        }
    }
    progress(last);
    if last < size {
        bail!("the journal ends at seq {last} but the checkpoint covers {size} records");
    }
    Ok(())
}

/// The customers, deposits, withdrawals and batches an export is about.
#[derive(Debug, Default)]
struct Subjects {
    /// Customers exported in full.
    users: BTreeSet<u32>,
    /// Owners of the selected deposits and withdrawals: identity, and balance changes
    /// in selected records.
    related: BTreeSet<u32>,
    /// Deposit references (`txid:vout`).
    refs: BTreeSet<String>,
    /// Withdrawal id → owner.
    withdrawals: BTreeMap<String, u32>,
    /// A customer's name not yet seen (`--account NAME`).
    pending_name: Option<String>,
}

impl Subjects {
    fn any_user(&self, u: u32) -> bool {
        self.users.contains(&u) || self.related.contains(&u)
    }
}

/// Deposit wallets and the addresses they gave out.
struct Wallets {
    network: Network,
    descriptors: Vec<Option<WatchDescriptor>>,
}

impl std::fmt::Debug for Wallets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallets")
            .field("network", &self.network)
            .field("count", &self.descriptors.len())
            .finish()
    }
}

impl Wallets {
    fn register(&mut self, wallet: u32, descriptor: &str) {
        let i = wallet as usize;
        if self.descriptors.len() <= i {
            self.descriptors.resize(i + 1, None);
        }
        self.descriptors[i] = parse_descriptor(descriptor).ok();
    }
    fn address(&self, wallet: u32, index: u32) -> String {
        match self
            .descriptors
            .get(wallet as usize)
            .and_then(Option::as_ref)
        {
            Some(d) => d
                .at(index, self.network)
                .map(|(_, a)| a.to_string())
                .unwrap_or_else(|e| format!("wallet {wallet} index {index} ({e})")),
            None => format!("wallet {wallet} index {index}"),
        }
    }
}

/// The network addresses are shown for.
fn pick_network(data: &Path, given: Option<Network>, first_descriptor: Option<&str>) -> Network {
    if let Some(n) = given {
        return n;
    }
    if data.join("devnet").exists() {
        return Network::Regtest;
    }
    match first_descriptor {
        Some(d) if d.contains("tpub") => Network::Testnet,
        _ => Network::Bitcoin,
    }
}

/// The first registered wallet descriptor, to guess the network from.
fn first_descriptor(data: &Path, size: u64) -> Result<Option<String>> {
    let mut reader = JournalReader::open_with(StdFs, data, 1)
        .with_context(|| format!("reading the journal in {}", data.display()))?;
    while let Some(r) = reader.next_ref() {
        let r = r.with_context(|| format!("reading the journal in {}", data.display()))?;
        if r.seq > size {
            break;
        }
        if let Ok(Entry {
            command: Command::RegisterWallet { descriptor, .. },
            ..
        }) = codec::decode(r.payload)
        {
            return Ok(Some(descriptor));
        }
    }
    Ok(None)
}

/// The txid as Bitcoin displays it, checked.
fn txid_arg(s: &str) -> Result<String> {
    let t = s.trim().to_ascii_lowercase();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--txid {s:?} is not 64 hex digits");
    }
    Ok(t)
}

/// First pass for `--address` and `--txid`: who and what the selector points at.
fn resolve(
    opts: &ExportOptions,
    size: u64,
    wallets: &mut Wallets,
    progress: &mut dyn FnMut(ExportProgress),
    scanned: &mut u64,
) -> Result<Subjects> {
    let mut s = Subjects::default();
    let mut owner_of: HashMap<String, u32> = HashMap::new();
    let (address, txid) = match &opts.selector {
        Selector::Address(a) => (Some(a.trim().to_owned()), None),
        Selector::Txid(t) => (None, Some(txid_arg(t)?)),
        Selector::Account(_) => return Ok(s),
    };
    let same_address = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    replay(
        &opts.data,
        size,
        &mut |done| {
            progress(ExportProgress {
                phase: Phase::Resolve,
                done,
                total: size,
            })
        },
        &mut |_seq, _payload, entry, outcome, events, engine| {
            *scanned += 1;
            if outcome.is_err() {
                return Ok(());
            }
            for e in events {
                match &e.kind {
                    EventKind::WalletRegistered {
                        wallet, descriptor, ..
                    } => wallets.register(*wallet, descriptor),
                    EventKind::DepositAddressAssigned {
                        user,
                        wallet,
                        index,
                        ..
                    } => {
                        if let Some(a) = &address {
                            if same_address(&wallets.address(*wallet, *index), a) {
                                s.users.insert(user.0);
                            }
                        }
                    }
                    EventKind::WithdrawalRequested { user, id, .. } => {
                        owner_of.insert(id.clone(), user.0);
                        if let (
                            Some(a),
                            Command::RequestChainWithdrawal {
                                address: dest, id, ..
                            },
                        ) = (&address, &entry.command)
                        {
                            if same_address(dest, a) {
                                s.withdrawals.insert(id.clone(), user.0);
                                s.related.insert(user.0);
                            }
                        }
                    }
                    EventKind::Deposited {
                        user, reference, ..
                    } => {
                        if let Some(t) = &txid {
                            if reference
                                .split_once(':')
                                .is_some_and(|(tx, _)| tx.eq_ignore_ascii_case(t))
                            {
                                s.refs.insert(reference.clone());
                                s.related.insert(user.0);
                            }
                        }
                    }
                    EventKind::WithdrawalBatchBuilt {
                        batch, txid: built, ..
                    }
                    | EventKind::WithdrawalBatchBumped {
                        batch, txid: built, ..
                    }
                    | EventKind::WithdrawalBatchFinished {
                        batch, txid: built, ..
                    } => {
                        let Some(t) = &txid else { continue };
                        let spends = match &e.kind {
                            EventKind::WithdrawalBatchBuilt { inputs, .. } => {
                                inputs.iter().any(|o| codec::txid_text(&o.txid) == *t)
                            }
                            _ => false,
                        };
                        if codec::txid_text(built) == *t || spends {
                            if let Some(b) = engine.withdrawal_batch(*batch) {
                                for id in &b.withdrawals {
                                    if let Some(&u) = owner_of.get(id) {
                                        s.withdrawals.insert(id.clone(), u);
                                        s.related.insert(u);
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        },
    )?;
    if s.users.is_empty() && s.withdrawals.is_empty() && s.refs.is_empty() {
        bail!(
            "nothing in the journal's records 1..={size} matches --{} {}",
            opts.selector.kind(),
            opts.selector.value()
        );
    }
    // A full subject is not also a related one.
    let users = s.users.clone();
    s.related.retain(|u| !users.contains(u));
    Ok(s)
}

/// One exported record before it is written.
#[derive(Debug)]
struct Selected {
    seq: u64,
    payload: Vec<u8>,
    leaf: Hash,
    outcome: String,
    issuer: Option<u32>,
    key: Option<String>,
    events: Vec<Value>,
}

/// The second pass's running knowledge.
#[derive(Debug, Default)]
struct Tracker {
    /// API key number → (owner, key id), for subject customers.
    keys: HashMap<u64, (u32, String)>,
    /// (user, asset) → (available, held), for subject customers.
    balances: HashMap<(u32, u16), (u64, u64)>,
    /// (user, asset) → deposit addresses given out, for subject customers.
    addresses: HashMap<(u32, u16), Vec<String>>,
    /// Tracked batches: id → (asset, members (id, owner)).
    batches: BTreeMap<u64, (u16, Vec<(String, u32)>)>,
    /// Deposits credited by the chain task waiting for the next reconciliation of their
    /// asset: (index in the selection, event index, asset).
    pending_tip: Vec<(usize, usize, u16)>,
    /// Whether a full subject was ever created (`--account ID` must exist).
    seen_users: BTreeSet<u32>,
}

fn side_text(s: kura_engine::Side) -> &'static str {
    match s {
        kura_engine::Side::Buy => "BUY",
        kura_engine::Side::Sell => "SELL",
    }
}

fn tif_text(t: kura_engine::TimeInForce) -> &'static str {
    match t {
        kura_engine::TimeInForce::Gtc => "GTC",
        kura_engine::TimeInForce::Ioc => "IOC",
        kura_engine::TimeInForce::Fok => "FOK",
    }
}

fn members_json(members: &[(String, u32)]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|(id, u)| json!({"id": id, "user": u}))
            .collect(),
    )
}

/// The JSON of an event that concerns the subjects, or `None`. Updates the tracker.
fn keep_event(
    e: &Event,
    subjects: &mut Subjects,
    t: &mut Tracker,
    wallets: &mut Wallets,
) -> Option<Value> {
    let full = |u: &kura_units::UserId, s: &Subjects| s.users.contains(&u.0);
    match &e.kind {
        EventKind::AssetAdded { asset, symbol } => {
            Some(json!({"type": "asset_added", "asset": asset.0, "symbol": symbol}))
        }
        EventKind::MarketAdded { market, symbol } => {
            Some(json!({"type": "market_added", "market": market.0, "symbol": symbol}))
        }
        EventKind::UserCreated { user } => {
            if full(user, subjects) {
                t.seen_users.insert(user.0);
            }
            subjects
                .any_user(user.0)
                .then(|| json!({"type": "user_created", "user": user.0}))
        }
        EventKind::UserNamed { user, name } => subjects
            .any_user(user.0)
            .then(|| json!({"type": "user_named", "user": user.0, "name": name})),
        EventKind::ApiKeyCreated { user, number, key } => {
            if !subjects.any_user(user.0) {
                return None;
            }
            t.keys.insert(*number, (user.0, key.clone()));
            Some(json!({"type": "api_key_created", "user": user.0, "number": number, "key": key}))
        }
        EventKind::ApiKeyRevoked { user, number, key } => subjects.any_user(user.0).then(
            || json!({"type": "api_key_revoked", "user": user.0, "number": number, "key": key}),
        ),
        EventKind::FeeTierSet { user, tier } => full(user, subjects)
            .then(|| json!({"type": "fee_tier_set", "user": user.0, "tier": tier})),
        EventKind::Deposited {
            user,
            asset,
            amount,
            reference,
        } => (full(user, subjects) || subjects.refs.contains(reference)).then(|| {
            let addresses = t
                .addresses
                .get(&(user.0, asset.0))
                .cloned()
                .unwrap_or_default();
            json!({"type": "deposited", "user": user.0, "asset": asset.0,
                   "amount": amount.get(), "reference": reference,
                   "addresses": addresses, "tip_height": null})
        }),
        EventKind::DepositReversed {
            user,
            asset,
            amount,
            deficit,
            reference,
            reason,
        } => (full(user, subjects) || subjects.refs.contains(reference)).then(|| {
            json!({"type": "deposit_reversed", "user": user.0, "asset": asset.0,
                   "amount": amount.get(), "deficit": deficit.get(),
                   "reference": reference, "reason": reason})
        }),
        EventKind::DeficitRepaid {
            user,
            asset,
            amount,
            remaining,
        } => full(user, subjects).then(|| {
            json!({"type": "deficit_repaid", "user": user.0, "asset": asset.0,
                   "amount": amount.get(), "remaining": remaining.get()})
        }),
        EventKind::WalletRegistered {
            wallet, descriptor, ..
        } => {
            wallets.register(*wallet, descriptor);
            None
        }
        EventKind::DepositAddressAssigned {
            user,
            asset,
            wallet,
            index,
        } => {
            if !subjects.any_user(user.0) {
                return None;
            }
            let address = wallets.address(*wallet, *index);
            t.addresses
                .entry((user.0, asset.0))
                .or_default()
                .push(address.clone());
            full(user, subjects).then(|| {
                json!({"type": "deposit_address_assigned", "user": user.0, "asset": asset.0,
                       "wallet": wallet, "index": index, "address": address})
            })
        }
        EventKind::WithdrawalRequested {
            user,
            asset,
            amount,
            id,
        } => {
            if full(user, subjects) {
                subjects.withdrawals.insert(id.clone(), user.0);
            }
            subjects.withdrawals.contains_key(id).then(|| {
                json!({"type": "withdrawal_requested", "user": user.0, "asset": asset.0,
                       "amount": amount.get(), "id": id})
            })
        }
        EventKind::WithdrawalSettled {
            user,
            asset,
            amount,
            id,
        }
        | EventKind::WithdrawalCancelled {
            user,
            asset,
            amount,
            id,
        } => subjects.withdrawals.contains_key(id).then(|| {
            let kind = if matches!(e.kind, EventKind::WithdrawalSettled { .. }) {
                "withdrawal_settled"
            } else {
                "withdrawal_cancelled"
            };
            json!({"type": kind, "user": user.0, "asset": asset.0, "amount": amount.get(),
                   "id": id})
        }),
        EventKind::WithdrawalRouted {
            id,
            address,
            fee,
            release_ms,
            review,
        } => subjects.withdrawals.get(id).map(|u| {
            json!({"type": "withdrawal_routed", "user": u, "id": id, "address": address,
                   "fee": fee.get(), "release_ms": release_ms, "review": review})
        }),
        EventKind::WithdrawalApproved { id } => subjects
            .withdrawals
            .get(id)
            .map(|u| json!({"type": "withdrawal_approved", "user": u, "id": id})),
        EventKind::WithdrawalAddressAdded {
            user,
            asset,
            address,
            usable_from_ms,
        } => full(user, subjects).then(|| {
            json!({"type": "withdrawal_address_added", "user": user.0, "asset": asset.0,
                   "address": address, "usable_from_ms": usable_from_ms})
        }),
        EventKind::WithdrawalBatchBuilt {
            batch,
            asset,
            withdrawals,
            inputs,
            txid,
            network_fee,
            ..
        } => {
            let members: Vec<(String, u32)> = withdrawals
                .iter()
                .filter_map(|id| subjects.withdrawals.get(id).map(|u| (id.clone(), *u)))
                .collect();
            if members.is_empty() {
                return None;
            }
            let v = json!({"type": "withdrawal_batch_built", "batch": batch, "asset": asset.0,
                   "withdrawals": members_json(&members),
                   "inputs": inputs.iter().map(codec::outpoint_text).collect::<Vec<_>>(),
                   "txid": codec::txid_text(txid), "network_fee": network_fee.get()});
            t.batches.insert(*batch, (asset.0, members));
            Some(v)
        }
        // A transfer between our own wallets, and a solvency epoch's roots, concern no
        // customer in particular.
        EventKind::TransferBuilt { .. }
        | EventKind::TransferAbandoned { .. }
        | EventKind::SolvencyRecorded { .. } => None,
        EventKind::WithdrawalBatchBumped {
            batch,
            txid,
            network_fee,
        } => t.batches.get(batch).map(|(asset, members)| {
            json!({"type": "withdrawal_batch_bumped", "batch": batch, "asset": asset,
                   "withdrawals": members_json(members), "txid": codec::txid_text(txid),
                   "network_fee": network_fee.get()})
        }),
        EventKind::WithdrawalBatchFinished {
            batch,
            txid,
            height,
            network_fee,
            paid,
        } => t.batches.get(batch).map(|(asset, members)| {
            json!({"type": "withdrawal_batch_finished", "batch": batch, "asset": asset,
                   "withdrawals": members_json(members), "txid": codec::txid_text(txid),
                   "height": height, "network_fee": network_fee.get(), "paid": paid})
        }),
        EventKind::Adjusted {
            user,
            asset,
            delta,
            reason,
        } => full(user, subjects).then(|| {
            json!({"type": "adjusted", "user": user.0, "asset": asset.0,
                   "delta": delta.get().to_string(), "reason": reason})
        }),
        EventKind::BalanceChanged {
            user,
            asset,
            available,
            held,
        } => {
            if !subjects.any_user(user.0) {
                return None;
            }
            let before = t
                .balances
                .insert((user.0, asset.0), (available.get(), held.get()))
                .unwrap_or((0, 0));
            Some(
                json!({"type": "balance_changed", "user": user.0, "asset": asset.0,
                        "available_before": before.0, "held_before": before.1,
                        "available": available.get(), "held": held.get()}),
            )
        }
        EventKind::OrderAccepted {
            market,
            order,
            user,
            side,
            price,
            qty,
            quote_budget,
            tif,
            post_only,
            is_market,
            client_id,
            hold,
        } => full(user, subjects).then(|| {
            json!({"type": "order_accepted", "user": user.0, "market": market.0,
                   "order": order.0, "side": side_text(*side), "price": price.get(),
                   "qty": qty.get(), "quote_budget": quote_budget.map(|b| b.get()),
                   "tif": tif_text(*tif), "post_only": post_only, "is_market": is_market,
                   "client_id": client_id.as_ref().map(|c| c.as_str()), "hold": hold.get()})
        }),
        EventKind::OrderRested {
            market,
            order,
            user,
            remaining,
        } => full(user, subjects).then(|| {
            json!({"type": "order_rested", "user": user.0, "market": market.0,
                   "order": order.0, "remaining": remaining.get()})
        }),
        EventKind::OrderFilled {
            market,
            order,
            user,
        } => full(user, subjects).then(|| {
            json!({"type": "order_filled", "user": user.0, "market": market.0,
                   "order": order.0})
        }),
        EventKind::OrderCancelled {
            market,
            order,
            user,
            remaining,
            reason,
        } => full(user, subjects).then(|| {
            let reason = match reason {
                kura_engine::CancelReason::ByUser => "by_user",
                kura_engine::CancelReason::CancelAll => "cancel_all",
                kura_engine::CancelReason::SelfTradePrevention => "self_trade_prevention",
            };
            json!({"type": "order_cancelled", "user": user.0, "market": market.0,
                   "order": order.0, "remaining": remaining.get(), "reason": reason})
        }),
        EventKind::OrderExpired {
            market,
            order,
            user,
            remaining,
            reason,
        } => full(user, subjects).then(|| {
            let reason = match reason {
                kura_engine::ExpireReason::NoLiquidity => "no_liquidity",
                kura_engine::ExpireReason::FokUnfillable => "fok_unfillable",
                kura_engine::ExpireReason::SelfTradePrevention => "self_trade_prevention",
            };
            json!({"type": "order_expired", "user": user.0, "market": market.0,
                   "order": order.0, "remaining": remaining.get(), "reason": reason})
        }),
        EventKind::OrderAmended {
            market,
            order,
            user,
            price,
            remaining,
            kept_priority,
        } => full(user, subjects).then(|| {
            json!({"type": "order_amended", "user": user.0, "market": market.0,
                   "order": order.0, "price": price.get(), "remaining": remaining.get(),
                   "kept_priority": kept_priority})
        }),
        EventKind::Trade {
            market,
            trade,
            price,
            qty,
            quote_qty,
            maker_order,
            taker_order,
            maker_user,
            taker_user,
            taker_side,
            maker_fee,
            taker_fee,
        } => (full(maker_user, subjects) || full(taker_user, subjects)).then(|| {
            json!({"type": "trade", "market": market.0, "trade": trade.0,
                   "price": price.get(), "qty": qty.get(), "quote_qty": quote_qty.get(),
                   "maker_order": maker_order.0, "taker_order": taker_order.0,
                   "maker_user": maker_user.0, "taker_user": taker_user.0,
                   "taker_side": side_text(*taker_side), "maker_fee": maker_fee.get(),
                   "taker_fee": taker_fee.get()})
        }),
        EventKind::Reconciled { .. }
        | EventKind::MarketHalted { .. }
        | EventKind::MarketResumed { .. }
        | EventKind::WithdrawalsHalted { .. }
        | EventKind::WithdrawalsResumed { .. }
        | EventKind::WithdrawalPolicySet { .. } => None,
    }
}

/// Commands whose records are exported whatever their time: they create the customer
/// or a key, or define assets and markets.
fn always_exported(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::CreateUser
            | Command::RegisterUser { .. }
            | Command::CreateApiKey { .. }
            | Command::RevokeApiKey { .. }
            | Command::AddAsset { .. }
            | Command::AddMarket { .. }
    )
}

/// Runs an export. See the module documentation.
pub fn export(
    opts: &ExportOptions,
    progress: &mut dyn FnMut(ExportProgress),
) -> Result<ExportStats> {
    let started = Instant::now();
    if let (Some(f), Some(t)) = (opts.from_ms, opts.to_ms) {
        if f > t {
            bail!("--from is after --to");
        }
    }
    prepare_out(&opts.out)?;

    // The checkpoint the bundle is proven against.
    let signed: SignedCheckpoint = match opts.checkpoint {
        Some(size) => {
            let _lock = audit::AuditLock::shared(&opts.data)?;
            let key = audit::load_key(&opts.data)?;
            audit::load_checkpoint(&opts.data, size, &key)?
        }
        None => {
            audit::make_checkpoint(&opts.data, false, &mut |p| {
                progress(ExportProgress {
                    phase: Phase::Checkpoint,
                    done: p.bytes_done,
                    total: p.bytes_total,
                })
            })?
            .signed
        }
    };
    let key = audit::load_key(&opts.data)?;
    let verifier_key = key.verifier().to_string();
    audit::open_checkpoint(&signed.note, key.verifier())
        .context("the checkpoint does not verify with the node's key")?;
    let size = signed.checkpoint.size;

    let network = pick_network(
        &opts.data,
        opts.network,
        first_descriptor(&opts.data, size)?.as_deref(),
    );
    let mut wallets = Wallets {
        network,
        descriptors: Vec::new(),
    };
    let mut scanned = 0u64;
    let mut subjects = match &opts.selector {
        Selector::Account(a) => {
            let mut s = Subjects::default();
            let a = a.trim();
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) {
                s.users.insert(
                    a.parse()
                        .map_err(|_| anyhow!("--account {a}: not a user id"))?,
                );
            } else {
                s.pending_name = Some(a.to_owned());
            }
            s
        }
        _ => {
            let s = resolve(opts, size, &mut wallets, progress, &mut scanned)?;
            wallets.descriptors.clear();
            s
        }
    };

    // The main pass.
    let mut t = Tracker::default();
    let mut log = Prover::default();
    let mut selected: Vec<Selected> = Vec::new();
    let mut tips: BTreeMap<u16, u32> = BTreeMap::new();
    let (from, to) = (opts.from_ms.unwrap_or(0), opts.to_ms.unwrap_or(u64::MAX));
    replay(
        &opts.data,
        size,
        &mut |done| {
            progress(ExportProgress {
                phase: Phase::Scan,
                done,
                total: size,
            })
        },
        &mut |seq, payload, entry, outcome, events, _engine| {
            scanned += 1;
            let leaf = audit::record_leaf_hash(seq, payload);
            log.append(leaf);
            if let Some(name) = &subjects.pending_name {
                for e in events {
                    if let EventKind::UserNamed { user, name: n } = &e.kind {
                        if n == name {
                            subjects.users.insert(user.0);
                            subjects.pending_name = None;
                            break;
                        }
                    }
                }
            }
            let mut kept = Vec::new();
            for e in events {
                if let EventKind::Reconciled { asset, height, .. } = &e.kind {
                    tips.insert(asset.0, *height);
                    t.pending_tip.retain(|&(sel, ev, a)| {
                        if a != asset.0 {
                            return true;
                        }
                        if let Some(v) = selected
                            .get_mut(sel)
                            .and_then(|s| s.events.get_mut(ev))
                            .and_then(Value::as_object_mut)
                        {
                            v.insert("tip_height".into(), json!(height));
                        }
                        false
                    });
                }
                if let Some(v) = keep_event(e, &mut subjects, &mut t, &mut wallets) {
                    kept.push(v);
                }
            }
            // A related customer's balance changes are kept only with what selected them.
            let substantive = kept.iter().any(|v| {
                let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
                ty != "balance_changed" && ty != "asset_added" && ty != "market_added"
            });
            if !substantive {
                kept.retain(|v| {
                    let user = v.get("user").and_then(Value::as_u64).unwrap_or(u64::MAX);
                    u32::try_from(user).is_ok_and(|u| subjects.users.contains(&u))
                        || v.get("type").and_then(Value::as_str) != Some("balance_changed")
                });
            }
            let (issuer, key) = match &entry.origin {
                Origin::Api { key_id, .. } => match t.keys.get(key_id) {
                    Some((u, k)) => (Some(*u), Some(k.clone())),
                    None => (None, None),
                },
                _ => (None, None),
            };
            let in_range = (from..=to).contains(&entry.ctx_timestamp_ms);
            let issued_by_subject = issuer.is_some_and(|u| subjects.users.contains(&u));
            let take = if always_exported(&entry.command) {
                !kept.is_empty()
            } else {
                in_range && (issued_by_subject || !kept.is_empty())
            };
            if !take {
                return Ok(());
            }
            let index = selected.len();
            for (i, v) in kept.iter().enumerate() {
                if v.get("type").and_then(Value::as_str) == Some("deposited")
                    && matches!(entry.origin, Origin::Internal)
                {
                    let asset = v.get("asset").and_then(Value::as_u64).unwrap_or(0);
                    t.pending_tip
                        .push((index, i, u16::try_from(asset).unwrap_or(u16::MAX)));
                }
            }
            // An issuer who is only related (not exported in full) is named only where
            // the record is selected anyway.
            let issuer = issuer.filter(|u| subjects.any_user(*u));
            let key = if issuer.is_some() { key } else { None };
            selected.push(Selected {
                seq,
                payload: payload.to_vec(),
                leaf,
                outcome: match outcome {
                    Ok(()) => "ok".into(),
                    Err(r) => format!("rejected: {}", r.message()),
                },
                issuer,
                key,
                events: kept,
            });
            Ok(())
        },
    )?;
    if let Some(name) = &subjects.pending_name {
        bail!("no customer named {name:?} in the journal's records 1..={size}");
    }
    for u in &subjects.users {
        if !t.seen_users.contains(u) {
            bail!("no customer with id {u} in the journal's records 1..={size}");
        }
    }
    if log.size() != size || log.root() != Some(signed.checkpoint.root) {
        bail!(
            "the journal's records 1..={size} do not give the root signed in {} (the \
             journal was changed after the checkpoint)",
            signed.path.display()
        );
    }

    // Rows, through the same derivation the verifier runs.
    let mut ctx = derive::Context::default();
    let mut rows = Rows::default();
    let mut entries = Vec::with_capacity(selected.len());
    for s in &selected {
        let entry = codec::decode(&s.payload)
            .map_err(|e| anyhow!("journal record {} cannot be decoded: {e}", s.seq))?;
        derive::derive(
            &mut ctx,
            &derive::RecordIn {
                seq: s.seq,
                entry: &entry,
                outcome: &s.outcome,
                issuer: s.issuer,
                key: s.key.as_deref(),
                events: &s.events,
            },
            &mut rows,
        )
        .context("deriving the export's rows")?;
        entries.push(entry);
    }

    // Files.
    let mut files = Vec::new();
    let mut bytes_written = 0u64;
    let mut records = Vec::new();
    for (s, entry) in selected.iter().zip(&entries) {
        let proof = log
            .inclusion_proof(s.seq - 1)
            .ok_or_else(|| anyhow!("no inclusion proof for record {}", s.seq))?;
        let line = json!({
            "seq": s.seq,
            "time": derive::time_text(entry.ctx_timestamp_ms),
            "payload": hex::encode(&s.payload),
            "leaf_hash": hex::encode(s.leaf),
            "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            "outcome": s.outcome,
            "issuer": s.issuer,
            "key": s.key,
            "events": s.events,
        });
        let mut l = serde_json::to_string(&line)?;
        l.push('\n');
        records.extend_from_slice(l.as_bytes());
    }
    bytes_written += write_file(&opts.out, RECORDS, &records)?;
    files.push(file_entry(RECORDS, &records, selected.len()));
    for (i, table) in TABLES.iter().enumerate() {
        let csv = render_csv(table.columns, &rows.tables[i])?;
        let jsonl = render_jsonl(table.columns, &rows.tables[i]);
        let (c, j) = (
            format!("{}.csv", table.name),
            format!("{}.jsonl", table.name),
        );
        bytes_written += write_file(&opts.out, &c, &csv)?;
        bytes_written += write_file(&opts.out, &j, &jsonl)?;
        files.push(file_entry(&c, &csv, rows.tables[i].len()));
        files.push(file_entry(&j, &jsonl, rows.tables[i].len()));
    }
    let asset_symbol = |a: u16| -> String {
        selected
            .iter()
            .flat_map(|s| &s.events)
            .find(|v| {
                v.get("type").and_then(Value::as_str) == Some("asset_added")
                    && v.get("asset").and_then(Value::as_u64) == Some(u64::from(a))
            })
            .and_then(|v| v.get("symbol").and_then(Value::as_str))
            .map_or_else(|| a.to_string(), str::to_owned)
    };
    let manifest = json!({
        "format": FORMAT,
        "selector": {"kind": opts.selector.kind(), "value": opts.selector.value()},
        "subjects": {
            "users": subjects.users,
            "related_users": subjects.related,
            "deposits": subjects.refs,
            "withdrawals": subjects.withdrawals.keys().collect::<Vec<_>>(),
            "batches": t.batches.keys().collect::<Vec<_>>(),
        },
        "time_range": {
            "from_ms": opts.from_ms,
            "to_ms": opts.to_ms,
            "from": opts.from_ms.map(derive::time_text),
            "to": opts.to_ms.map(derive::time_text),
        },
        "journal": {
            "checkpoint_size": size,
            "first_seq": selected.first().map(|s| s.seq),
            "last_seq": selected.last().map(|s| s.seq),
            "records": selected.len(),
        },
        "checkpoint": signed.note,
        "verifier_key": verifier_key,
        "network": network.to_string(),
        "chain_tip_height": tips.iter().map(|(a, h)| (asset_symbol(*a), json!(h)))
            .collect::<serde_json::Map<_, _>>(),
        "files": files,
    });
    let mut m = serde_json::to_string_pretty(&manifest)?;
    m.push('\n');
    bytes_written += write_file(&opts.out, MANIFEST, m.as_bytes())?;
    sync_dir(&opts.out)?;
    Ok(ExportStats {
        records_scanned: scanned,
        records_exported: selected.len() as u64,
        rows_written: rows.total(),
        bytes_written,
        checkpoint_size: size,
        elapsed: started.elapsed(),
        users: subjects.users.iter().copied().collect(),
    })
}

/// The Merkle tree of records `1..=size` and inclusion proofs against it (RFC 9162
/// §2.1.3.1). Like `kura_proofs::tlog::MerkleLog` it keeps every complete aligned
/// subtree (level `k` holds the hashes of subtrees of `2^k` leaves); in addition it keeps
/// the hashes of the incomplete subtrees along the tree's right edge, which every proof
/// against the same size shares, so that many proofs cost `O(log n)` lookups each rather
/// than `O(log² n)` hashes.
#[derive(Debug, Default)]
struct Prover {
    levels: Vec<Vec<Hash>>,
    edge: HashMap<(u64, u64), Hash>,
}

impl Prover {
    fn append(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut k = 0;
        loop {
            if self.levels.len() == k {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[k];
            level.push(h);
            let len = level.len();
            if len % 2 == 1 {
                break;
            }
            h = node_hash(&level[len - 2], &level[len - 1]);
            k += 1;
        }
    }

    fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The hash of leaves `start..start + n` (`n ≥ 1`, within the tree).
    fn subtree(&mut self, start: u64, n: u64) -> Option<Hash> {
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = self.levels.get(n.trailing_zeros() as usize)?;
            return level.get(usize::try_from(start / n).ok()?).copied();
        }
        if n < 2 {
            return None;
        }
        if let Some(h) = self.edge.get(&(start, n)) {
            return Some(*h);
        }
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        let left = self.subtree(start, k)?;
        let right = self.subtree(start + k, n - k)?;
        let h = node_hash(&left, &right);
        self.edge.insert((start, n), h);
        Some(h)
    }

    fn root(&mut self) -> Option<Hash> {
        let n = self.size();
        if n == 0 {
            return None;
        }
        self.subtree(0, n)
    }

    /// The inclusion proof of leaf `index` in the whole tree, bottom first.
    fn inclusion_proof(&mut self, index: u64) -> Option<Vec<Hash>> {
        let size = self.size();
        if index >= size {
            return None;
        }
        let mut out = Vec::new();
        let (mut m, mut start, mut n) = (index, 0u64, size);
        // Top-down, then reversed: RFC 9162's PATH lists the deepest sibling first.
        while n > 1 {
            let k = 1u64 << (63 - (n - 1).leading_zeros());
            if m < k {
                out.push(self.subtree(start + k, n - k)?);
                n = k;
            } else {
                out.push(self.subtree(start, k)?);
                m -= k;
                start += k;
                n -= k;
            }
        }
        out.reverse();
        Some(out)
    }
}

fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() {
        let mut entries =
            std::fs::read_dir(out).with_context(|| format!("listing {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: an export is written to a new directory",
                out.display()
            );
        }
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    Ok(())
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<u64> {
    let path = dir.join(name);
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes.len() as u64)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

fn file_entry(name: &str, bytes: &[u8], rows: usize) -> Value {
    json!({"name": name, "sha256": hex::encode(Sha256::digest(bytes)), "rows": rows})
}

/// The CSV of a table: a header line, then one record per row (RFC 4180 quoting, `\n`
/// line ends).
pub(crate) fn render_csv(columns: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(columns)?;
    for r in rows {
        w.write_record(r)?;
    }
    w.into_inner()
        .map_err(|e| anyhow!("writing CSV: {}", e.error()))
}

/// One JSON line of a table row: the columns in order, every value a string.
pub(crate) fn render_row_json(columns: &[&str], row: &[String]) -> String {
    let mut out = String::from("{");
    for (i, (c, v)) in columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(',');
        }
        codec::escape_into(c, &mut out);
        out.push(':');
        codec::escape_into(v, &mut out);
    }
    out.push('}');
    out
}

pub(crate) fn render_jsonl(columns: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let mut out = String::new();
    for r in rows {
        out.push_str(&render_row_json(columns, r));
        out.push('\n');
    }
    out.into_bytes()
}

/// Parses a network name (`bitcoin`, `testnet`, `signet`, `regtest`).
pub fn parse_network(s: &str) -> Result<Network> {
    Network::from_str(s).map_err(|_| anyhow!("unknown network {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_match_the_merkle_log() {
        use kura_proofs::tlog::{self, MerkleLog};
        for size in [1u64, 2, 3, 5, 8, 13, 64, 100] {
            let leaves: Vec<Hash> = (0..size)
                .map(|i| audit::record_leaf_hash(i + 1, &i.to_le_bytes()))
                .collect();
            let mut p = Prover::default();
            for l in &leaves {
                p.append(*l);
            }
            let log = MerkleLog::from_leaf_hashes(&leaves);
            assert_eq!(p.root(), Some(log.root()), "size {size}");
            for i in 0..size {
                let proof = p.inclusion_proof(i).expect("proof");
                assert_eq!(Some(&proof), log.inclusion_proof(i, size).as_ref());
                assert!(
                    tlog::verify_inclusion(&leaves[i as usize], i, size, &proof, &log.root())
                        .is_ok()
                );
            }
            assert!(p.inclusion_proof(size).is_none());
        }
    }

    #[test]
    fn times_parse_as_ms_or_rfc3339() {
        assert_eq!(parse_time("1700000000123").ok(), Some(1_700_000_000_123));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123Z").ok(),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_time("2023-11-15T07:13:20+09:00").ok(),
            Some(1_700_000_000_000)
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn json_rows_escape_and_keep_column_order() {
        let line = render_row_json(&["seq", "b"], &["1".into(), "x\"\n".into()]);
        assert_eq!(line, r#"{"seq":"1","b":"x\"\n"}"#);
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["b"], "x\"\n");
    }
}
