//! Rows from records: the one function that both `kura export` (to write the tables) and
//! `kura export verify` (to check them) run, so that every row of every table is a
//! function of the bundle's records and nothing else.
//!
//! Input, per exported journal record in seq order: the decoded payload (the proven
//! bytes) and the exporter's annotation of what the engine did with it (its outcome, the
//! customer who issued it through an API key, and the events that concern the export's
//! subjects, as JSON; see the `export` module documentation). Output: zero or more rows
//! for each of the eight tables. Where a command and its events both say something (the
//! user a deposit credits, the amount, the symbol of an asset), they must agree, or the
//! derivation fails naming the record.

use anyhow::{anyhow, bail, Result};
use kura_engine::codec::{self, Entry, Origin};
use kura_engine::{Command, KeyScheme};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One table of the bundle: its file stem and its columns.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [&'static str],
}

pub const IDENTITY: usize = 0;
pub const ACCESS: usize = 1;
pub const ORDERS: usize = 2;
pub const TRADES: usize = 3;
pub const BALANCES: usize = 4;
pub const DEPOSITS: usize = 5;
pub const WITHDRAWALS: usize = 6;
pub const ADMIN: usize = 7;

/// The tables, in the order of the constants above.
pub const TABLES: [Table; 8] = [
    Table {
        name: "identity",
        columns: &[
            "seq",
            "time",
            "user",
            "event",
            "name",
            "key_number",
            "key_id",
            "key_scheme",
            "permissions",
            "ip_allow",
            "label",
            "asset",
            "address",
            "detail",
        ],
    },
    Table {
        name: "access",
        columns: &[
            "seq",
            "time",
            "user",
            "command",
            "key_number",
            "key_id",
            "ip",
            "user_agent",
            "outcome",
        ],
    },
    Table {
        name: "orders",
        columns: &[
            "seq",
            "time",
            "user",
            "market",
            "order_id",
            "event",
            "side",
            "type",
            "time_in_force",
            "price",
            "quantity",
            "remaining",
            "client_order_id",
            "detail",
        ],
    },
    Table {
        name: "trades",
        columns: &[
            "seq",
            "time",
            "market",
            "trade_id",
            "price",
            "quantity",
            "quote_quantity",
            "taker_side",
            "maker_user",
            "maker_order_id",
            "maker_fee",
            "taker_user",
            "taker_order_id",
            "taker_fee",
        ],
    },
    Table {
        name: "balances",
        columns: &[
            "seq",
            "time",
            "user",
            "asset",
            "available_before",
            "held_before",
            "available_after",
            "held_after",
            "change",
            "cause",
            "detail",
        ],
    },
    Table {
        name: "deposits",
        columns: &[
            "seq",
            "time",
            "user",
            "event",
            "asset",
            "amount",
            "reference",
            "txid",
            "vout",
            "address",
            "tip_height",
            "deficit",
            "reason",
        ],
    },
    Table {
        name: "withdrawals",
        columns: &[
            "seq",
            "time",
            "user",
            "withdrawal_id",
            "event",
            "asset",
            "amount",
            "fee",
            "destination",
            "state",
            "batch",
            "txid",
            "inputs",
            "height",
            "network_fee",
            "detail",
        ],
    },
    Table {
        name: "admin",
        columns: &[
            "seq", "time", "origin", "operator", "reason", "command", "user", "outcome", "detail",
        ],
    },
];

/// The rows of every table, in derivation order.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub tables: [Vec<Vec<String>>; 8],
}

impl Rows {
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|t| t.len() as u64).sum()
    }
}

#[derive(Clone, Debug)]
struct MarketInfo {
    symbol: String,
    base: u16,
    quote: u16,
    tick: u64,
    lot: u64,
}

/// What the records seen so far say about assets and markets (from the `AddAsset` and
/// `AddMarket` records every bundle carries).
#[derive(Clone, Debug, Default)]
pub struct Context {
    assets: BTreeMap<u16, (String, u8)>,
    markets: BTreeMap<u32, MarketInfo>,
}

/// One exported record as the derivation sees it.
#[derive(Debug)]
pub struct RecordIn<'a> {
    pub seq: u64,
    pub entry: &'a Entry,
    pub outcome: &'a str,
    pub issuer: Option<u32>,
    pub key: Option<&'a str>,
    pub events: &'a [Value],
}

/// `ms` as RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
pub fn time_text(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            ms % 1000
        ),
        Err(_) => format!("{ms}ms"),
    }
}

/// `v` minor units as a decimal with `scale` places (`-` for negative values).
pub fn decimal(v: i128, scale: u8) -> String {
    let neg = v < 0;
    let mag = v.unsigned_abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if scale == 0 {
        let _ = write!(out, "{mag}");
        return out;
    }
    let factor = 10u128.pow(u32::from(scale));
    let _ = write!(
        out,
        "{}.{:0width$}",
        mag / factor,
        mag % factor,
        width = usize::from(scale)
    );
    out
}

/// The customer a command is about, if it names one.
pub fn command_user(cmd: &Command) -> Option<u32> {
    match cmd {
        Command::SetFeeTier { user, .. }
        | Command::CreateApiKey { user, .. }
        | Command::Deposit { user, .. }
        | Command::RequestWithdrawal { user, .. }
        | Command::Adjust { user, .. }
        | Command::PlaceOrder { user, .. }
        | Command::CancelOrder { user, .. }
        | Command::CancelAll { user, .. }
        | Command::AmendOrder { user, .. }
        | Command::AssignDepositAddress { user, .. }
        | Command::AddWithdrawalAddress { user, .. }
        | Command::RequestChainWithdrawal { user, .. } => Some(user.0),
        _ => None,
    }
}

/// Reads fields of one event of a record, with errors naming the record and the event.
struct Ev<'a> {
    v: &'a Value,
    seq: u64,
    index: usize,
}

impl<'a> Ev<'a> {
    fn kind(&self) -> Result<&'a str> {
        self.v
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("record {} event {}: no `type`", self.seq, self.index))
    }
    fn field(&self, name: &str) -> Result<&'a Value> {
        self.v.get(name).ok_or_else(|| {
            anyhow!(
                "record {} event {} ({}): no field `{name}`",
                self.seq,
                self.index,
                self.kind().unwrap_or("?")
            )
        })
    }
    fn u64(&self, name: &str) -> Result<u64> {
        self.field(name)?.as_u64().ok_or_else(|| {
            anyhow!(
                "record {} event {}: `{name}` is not an unsigned integer",
                self.seq,
                self.index
            )
        })
    }
    fn str(&self, name: &str) -> Result<&'a str> {
        self.field(name)?.as_str().ok_or_else(|| {
            anyhow!(
                "record {} event {}: `{name}` is not a string",
                self.seq,
                self.index
            )
        })
    }
    fn bool(&self, name: &str) -> Result<bool> {
        self.field(name)?.as_bool().ok_or_else(|| {
            anyhow!(
                "record {} event {}: `{name}` is not a boolean",
                self.seq,
                self.index
            )
        })
    }
    /// An optional field: absent or null is `""`, a number or string its text.
    fn opt_text(&self, name: &str) -> String {
        match self.v.get(name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }
    fn u32(&self, name: &str) -> Result<u32> {
        u32::try_from(self.u64(name)?).map_err(|_| {
            anyhow!(
                "record {} event {}: `{name}` is too large",
                self.seq,
                self.index
            )
        })
    }
}

fn origin_name(o: &Origin) -> &'static str {
    match o {
        Origin::Internal => "internal",
        Origin::Operator { .. } => "operator",
        Origin::Admin { .. } => "admin",
        Origin::Api { .. } => "api",
    }
}

fn scheme_text(s: &KeyScheme) -> String {
    match s {
        KeyScheme::Hmac => "hmac".into(),
        KeyScheme::Ed25519(pk) => format!("ed25519:{}", hex::encode(pk)),
    }
}

fn permissions_text(p: &kura_engine::KeyPermissions) -> String {
    let mut v = Vec::new();
    if p.read {
        v.push("read");
    }
    if p.trade {
        v.push("trade");
    }
    if p.withdraw {
        v.push("withdraw");
    }
    v.join("+")
}

fn ip_ranges_text(r: &[kura_engine::IpRange]) -> String {
    r.iter()
        .map(|r| {
            let ip = codec::ip_from_bytes(r.addr);
            // An IPv4-mapped range is shown as IPv4 with the prefix over 32 bits.
            let prefix = if ip.is_ipv4() {
                r.prefix.saturating_sub(96)
            } else {
                r.prefix
            };
            format!("{ip}/{prefix}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Context {
    fn asset(&self, id: u64, seq: u64) -> Result<&(String, u8)> {
        u16::try_from(id)
            .ok()
            .and_then(|a| self.assets.get(&a))
            .ok_or_else(|| {
                anyhow!("record {seq}: asset {id} is unknown (no AddAsset record for it)")
            })
    }
    fn market(&self, id: u64, seq: u64) -> Result<&MarketInfo> {
        u32::try_from(id)
            .ok()
            .and_then(|m| self.markets.get(&m))
            .ok_or_else(|| {
                anyhow!("record {seq}: market {id} is unknown (no AddMarket record for it)")
            })
    }
    fn amount(&self, asset: u64, v: i128, seq: u64) -> Result<String> {
        let (_, scale) = self.asset(asset, seq)?;
        Ok(decimal(v, *scale))
    }
    /// A price in ticks as quote per whole base unit.
    fn price(&self, m: &MarketInfo, ticks: u64, seq: u64) -> Result<String> {
        let (_, scale) = self.asset(u64::from(m.quote), seq)?;
        let minor = i128::from(ticks) * i128::from(m.tick);
        Ok(decimal(minor, *scale))
    }
    fn qty(&self, m: &MarketInfo, lots: u64, seq: u64) -> Result<String> {
        let (_, scale) = self.asset(u64::from(m.base), seq)?;
        Ok(decimal(i128::from(lots) * i128::from(m.lot), *scale))
    }
}

fn mismatch(seq: u64, what: &str) -> anyhow::Error {
    anyhow!("record {seq}: the engine's events do not match the command's {what}")
}

/// Derives the rows of one record, appending them to `out`.
pub fn derive(ctx: &mut Context, r: &RecordIn<'_>, out: &mut Rows) -> Result<()> {
    let seq = r.seq;
    let cmd = &r.entry.command;
    let t = time_text(r.entry.ctx_timestamp_ms);
    let s = seq.to_string();
    let row = |cells: Vec<String>| -> Vec<String> {
        let mut v = Vec::with_capacity(cells.len() + 2);
        v.push(s.clone());
        v.push(t.clone());
        v.extend(cells);
        v
    };
    let cmd_user = command_user(cmd);

    // Who issued it: an API key of a subject customer.
    if r.issuer.is_some() != r.key.is_some() {
        bail!("record {seq}: an issuer needs its key and a key its issuer");
    }
    if let Some(issuer) = r.issuer {
        let Origin::Api {
            key_id,
            ip,
            user_agent,
        } = &r.entry.origin
        else {
            bail!("record {seq}: an issuer is named but the command did not come through the API");
        };
        if cmd_user.is_some_and(|u| u != issuer) {
            bail!(
                "record {seq}: the command is for user {} but its issuer is given as {issuer}",
                cmd_user.unwrap_or_default()
            );
        }
        out.tables[ACCESS].push(row(vec![
            issuer.to_string(),
            cmd.name().into(),
            key_id.to_string(),
            r.key.unwrap_or_default().into(),
            codec::ip_from_bytes(*ip).to_string(),
            user_agent.clone(),
            r.outcome.into(),
        ]));
    }
    if let Origin::Admin { operator, reason } = &r.entry.origin {
        out.tables[ADMIN].push(row(vec![
            "admin".into(),
            operator.clone(),
            reason.clone(),
            cmd.name().into(),
            admin_user(cmd_user, r.events),
            r.outcome.into(),
            command_json(r.entry)?,
        ]));
    } else if let Origin::Operator { name } = &r.entry.origin {
        out.tables[ADMIN].push(row(vec![
            origin_name(&r.entry.origin).into(),
            name.clone(),
            String::new(),
            cmd.name().into(),
            admin_user(cmd_user, r.events),
            r.outcome.into(),
            command_json(r.entry)?,
        ]));
    }

    for (index, v) in r.events.iter().enumerate() {
        let e = Ev { v, seq, index };
        let kind = e.kind()?;
        // The customer a command names must be the one its events are about.
        if let Some(u) = cmd_user {
            let own = matches!(
                kind,
                "deposited"
                    | "withdrawal_requested"
                    | "adjusted"
                    | "order_accepted"
                    | "fee_tier_set"
                    | "api_key_created"
                    | "deposit_address_assigned"
                    | "withdrawal_address_added"
            );
            if own && e.u64("user")? != u64::from(u) {
                return Err(mismatch(seq, "user"));
            }
        }
        match kind {
            "asset_added" => {
                let Command::AddAsset { symbol, scale } = cmd else {
                    return Err(mismatch(seq, "type"));
                };
                if e.str("symbol")? != symbol {
                    return Err(mismatch(seq, "symbol"));
                }
                let id = u16::try_from(e.u64("asset")?).map_err(|_| mismatch(seq, "asset"))?;
                ctx.assets.insert(id, (symbol.clone(), scale.places()));
            }
            "market_added" => {
                let Command::AddMarket { spec } = cmd else {
                    return Err(mismatch(seq, "type"));
                };
                if e.str("symbol")? != spec.symbol {
                    return Err(mismatch(seq, "symbol"));
                }
                ctx.markets.insert(
                    e.u32("market")?,
                    MarketInfo {
                        symbol: spec.symbol.clone(),
                        base: spec.base.0,
                        quote: spec.quote.0,
                        tick: spec.tick.get(),
                        lot: spec.lot.get(),
                    },
                );
            }
            "user_created"
            | "user_named"
            | "api_key_created"
            | "api_key_revoked"
            | "fee_tier_set"
            | "withdrawal_address_added" => identity_row(ctx, cmd, &e, kind, &row, out)?,
            "balance_changed" => {
                let asset = e.u64("asset")?;
                let (sym, _) = ctx.asset(asset, seq)?.clone();
                let (ab, hb, aa, ha) = (
                    e.u64("available_before")?,
                    e.u64("held_before")?,
                    e.u64("available")?,
                    e.u64("held")?,
                );
                let change = (i128::from(aa) + i128::from(ha)) - (i128::from(ab) + i128::from(hb));
                out.tables[BALANCES].push(row(vec![
                    e.u64("user")?.to_string(),
                    sym,
                    ctx.amount(asset, ab.into(), seq)?,
                    ctx.amount(asset, hb.into(), seq)?,
                    ctx.amount(asset, aa.into(), seq)?,
                    ctx.amount(asset, ha.into(), seq)?,
                    ctx.amount(asset, change, seq)?,
                    cmd.name().into(),
                    balance_detail(cmd),
                ]));
            }
            "deposited" | "deposit_reversed" | "deficit_repaid" | "deposit_address_assigned" => {
                deposit_row(ctx, cmd, &e, kind, &row, out)?
            }
            "withdrawal_requested"
            | "withdrawal_routed"
            | "withdrawal_approved"
            | "withdrawal_settled"
            | "withdrawal_cancelled" => withdrawal_row(ctx, cmd, &e, kind, &row, out)?,
            "withdrawal_batch_built" | "withdrawal_batch_bumped" | "withdrawal_batch_finished" => {
                batch_rows(ctx, &e, kind, &row, out)?
            }
            "adjusted" => {
                let Command::Adjust { delta, reason, .. } = cmd else {
                    return Err(mismatch(seq, "type"));
                };
                if e.str("delta")? != delta.get().to_string() || e.str("reason")? != reason {
                    return Err(mismatch(seq, "delta or reason"));
                }
                // The balance change itself is in the balances table.
            }
            "order_accepted" | "order_rested" | "order_filled" | "order_cancelled"
            | "order_expired" | "order_amended" => order_row(ctx, cmd, &e, kind, &row, out)?,
            "trade" => {
                let m = ctx.market(e.u64("market")?, seq)?.clone();
                out.tables[TRADES].push(row(vec![
                    m.symbol.clone(),
                    e.u64("trade")?.to_string(),
                    ctx.price(&m, e.u64("price")?, seq)?,
                    ctx.qty(&m, e.u64("qty")?, seq)?,
                    ctx.amount(u64::from(m.quote), e.u64("quote_qty")?.into(), seq)?,
                    e.str("taker_side")?.into(),
                    e.u64("maker_user")?.to_string(),
                    e.u64("maker_order")?.to_string(),
                    ctx.amount(u64::from(m.quote), e.u64("maker_fee")?.into(), seq)?,
                    e.u64("taker_user")?.to_string(),
                    e.u64("taker_order")?.to_string(),
                    ctx.amount(u64::from(m.quote), e.u64("taker_fee")?.into(), seq)?,
                ]));
            }
            other => bail!("record {seq} event {index}: unknown event type {other:?}"),
        }
    }
    Ok(())
}

fn admin_user(cmd_user: Option<u32>, events: &[Value]) -> String {
    cmd_user
        .map(u64::from)
        .or_else(|| {
            events
                .iter()
                .find_map(|e| e.get("user").and_then(Value::as_u64))
        })
        .map(|u| u.to_string())
        .unwrap_or_default()
}

/// The command's fields as `kura journal dump --json` prints them.
fn command_json(entry: &Entry) -> Result<String> {
    let v: Value = serde_json::from_str(&codec::to_json(entry))
        .map_err(|e| anyhow!("rendering a command as JSON: {e}"))?;
    Ok(v.get("command").map(Value::to_string).unwrap_or_default())
}

fn balance_detail(cmd: &Command) -> String {
    match cmd {
        Command::Deposit { reference, .. } => reference.clone(),
        Command::ReverseDeposit { reference, reason } => format!("{reference}: {reason}"),
        Command::Adjust { reason, .. } => reason.clone(),
        Command::RequestWithdrawal { id, .. }
        | Command::RequestChainWithdrawal { id, .. }
        | Command::SettleWithdrawal { id }
        | Command::CancelWithdrawal { id }
        | Command::RejectWithdrawal { id } => id.clone(),
        Command::FinishWithdrawalBatch { batch, .. } => format!("batch {batch}"),
        _ => String::new(),
    }
}

type RowFn<'a> = dyn Fn(Vec<String>) -> Vec<String> + 'a;

fn identity_row(
    ctx: &Context,
    cmd: &Command,
    e: &Ev<'_>,
    kind: &str,
    row: &RowFn<'_>,
    out: &mut Rows,
) -> Result<()> {
    let seq = e.seq;
    let user = e.u64("user")?.to_string();
    let mut cells = vec![String::new(); 12];
    cells[0] = user;
    cells[1] = kind.into();
    match kind {
        "user_created" => {
            if !matches!(cmd, Command::CreateUser | Command::RegisterUser { .. }) {
                return Err(mismatch(seq, "type"));
            }
        }
        "user_named" => {
            let Command::RegisterUser { name } = cmd else {
                return Err(mismatch(seq, "type"));
            };
            if e.str("name")? != name {
                return Err(mismatch(seq, "name"));
            }
            cells[2] = name.clone();
        }
        "api_key_created" => {
            let Command::CreateApiKey {
                key,
                scheme,
                permissions,
                ip_allow,
                label,
                ..
            } = cmd
            else {
                return Err(mismatch(seq, "type"));
            };
            if e.str("key")? != key {
                return Err(mismatch(seq, "key"));
            }
            cells[3] = e.u64("number")?.to_string();
            cells[4] = key.clone();
            cells[5] = scheme_text(scheme);
            cells[6] = permissions_text(permissions);
            cells[7] = ip_ranges_text(ip_allow);
            cells[8] = label.clone();
        }
        "api_key_revoked" => {
            let Command::RevokeApiKey { key } = cmd else {
                return Err(mismatch(seq, "type"));
            };
            if e.str("key")? != key {
                return Err(mismatch(seq, "key"));
            }
            cells[3] = e.u64("number")?.to_string();
            cells[4] = key.clone();
        }
        "fee_tier_set" => {
            cells[11] = format!("fee tier {}", e.u64("tier")?);
        }
        _ => {
            // withdrawal_address_added
            let asset = e.u64("asset")?;
            cells[9] = ctx.asset(asset, seq)?.0.clone();
            cells[10] = e.str("address")?.into();
            if let Command::AddWithdrawalAddress { address, .. }
            | Command::RequestChainWithdrawal { address, .. } = cmd
            {
                if address != cells[10].as_str() {
                    return Err(mismatch(seq, "address"));
                }
            }
            cells[11] = format!("usable from {}", time_text(e.u64("usable_from_ms")?));
        }
    }
    out.tables[IDENTITY].push(row(cells));
    Ok(())
}

fn deposit_row(
    ctx: &Context,
    cmd: &Command,
    e: &Ev<'_>,
    kind: &str,
    row: &RowFn<'_>,
    out: &mut Rows,
) -> Result<()> {
    let seq = e.seq;
    let asset = e.u64("asset")?;
    let mut cells = vec![String::new(); 11];
    cells[0] = e.u64("user")?.to_string();
    cells[1] = kind.into();
    cells[2] = ctx.asset(asset, seq)?.0.clone();
    let split_ref = |r: &str| -> (String, String) {
        match r.rsplit_once(':') {
            Some((txid, vout)) if txid.len() == 64 && vout.parse::<u32>().is_ok() => {
                (txid.into(), vout.into())
            }
            _ => (String::new(), String::new()),
        }
    };
    match kind {
        "deposited" => {
            let Command::Deposit {
                amount, reference, ..
            } = cmd
            else {
                return Err(mismatch(seq, "type"));
            };
            if e.u64("amount")? != amount.get() || e.str("reference")? != reference {
                return Err(mismatch(seq, "amount or reference"));
            }
            cells[3] = ctx.amount(asset, amount.get().into(), seq)?;
            cells[4] = reference.clone();
            (cells[5], cells[6]) = split_ref(reference);
            let addresses = e.field("addresses")?.as_array().ok_or_else(|| {
                anyhow!("record {seq} event {}: `addresses` is not a list", e.index)
            })?;
            cells[7] = addresses
                .iter()
                .map(|a| a.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" ");
            cells[8] = e.opt_text("tip_height");
        }
        "deposit_reversed" => {
            let Command::ReverseDeposit { reference, reason } = cmd else {
                return Err(mismatch(seq, "type"));
            };
            if e.str("reference")? != reference || e.str("reason")? != reason {
                return Err(mismatch(seq, "reference or reason"));
            }
            cells[3] = ctx.amount(asset, e.u64("amount")?.into(), seq)?;
            cells[4] = reference.clone();
            (cells[5], cells[6]) = split_ref(reference);
            cells[9] = ctx.amount(asset, e.u64("deficit")?.into(), seq)?;
            cells[10] = reason.clone();
        }
        "deficit_repaid" => {
            cells[3] = ctx.amount(asset, e.u64("amount")?.into(), seq)?;
            cells[9] = ctx.amount(asset, e.u64("remaining")?.into(), seq)?;
        }
        _ => {
            // deposit_address_assigned
            if !matches!(cmd, Command::AssignDepositAddress { .. }) {
                return Err(mismatch(seq, "type"));
            }
            cells[7] = e.str("address")?.into();
            cells[10] = format!("wallet {} index {}", e.u64("wallet")?, e.u64("index")?);
        }
    }
    out.tables[DEPOSITS].push(row(cells));
    Ok(())
}

fn withdrawal_row(
    ctx: &Context,
    cmd: &Command,
    e: &Ev<'_>,
    kind: &str,
    row: &RowFn<'_>,
    out: &mut Rows,
) -> Result<()> {
    let seq = e.seq;
    let mut cells = vec![String::new(); 14];
    cells[0] = e.u64("user")?.to_string();
    cells[1] = e.str("id")?.into();
    cells[2] = kind.trim_start_matches("withdrawal_").into();
    match kind {
        "withdrawal_requested" | "withdrawal_settled" | "withdrawal_cancelled" => {
            let asset = e.u64("asset")?;
            cells[3] = ctx.asset(asset, seq)?.0.clone();
            cells[4] = ctx.amount(asset, e.u64("amount")?.into(), seq)?;
            cells[7] = cells[2].clone();
            if kind == "withdrawal_requested" {
                match cmd {
                    Command::RequestWithdrawal { amount, id, .. } => {
                        if e.u64("amount")? != amount.get() || e.str("id")? != id {
                            return Err(mismatch(seq, "amount or id"));
                        }
                        cells[7] = "pending".into();
                    }
                    Command::RequestChainWithdrawal {
                        amount,
                        id,
                        address,
                        ..
                    } => {
                        if e.u64("amount")? != amount.get() || e.str("id")? != id {
                            return Err(mismatch(seq, "amount or id"));
                        }
                        cells[6] = address.clone();
                    }
                    _ => return Err(mismatch(seq, "type")),
                }
            }
        }
        "withdrawal_routed" => {
            let Command::RequestChainWithdrawal { address, asset, .. } = cmd else {
                return Err(mismatch(seq, "type"));
            };
            if e.str("address")? != address {
                return Err(mismatch(seq, "address"));
            }
            cells[3] = ctx.asset(u64::from(asset.0), seq)?.0.clone();
            cells[5] = ctx.amount(u64::from(asset.0), e.u64("fee")?.into(), seq)?;
            cells[6] = address.clone();
            cells[7] = if e.bool("review")? {
                "review"
            } else {
                "approved"
            }
            .into();
            cells[13] = format!("payable from {}", time_text(e.u64("release_ms")?));
        }
        _ => {
            // withdrawal_approved
            if !matches!(cmd, Command::ApproveWithdrawal { .. }) {
                return Err(mismatch(seq, "type"));
            }
            cells[7] = "approved".into();
        }
    }
    out.tables[WITHDRAWALS].push(row(cells));
    Ok(())
}

fn batch_rows(
    ctx: &Context,
    e: &Ev<'_>,
    kind: &str,
    row: &RowFn<'_>,
    out: &mut Rows,
) -> Result<()> {
    let seq = e.seq;
    let asset = e.u64("asset")?;
    let members = e.field("withdrawals")?.as_array().ok_or_else(|| {
        anyhow!(
            "record {seq} event {}: `withdrawals` is not a list",
            e.index
        )
    })?;
    for (i, m) in members.iter().enumerate() {
        let m = Ev {
            v: m,
            seq,
            index: e.index * 1000 + i,
        };
        let mut cells = vec![String::new(); 14];
        cells[0] = m.u64("user")?.to_string();
        cells[1] = m.str("id")?.into();
        cells[3] = ctx.asset(asset, seq)?.0.clone();
        cells[8] = e.u64("batch")?.to_string();
        cells[9] = e.str("txid")?.into();
        cells[12] = ctx.amount(asset, e.u64("network_fee")?.into(), seq)?;
        match kind {
            "withdrawal_batch_built" => {
                cells[2] = "batched".into();
                cells[7] = "batched".into();
                let inputs = e.field("inputs")?.as_array().ok_or_else(|| {
                    anyhow!("record {seq} event {}: `inputs` is not a list", e.index)
                })?;
                cells[10] = inputs
                    .iter()
                    .map(|a| a.as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            "withdrawal_batch_bumped" => {
                cells[2] = "fee_bumped".into();
                cells[7] = "batched".into();
            }
            _ => {
                let paid = e.bool("paid")?;
                cells[2] = "batch_confirmed".into();
                cells[7] = if paid { "paid" } else { "returned" }.into();
                cells[11] = e.u64("height")?.to_string();
            }
        }
        out.tables[WITHDRAWALS].push(row(cells));
    }
    Ok(())
}

fn order_row(
    ctx: &Context,
    cmd: &Command,
    e: &Ev<'_>,
    kind: &str,
    row: &RowFn<'_>,
    out: &mut Rows,
) -> Result<()> {
    let seq = e.seq;
    let m = ctx.market(e.u64("market")?, seq)?.clone();
    let mut cells = vec![String::new(); 12];
    cells[0] = e.u64("user")?.to_string();
    cells[1] = m.symbol.clone();
    cells[2] = e.u64("order")?.to_string();
    cells[3] = kind.trim_start_matches("order_").into();
    match kind {
        "order_accepted" => {
            if !matches!(cmd, Command::PlaceOrder { .. } | Command::AmendOrder { .. }) {
                return Err(mismatch(seq, "type"));
            }
            if let Command::PlaceOrder { side, .. } = cmd {
                let want = match side {
                    kura_engine::Side::Buy => "BUY",
                    kura_engine::Side::Sell => "SELL",
                };
                if e.str("side")? != want {
                    return Err(mismatch(seq, "side"));
                }
            }
            cells[4] = e.str("side")?.into();
            cells[5] = if e.bool("is_market")? {
                "MARKET"
            } else if e.bool("post_only")? {
                "LIMIT_MAKER"
            } else {
                "LIMIT"
            }
            .into();
            cells[6] = e.str("tif")?.into();
            cells[7] = ctx.price(&m, e.u64("price")?, seq)?;
            cells[8] = ctx.qty(&m, e.u64("qty")?, seq)?;
            cells[10] = e.opt_text("client_id");
            let mut detail = format!(
                "held {}",
                ctx.amount(
                    u64::from(if cells[4] == "BUY" { m.quote } else { m.base }),
                    e.u64("hold")?.into(),
                    seq
                )?
            );
            if let Some(b) = e.v.get("quote_budget").and_then(Value::as_u64) {
                let _ = write!(
                    detail,
                    "; quote budget {}",
                    ctx.amount(u64::from(m.quote), b.into(), seq)?
                );
            }
            if cells[5] == "MARKET" {
                detail.push_str("; price is the collar bound");
            }
            cells[11] = detail;
        }
        "order_rested" => cells[9] = ctx.qty(&m, e.u64("remaining")?, seq)?,
        "order_filled" => cells[9] = ctx.qty(&m, 0, seq)?,
        "order_cancelled" | "order_expired" => {
            cells[9] = ctx.qty(&m, e.u64("remaining")?, seq)?;
            cells[11] = e.str("reason")?.into();
        }
        _ => {
            // order_amended
            cells[7] = ctx.price(&m, e.u64("price")?, seq)?;
            cells[9] = ctx.qty(&m, e.u64("remaining")?, seq)?;
            cells[11] = if e.bool("kept_priority")? {
                "kept its place in the queue"
            } else {
                "lost its place in the queue"
            }
            .into();
        }
    }
    out.tables[ORDERS].push(row(cells));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_times() {
        assert_eq!(decimal(150_000_000, 8), "1.50000000");
        assert_eq!(decimal(-5, 2), "-0.05");
        assert_eq!(decimal(42, 0), "42");
        assert_eq!(time_text(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(time_text(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_table_starts_with_seq_and_time() {
        for t in TABLES {
            assert_eq!(&t.columns[..2], &["seq", "time"], "{}", t.name);
        }
    }
}
