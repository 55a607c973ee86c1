//! Account and wallet: balances (from the engine, so they agree with every answered
//! command), commission rates (the caller's fee tier), the coin list of
//! `capital/config/getall`, and the system status.

use super::trading::{fee_rates, ppm_rate};
use super::{authenticate, decimal, json, Fail, HttpResult, MarketInfo, Req};
use crate::auth::Permission;
use crate::backend::Backend;
use crate::errors::ParamError;
use axum::extract::State;
use kura_engine::Engine;
use kura_units::{AssetId, Scale, UserId};
use serde_json::{json, Value};

/// Asset symbols that are national currencies (Binance's `isLegalMoney`).
const FIAT: [&str; 12] = [
    "USD", "JPY", "EUR", "GBP", "CHF", "AUD", "CAD", "NZD", "SGD", "HKD", "KRW", "BRL",
];

/// One asset and the caller's balance of it.
#[derive(Debug)]
struct Holding {
    symbol: String,
    scale: Scale,
    available: u64,
    held: u64,
    withdrawals_halted: bool,
}

fn holdings(e: &Engine, user: UserId) -> Vec<Holding> {
    (0..e.asset_count())
        .filter_map(|i| u16::try_from(i).ok())
        .filter_map(|i| {
            let asset = AssetId(i);
            let balance = e.ledger().balance(user, asset).unwrap_or_default();
            Some(Holding {
                symbol: e.asset_symbol(asset)?.to_owned(),
                scale: e.asset_scale(asset)?,
                available: balance.available.get(),
                held: balance.held.get(),
                withdrawals_halted: e.withdrawals_halted(asset).is_some(),
            })
        })
        .collect()
}

fn bool_param(value: Option<&str>, name: &str) -> Result<bool, Fail> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ParamError::InvalidValue {
            name: name.to_owned(),
        }
        .into()),
    }
}

pub(super) async fn account<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let omit_zero = bool_param(
        caller.params.optional("omitZeroBalances"),
        "omitZeroBalances",
    )?;
    let user = caller.user;
    let (holdings, first_market) = b
        .query(move |e| (holdings(e, user), MarketInfo::all(e).into_iter().next()))
        .await?;
    let tier = b.read(move |s| s.fee_tier(user)).await??.unwrap_or(0);
    // Fee tiers are per market; the account shows the first market's rates.
    let (maker, taker) = first_market.as_ref().map_or((0, 0), |m| fee_rates(m, tier));
    let balances: Vec<Value> = holdings
        .iter()
        .filter(|h| !omit_zero || h.available != 0 || h.held != 0)
        .map(|h| {
            json!({
                "asset": h.symbol,
                "free": decimal(u128::from(h.available), h.scale),
                "locked": decimal(u128::from(h.held), h.scale),
            })
        })
        .collect();
    json(json!({
        "makerCommission": maker / 100,
        "takerCommission": taker / 100,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": ppm_rate(maker),
            "taker": ppm_rate(taker),
            "buyer": ppm_rate(0),
            "seller": ppm_rate(0),
        },
        "canTrade": true,
        "canWithdraw": true,
        "canDeposit": true,
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": b.now_ms(),
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": user.0,
    }))
}

pub(super) async fn capital_config<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let user = caller.user;
    let holdings = b.query(move |e| holdings(e, user)).await?;
    let coins: Vec<Value> = holdings
        .iter()
        .map(|h| {
            let fiat = FIAT.contains(&h.symbol.as_str());
            let zero = decimal(0, h.scale);
            let networks = if h.symbol == "BTC" {
                vec![json!({
                    "network": "BTC",
                    "coin": "BTC",
                    "name": "Bitcoin",
                    "isDefault": true,
                    "depositEnable": true,
                    "withdrawEnable": !h.withdrawals_halted,
                    "depositDesc": "",
                    "withdrawDesc": if h.withdrawals_halted { "Withdrawals are halted." } else { "" },
                    "specialTips": "",
                    "withdrawFee": zero,
                    "withdrawMin": decimal(1, h.scale),
                    "withdrawMax": decimal(u128::from(u64::MAX), h.scale),
                    "withdrawIntegerMultiple": decimal(1, h.scale),
                    "minConfirm": 1,
                    "unLockConfirm": 1,
                    "sameAddress": false,
                    "busy": false,
                    "resetAddressStatus": false,
                    "addressRegex": "^(bc1|[13])[a-zA-HJ-NP-Z0-9]{25,62}$",
                    "memoRegex": "",
                })]
            } else {
                Vec::new()
            };
            json!({
                "coin": h.symbol,
                "name": h.symbol,
                "free": decimal(u128::from(h.available), h.scale),
                "locked": decimal(u128::from(h.held), h.scale),
                "freeze": zero,
                "withdrawing": zero,
                "ipoing": zero,
                "ipoable": zero,
                "storage": zero,
                "isLegalMoney": fiat,
                "trading": true,
                "depositAllEnable": !networks.is_empty(),
                "withdrawAllEnable": !networks.is_empty() && !h.withdrawals_halted,
                "networkList": networks,
            })
        })
        .collect();
    json(Value::Array(coins))
}

pub(super) async fn system_status() -> HttpResult {
    json(json!({ "status": 0, "msg": "normal" }))
}
