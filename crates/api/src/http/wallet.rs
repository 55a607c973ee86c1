//! Wallet: deposit addresses, deposit history, chain withdrawals and their history —
//! Binance's `sapi/v1/capital/*` calls behind CCXT's `fetch_deposit_address`,
//! `fetch_deposits`, `withdraw` and `fetch_withdrawals`.
//!
//! Chain facts (addresses, address checks, confirmations, deposits not credited yet)
//! come from [`Backend::chain`]; without a chain, or for a coin that is not the
//! chain's, no address is given and no withdrawal is taken (-4019), while the
//! histories still list what the books hold. Balances and withdrawals are the engine's;
//! history rows come from the read model.
//!
//! - Deposit address: the customer's (wallet, index) from the engine, assigned on the
//!   first call with `AssignDepositAddress` (a concurrent assignment that lost the race
//!   is refused with `DepositAddressAssigned`, and the address is read again), derived
//!   by the chain from the wallet's descriptor. One address per customer and asset,
//!   the same on every call.
//! - Withdraw: the address is checked by the chain (-4033 with its reason) and booked
//!   in its canonical text; `amount` is what leaves the balance, the exchange's fee
//!   included (exact at the asset's scale; more decimals are -1111). The withdrawal id
//!   is the idempotency key: `u<user>-<withdrawOrderId>` when the client names one, so
//!   customers cannot collide, else `s` and 24 hex digits of SHA-256 of the request's
//!   signature, so a replay of the same signed request is the same withdrawal. A
//!   request whose id exists answers that id when it is the same customer, amount and
//!   address, and is refused otherwise.
//! - Histories: newest first; `offset` and `limit` page through the rows that pass the
//!   filters. Without `startTime`/`endTime` every row is searched (Binance defaults to
//!   90 days). At most the newest [`SCAN_MAX`] rows of the time window are read, so
//!   with a `status`, `withdrawOrderId` or `idList` filter, or an `offset` that deep,
//!   older rows are not reached: narrow the window.

use super::{authenticate, decimal, json, limit_param, Fail, HttpResult, Req};
use crate::auth::Permission;
use crate::backend::{Backend, Chain, PendingDeposit};
use crate::errors::{Failure, Op, ParamError, WalletError};
use crate::params::Params;
use axum::extract::State;
use kura_engine::codec::Entry;
use kura_engine::{Command, Engine, Reject};
use kura_store::{DepositRow, WithdrawalRow, WithdrawalStatus};
use kura_units::{Amount, AssetId, Scale, UserId};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;

/// History rows when `limit` is not sent, and the most.
const HISTORY_LIMIT: u32 = 1_000;
/// The most rows of a time window a history call reads from the read model.
pub const SCAN_MAX: u32 = 10_000;
/// Longest `withdrawOrderId`.
const WITHDRAW_ORDER_ID_MAX: usize = 64;
/// Legal range of `withdrawOrderId`, quoted in its -1100 message.
pub const WITHDRAW_ORDER_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// Most ids in `idList`, and the longest id (the engine's reference limit).
const ID_LIST_MAX: usize = 1_000;
const ID_MAX: usize = 128;
/// Legal range of `idList`, quoted in its -1100 message.
pub const ID_LIST_PATTERN: &str = "^[^,]{1,128}(,[^,]{1,128}){0,999}$";
/// Binance's deposit statuses kura answers.
const DEPOSIT_PENDING: u64 = 0;
const DEPOSIT_CREDITED: u64 = 1;
const DEPOSIT_REVERSED: u64 = 7;
/// Binance's withdrawal statuses kura answers.
const WITHDRAW_CANCELLED: u64 = 1;
const WITHDRAW_AWAITING_APPROVAL: u64 = 2;
const WITHDRAW_PROCESSING: u64 = 4;
const WITHDRAW_COMPLETED: u64 = 6;

/// One asset, copied out of the engine.
#[derive(Clone, Debug)]
struct AssetInfo {
    id: AssetId,
    symbol: String,
    scale: Scale,
}

fn asset_info(e: &Engine, id: AssetId) -> Option<AssetInfo> {
    Some(AssetInfo {
        id,
        symbol: e.asset_symbol(id)?.to_owned(),
        scale: e.asset_scale(id)?,
    })
}

fn all_assets(e: &Engine) -> Vec<AssetInfo> {
    (0..e.asset_count())
        .filter_map(|i| u16::try_from(i).ok())
        .filter_map(|i| asset_info(e, AssetId(i)))
        .collect()
}

/// The descriptor and derivation index of `user`'s deposit address for `asset`.
fn derivation(e: &Engine, user: UserId, asset: AssetId) -> Option<(String, u32)> {
    let (wallet, index) = e.deposit_address(user, asset)?;
    let w = e.wallets().get(usize::try_from(wallet).ok()?)?;
    Some((w.descriptor.clone(), index))
}

fn wallet_reject(reject: Reject) -> Fail {
    Failure::Reject {
        reject,
        op: Op::Wallet,
    }
    .into()
}

/// `coin`, required: the asset it names (-4018 if none).
async fn coin<B: Backend>(b: &B, params: &Params) -> Result<AssetInfo, Fail> {
    let symbol = params.symbol("coin")?.to_owned();
    b.query(move |e| e.asset_by_symbol(&symbol).and_then(|id| asset_info(e, id)))
        .await?
        .ok_or_else(|| WalletError::UnknownCoin.into())
}

/// `coin`, optional.
async fn coin_opt<B: Backend>(b: &B, params: &Params) -> Result<Option<AssetInfo>, Fail> {
    match params.optional("coin") {
        None => Ok(None),
        Some(_) => coin(b, params).await.map(Some),
    }
}

/// The chain of `asset`, or `closed`.
fn chain_of<B: Backend>(
    b: &B,
    asset: &AssetInfo,
    closed: WalletError,
) -> Result<Arc<dyn Chain>, Fail> {
    match b.chain() {
        Some(chain) if chain.asset_symbol() == asset.symbol => Ok(chain),
        _ => Err(closed.into()),
    }
}

/// `network`, optional: when sent it must name the chain's network (which has the
/// asset's name).
fn check_network(params: &Params, chain: &dyn Chain) -> Result<(), Fail> {
    if params.optional("network").is_none() {
        return Ok(());
    }
    if params.symbol("network")? == chain.asset_symbol() {
        Ok(())
    } else {
        Err(ParamError::InvalidValue {
            name: "network".to_owned(),
        }
        .into())
    }
}

/// `offset` and `limit` of a history call.
#[derive(Clone, Copy, Debug)]
struct Page {
    offset: usize,
    limit: usize,
}

impl Page {
    fn parse(params: &Params) -> Result<Page, Fail> {
        let offset = params.u64_opt("offset")?.unwrap_or(0);
        let limit = limit_param(params, HISTORY_LIMIT, HISTORY_LIMIT)?;
        Ok(Page {
            offset: usize::try_from(offset).unwrap_or(usize::MAX),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        })
    }

    /// How many rows to read: enough for this page, or the most when rows are
    /// filtered after reading.
    fn fetch(&self, filtered: bool) -> u32 {
        let need = self.offset.saturating_add(self.limit);
        if filtered {
            SCAN_MAX
        } else {
            u32::try_from(need).unwrap_or(SCAN_MAX).min(SCAN_MAX)
        }
    }

    fn apply<T>(&self, rows: impl Iterator<Item = T>) -> Vec<T> {
        rows.skip(self.offset).take(self.limit).collect()
    }
}

// ---- deposit address -------------------------------------------------------------

pub(super) async fn deposit_address<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let p = &caller.params;
    let asset = coin(&b, p).await?;
    let chain = chain_of(&b, &asset, WalletError::DepositClosed)?;
    check_network(p, chain.as_ref())?;
    let (user, id) = (caller.user, asset.id);
    let mut slot = b.query(move |e| derivation(e, user, id)).await?;
    if slot.is_none() {
        let outcome = b
            .submit(Entry {
                ctx_timestamp_ms: b.now_ms(),
                origin: caller.origin.clone(),
                command: Command::AssignDepositAddress { user, asset: id },
            })
            .await?;
        match outcome.result {
            // Assigned now, or by a concurrent request: read it either way.
            Ok(_) | Err(Reject::DepositAddressAssigned) => {}
            Err(reject) => return Err(wallet_reject(reject)),
        }
        slot = b.query(move |e| derivation(e, user, id)).await?;
    }
    let (descriptor, index) = slot.ok_or(Failure::Internal)?;
    let address = chain.address_at(&descriptor, index).map_err(|error| {
        tracing::error!(%error, index, "api: cannot derive a deposit address");
        Fail::from(Failure::Internal)
    })?;
    json(json!({
        "coin": asset.symbol,
        "address": address,
        "tag": "",
        "url": "",
    }))
}

// ---- deposit history -------------------------------------------------------------

/// The txid of a `txid:vout` reference, if it is one.
fn outpoint_txid(reference: &str) -> Option<&str> {
    let (txid, vout) = reference.split_once(':')?;
    let ok = txid.len() == 64
        && txid.bytes().all(|b| b.is_ascii_hexdigit())
        && !vout.is_empty()
        && vout.len() <= 10
        && vout.bytes().all(|b| b.is_ascii_digit())
        && vout.parse::<u32>().is_ok();
    ok.then_some(txid)
}

/// One row of `capital/deposit/hisrec`.
#[derive(Debug)]
struct DepositView {
    id: String,
    amount: String,
    coin: String,
    network: String,
    status: u64,
    address: String,
    insert_ms: u64,
    confirmations: u32,
    required: u32,
}

impl DepositView {
    fn to_json(&self) -> Value {
        let tx_id = outpoint_txid(&self.id).unwrap_or(&self.id);
        json!({
            "id": self.id,
            "amount": self.amount,
            "coin": self.coin,
            "network": self.network,
            "status": self.status,
            "address": self.address,
            "addressTag": "",
            "txId": tx_id,
            "insertTime": self.insert_ms,
            "transferType": 0,
            "confirmTimes": format!("{}/{}", self.confirmations, self.required),
            "unlockConfirm": self.required,
            "walletType": 0,
        })
    }
}

/// What a deposit history needs from the engine.
#[derive(Debug)]
struct DepositFacts {
    assets: Vec<AssetInfo>,
    /// The customer's deposit address derivation for the chain's asset.
    slot: Option<(String, u32)>,
    /// Of the pending references sent, those the books already credit.
    credited: BTreeSet<String>,
}

pub(super) async fn deposit_history<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let p = &caller.params;
    let only = coin_opt(&b, p).await?;
    let status = p.u64_opt("status")?;
    let start_ms = p.u64_opt("startTime")?;
    let end_ms = p.u64_opt("endTime")?;
    let page = Page::parse(p)?;
    let user = caller.user;
    let now_ms = b.now_ms();
    let chain = b.chain();
    let chain_symbol = chain.as_ref().map(|c| c.asset_symbol().to_owned());
    let in_window = |ms: u64| start_ms.is_none_or(|s| ms >= s) && end_ms.is_none_or(|e| ms <= e);
    let wanted = |symbol: &str| only.as_ref().is_none_or(|a| a.symbol == symbol);
    // Seen on chain, not credited yet: listed as of now.
    let pending: Vec<PendingDeposit> = match &chain {
        Some(c) if wanted(c.asset_symbol()) && in_window(now_ms) => c.pending_deposits(user),
        _ => Vec::new(),
    };
    let refs: Vec<String> = pending.iter().map(|d| d.reference.clone()).collect();
    let facts = {
        let chain_symbol = chain_symbol.clone();
        b.query(move |e| {
            let chain_asset = chain_symbol.and_then(|s| e.asset_by_symbol(&s));
            DepositFacts {
                assets: all_assets(e),
                slot: chain_asset.and_then(|a| derivation(e, user, a)),
                credited: refs.into_iter().filter(|r| e.deposit_seen(r)).collect(),
            }
        })
        .await?
    };
    let filter_asset = only.as_ref().map(|a| a.id);
    let fetch = page.fetch(status.is_some());
    let mut rows: Vec<DepositRow> = b
        .read(move |s| s.deposits_between(user, filter_asset, start_ms, end_ms, fetch))
        .await??;
    rows.reverse();
    let own_address = match (&chain, &facts.slot) {
        (Some(c), Some((descriptor, index))) => c
            .address_at(descriptor, *index)
            .map_err(|error| tracing::warn!(%error, "api: cannot derive a deposit address"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let required = chain.as_ref().map_or(1, |c| c.confirmations());
    let pending_refs: BTreeSet<&str> = pending.iter().map(|d| d.reference.as_str()).collect();
    let mut views: Vec<DepositView> = Vec::new();
    if let (Some(c), Some(asset)) = (
        &chain,
        chain_symbol
            .as_deref()
            .and_then(|s| facts.assets.iter().find(|a| a.symbol == s)),
    ) {
        for d in pending
            .iter()
            .filter(|d| !facts.credited.contains(&d.reference))
        {
            views.push(DepositView {
                id: d.reference.clone(),
                amount: decimal(u128::from(d.amount.get()), asset.scale),
                coin: asset.symbol.clone(),
                network: c.asset_symbol().to_owned(),
                status: DEPOSIT_PENDING,
                address: d.address.clone(),
                insert_ms: now_ms,
                confirmations: d.confirmations,
                required,
            });
        }
    }
    for r in &rows {
        // A reversed deposit seen again on chain is listed once, as pending.
        if r.reversed && pending_refs.contains(r.reference.as_str()) {
            continue;
        }
        let Some(asset) = facts.assets.iter().find(|a| a.id == r.asset) else {
            continue;
        };
        let on_chain = chain_symbol.as_deref() == Some(asset.symbol.as_str());
        let outpoint = outpoint_txid(&r.reference).is_some();
        let (confirmations, required) = match (&chain, on_chain) {
            (Some(c), true) => {
                let fallback = if r.reversed { 0 } else { required };
                (
                    c.deposit_confirmations(&r.reference).unwrap_or(fallback),
                    required,
                )
            }
            _ => (1, 1),
        };
        views.push(DepositView {
            id: r.reference.clone(),
            amount: decimal(u128::from(r.amount.get()), asset.scale),
            coin: asset.symbol.clone(),
            network: if on_chain || outpoint {
                asset.symbol.clone()
            } else {
                String::new()
            },
            status: if r.reversed {
                DEPOSIT_REVERSED
            } else {
                DEPOSIT_CREDITED
            },
            address: if on_chain && outpoint {
                own_address.clone()
            } else {
                String::new()
            },
            insert_ms: r.time_ms,
            confirmations,
            required,
        });
    }
    let out = page.apply(
        views
            .iter()
            .filter(|v| status.is_none_or(|s| v.status == s))
            .map(DepositView::to_json),
    );
    json(Value::Array(out))
}

// ---- withdraw --------------------------------------------------------------------

/// `withdrawOrderId`, optional: at most 64 of `[A-Za-z0-9_-]`.
fn withdraw_order_id(params: &Params) -> Result<Option<&str>, Fail> {
    let Some(v) = params.optional("withdrawOrderId") else {
        return Ok(None);
    };
    let ok = v.len() <= WITHDRAW_ORDER_ID_MAX
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(Some(v))
    } else {
        Err(ParamError::IllegalChars {
            name: Some("withdrawOrderId".to_owned()),
            pattern: Some(WITHDRAW_ORDER_ID_PATTERN),
        }
        .into())
    }
}

/// The withdrawal id of a request: `u<user>-<withdrawOrderId>`, or `s` and 24 hex
/// digits of SHA-256 of the signature (hex signatures compared in lower case, as they
/// are verified), so a replayed request names the same withdrawal.
fn withdrawal_id(user: UserId, client_id: Option<&str>, signature: &str) -> String {
    match client_id {
        Some(c) => format!("u{}-{c}", user.0),
        None => {
            let normalized = if signature.bytes().all(|b| b.is_ascii_hexdigit()) {
                signature.to_ascii_lowercase()
            } else {
                signature.to_owned()
            };
            let digest = Sha256::digest(normalized.as_bytes());
            let mut id = String::with_capacity(25);
            id.push('s');
            id.push_str(&hex::encode(&digest[..12]));
            id
        }
    }
}

/// The client's `withdrawOrderId` in a withdrawal id of `user`, if it has one.
fn client_id_of(user: UserId, id: &str) -> Option<&str> {
    id.strip_prefix('u')?
        .strip_prefix(&user.0.to_string())?
        .strip_prefix('-')
}

pub(super) async fn withdraw<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Withdraw).await?;
    let p = &caller.params;
    // Binance checks presence before values.
    for name in ["coin", "address", "amount"] {
        p.required(name)?;
    }
    let asset = coin(&b, p).await?;
    let chain = chain_of(&b, &asset, WalletError::WithdrawClosed)?;
    check_network(p, chain.as_ref())?;
    let address = chain
        .check_address(p.required("address")?)
        .map_err(|reason| Fail::from(WalletError::IllegalAddress(reason)))?;
    let amount = Amount::new(p.decimal("amount", asset.scale)?);
    let client_id = withdraw_order_id(p)?;
    let signature = p.required("signature")?;
    let user = caller.user;
    let id = withdrawal_id(user, client_id, signature);
    let outcome = b
        .submit(Entry {
            ctx_timestamp_ms: b.now_ms(),
            origin: caller.origin.clone(),
            command: Command::RequestChainWithdrawal {
                user,
                asset: asset.id,
                amount,
                id: id.clone(),
                address: address.clone(),
            },
        })
        .await?;
    match outcome.result {
        Ok(_) => {}
        Err(Reject::DuplicateWithdrawal) => {
            let key = id.clone();
            let same = b
                .query(move |e| {
                    e.withdrawal(&key).is_some_and(|w| {
                        w.user == user
                            && w.asset == asset.id
                            && w.amount == amount
                            && w.address == address
                    })
                })
                .await?;
            if !same {
                return Err(match client_id {
                    Some(_) => ParamError::InvalidValue {
                        name: "withdrawOrderId".to_owned(),
                    }
                    .into(),
                    None => wallet_reject(Reject::DuplicateWithdrawal),
                });
            }
        }
        Err(reject) => return Err(wallet_reject(reject)),
    }
    json(json!({ "id": id }))
}

// ---- withdrawal history ----------------------------------------------------------

/// `idList`, optional: ids separated by commas.
fn id_list(params: &Params) -> Result<Option<BTreeSet<String>>, Fail> {
    let Some(v) = params.optional("idList") else {
        return Ok(None);
    };
    let ids: Vec<&str> = v.split(',').collect();
    let ok = ids.len() <= ID_LIST_MAX && ids.iter().all(|i| !i.is_empty() && i.len() <= ID_MAX);
    if ok {
        Ok(Some(ids.into_iter().map(str::to_owned).collect()))
    } else {
        Err(ParamError::IllegalChars {
            name: Some("idList".to_owned()),
            pattern: Some(ID_LIST_PATTERN),
        }
        .into())
    }
}

/// Binance's withdrawal status of a row.
fn withdraw_status(r: &WithdrawalRow) -> u64 {
    match r.status {
        WithdrawalStatus::Settled => WITHDRAW_COMPLETED,
        WithdrawalStatus::Cancelled => WITHDRAW_CANCELLED,
        WithdrawalStatus::Pending => match r.stage.as_str() {
            "REVIEW" => WITHDRAW_AWAITING_APPROVAL,
            "CONFIRMED" => WITHDRAW_COMPLETED,
            "CANCELLED" => WITHDRAW_CANCELLED,
            // APPROVED, BATCHED, OFF_CHAIN.
            _ => WITHDRAW_PROCESSING,
        },
    }
}

fn withdrawal_json(r: &WithdrawalRow, asset: &AssetInfo, on_chain: bool, user: UserId) -> Value {
    let status = withdraw_status(r);
    let mut out = Map::new();
    out.insert("id".into(), json!(r.id));
    out.insert(
        "amount".into(),
        json!(decimal(u128::from(r.amount.get()), asset.scale)),
    );
    out.insert(
        "transactionFee".into(),
        json!(decimal(u128::from(r.fee.get()), asset.scale)),
    );
    out.insert("coin".into(), json!(asset.symbol));
    out.insert("status".into(), json!(status));
    out.insert("address".into(), json!(r.address));
    out.insert("addressTag".into(), json!(""));
    out.insert("txId".into(), json!(r.txid.as_deref().unwrap_or("")));
    out.insert("applyTime".into(), json!(utc_text(r.requested_ms)));
    out.insert(
        "network".into(),
        json!(if on_chain { asset.symbol.as_str() } else { "" }),
    );
    out.insert("transferType".into(), json!(0));
    out.insert(
        "withdrawOrderId".into(),
        json!(client_id_of(user, &r.id).unwrap_or("")),
    );
    out.insert("info".into(), json!(""));
    // In a block: at least one confirmation (the API sees no chain tip to count more).
    out.insert("confirmNo".into(), json!(u32::from(r.height.is_some())));
    out.insert("walletType".into(), json!(0));
    out.insert("txKey".into(), json!(""));
    if status == WITHDRAW_COMPLETED {
        out.insert("completeTime".into(), json!(utc_text(r.updated_ms)));
    }
    Value::Object(out)
}

pub(super) async fn withdraw_history<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let p = &caller.params;
    let only = coin_opt(&b, p).await?;
    let client_id = withdraw_order_id(p)?.map(str::to_owned);
    let status = p.u64_opt("status")?;
    let start_ms = p.u64_opt("startTime")?;
    let end_ms = p.u64_opt("endTime")?;
    let ids = id_list(p)?;
    let page = Page::parse(p)?;
    let user = caller.user;
    let assets = b.query(all_assets).await?;
    let chain_symbol = b.chain().map(|c| c.asset_symbol().to_owned());
    let filter_asset = only.as_ref().map(|a| a.id);
    let filtered = status.is_some() || client_id.is_some() || ids.is_some();
    let fetch = page.fetch(filtered);
    let mut rows: Vec<WithdrawalRow> = b
        .read(move |s| s.withdrawals_between(user, filter_asset, start_ms, end_ms, fetch))
        .await??;
    rows.reverse();
    let out = page.apply(
        rows.iter()
            .filter(|r| status.is_none_or(|s| withdraw_status(r) == s))
            .filter(|r| {
                client_id
                    .as_deref()
                    .is_none_or(|c| client_id_of(user, &r.id) == Some(c))
            })
            .filter(|r| ids.as_ref().is_none_or(|set| set.contains(&r.id)))
            .filter_map(|r| {
                let asset = assets.iter().find(|a| a.id == r.asset)?;
                let on_chain = r.stage != "OFF_CHAIN"
                    || chain_symbol.as_deref() == Some(asset.symbol.as_str());
                Some(withdrawal_json(r, asset, on_chain, user))
            }),
    );
    json(Value::Array(out))
}

// ---- time ------------------------------------------------------------------------

/// The civil (proleptic Gregorian) date of a day count since 1970-01-01:
/// (year, month 1–12, day 1–31). H. Hinnant's `civil_from_days`, for days ≥ 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `ms` since the epoch as Binance's `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1_000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        s / 3_600,
        s % 3_600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_vectors() {
        let cases = [
            (0, "1970-01-01 00:00:00"),
            (999, "1970-01-01 00:00:00"),
            (951_782_400_000, "2000-02-29 00:00:00"),
            (1_700_000_000_000, "2023-11-14 22:13:20"),
            (1_709_251_199_000, "2024-02-29 23:59:59"),
            (4_102_444_799_999, "2099-12-31 23:59:59"),
            (253_402_300_799_999, "9999-12-31 23:59:59"),
        ];
        for (ms, text) in cases {
            assert_eq!(utc_text(ms), text, "{ms}");
        }
        // Far future: no overflow, no panic.
        assert!(utc_text(u64::MAX).starts_with("584556019-04-03 "));
    }

    /// Every day of 1970–2400 against a day-by-day count of the Gregorian calendar.
    #[test]
    fn civil_dates_match_a_calendar_walk() {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        let mut days = 0u64;
        while y < 2400 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
            days += 1;
        }
    }

    #[test]
    fn outpoints() {
        let txid = "ab".repeat(32);
        assert_eq!(outpoint_txid(&format!("{txid}:0")), Some(txid.as_str()));
        assert_eq!(
            outpoint_txid(&format!("{txid}:4294967295")),
            Some(txid.as_str())
        );
        for bad in [
            format!("{txid}:4294967296"),
            format!("{txid}:"),
            format!("{txid}:-1"),
            format!("{}:0", "ab".repeat(31)),
            format!("{}:0", "zz".repeat(32)),
            "memory-deposit-7".to_owned(),
            String::new(),
        ] {
            assert_eq!(outpoint_txid(&bad), None, "{bad}");
        }
    }

    #[test]
    fn withdrawal_ids() {
        let user = UserId(7);
        assert_eq!(withdrawal_id(user, Some("my-id_1"), "ff"), "u7-my-id_1");
        let a = withdrawal_id(user, None, &"AB".repeat(32));
        assert_eq!(a, withdrawal_id(user, None, &"ab".repeat(32)));
        assert_eq!(a.len(), 25);
        assert!(a.starts_with('s') && a[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, withdrawal_id(user, None, &"ac".repeat(32)));
        // Base64 (Ed25519) signatures keep their case.
        assert_ne!(
            withdrawal_id(user, None, "AbC+/="),
            withdrawal_id(user, None, "abc+/=")
        );
        assert_eq!(client_id_of(user, "u7-my-id_1"), Some("my-id_1"));
        assert_eq!(client_id_of(user, "u70-x"), None);
        assert_eq!(client_id_of(UserId(70), "u7-x"), None);
        assert_eq!(client_id_of(user, &a), None);
    }

    #[test]
    fn pages() {
        let page = Page {
            offset: 2,
            limit: 3,
        };
        assert_eq!(page.apply(0..10), vec![2, 3, 4]);
        assert_eq!(page.fetch(false), 5);
        assert_eq!(page.fetch(true), SCAN_MAX);
        let deep = Page {
            offset: usize::MAX,
            limit: 1000,
        };
        assert_eq!(deep.fetch(false), SCAN_MAX);
        assert!(deep.apply(0..10).is_empty());
    }
}
