//! The admin channel: a Unix socket in the data directory (`admin.sock`, mode 0600, so
//! only the account that runs the node can use it), one JSON request per line, one JSON
//! answer per line. `kura admin …` is its client.
//!
//! Every action that changes state is a journaled command whose origin is
//! `Origin::Admin { operator, reason }`: who did it (the operator name the CLI sends,
//! by default the login name) and why (a reason, required for money and halts).
//! Secrets: an HMAC key's secret is derived from the master key and returned once in the
//! answer to `key_create`; it is never journaled, stored or logged. An Ed25519 key's
//! private half never reaches the server: the CLI generates it and sends the public key.

use super::backend::{parse_ip_range, NodeBackend};
use super::custody::{ChainChoice, CustodyView};
use anyhow::{anyhow, bail, Context, Result};
use kura_api::auth::ApiKeyId;
use kura_api::backend::Backend;
use kura_engine::codec::{Entry, Origin};
use kura_engine::{
    BatchState, Command, Engine, Event, EventKind, KeyPermissions, KeyScheme, WalletRole,
    WithdrawalState,
};
use kura_units::{format_decimal, parse_decimal, Amount, AmountDelta, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";
/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// One admin request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    UserCreate {
        name: String,
    },
    KeyCreate {
        user: String,
        perms: Vec<String>,
        /// Hex of an Ed25519 public key; absent for an HMAC key.
        ed25519_public: Option<String>,
        #[serde(default)]
        ip_allow: Vec<String>,
        #[serde(default)]
        label: String,
    },
    KeyRevoke {
        key: String,
        reason: String,
    },
    Credit {
        user: String,
        asset: String,
        amount: String,
        reference: String,
        reason: String,
    },
    Debit {
        user: String,
        asset: String,
        amount: String,
        reason: String,
    },
    Halt {
        symbol: String,
        reason: String,
    },
    Resume {
        symbol: String,
        reason: String,
    },
    Balances {
        user: Option<String>,
    },
    /// The custody layer: the chain followed, our wallets and their coins, the books'
    /// liabilities, the last reconciliation, any withdrawal halt, open batches.
    CustodyStatus,
    /// Every confirmed coin the custody task holds, with its wallet and index, and the
    /// block it has followed to (read-only; what `kura reserves prove` proves).
    CustodyCoins,
    /// Chain withdrawals in `state`: "review" (the default), "approved", "batched",
    /// "settled", "cancelled" or "all".
    WithdrawalList {
        #[serde(default)]
        state: Option<String>,
    },
    /// Approve a chain withdrawal held for review (`Command::ApproveWithdrawal`).
    WithdrawalApprove {
        id: String,
        #[serde(default)]
        reason: String,
    },
    /// Refuse a chain withdrawal held for review (`Command::RejectWithdrawal`): its
    /// amount returns to the customer's available balance.
    WithdrawalReject {
        id: String,
        reason: String,
    },
    /// Register a cold wallet for BTC (`Command::RegisterWallet`): a public descriptor
    /// (SegWit, no private key, keys of the chain's network). The registry never
    /// forgets it; the hot band sweeps to the newest cold wallet.
    WalletRegisterCold {
        descriptor: String,
        reason: String,
    },
    /// Replace an open withdrawal batch's transaction with one paying a higher fee rate
    /// (same coins, same payments).
    BatchBump {
        batch: u64,
        fee_rate_sat_vb: u64,
        reason: String,
    },
    /// Cancel an open withdrawal batch by double-spending its coins to our hot wallet;
    /// its withdrawals are refunded when that transaction confirms.
    BatchCancel {
        batch: u64,
        fee_rate_sat_vb: u64,
        reason: String,
    },
    /// Abandon an open refill from cold storage whose transaction never reached the
    /// network: its cold coins are unlocked for the next refill.
    BatchAbandon {
        batch: u64,
        reason: String,
    },
    /// Journal the roots of a solvency epoch (`Command::RecordSolvency`); answers the
    /// record's sequence number and time. `kura solvency prove` sends it.
    SolvencyRecord {
        epoch: u64,
        roots: Vec<SolvencyRootJson>,
    },
}

/// One asset's root in a `solvency_record` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolvencyRootJson {
    pub asset: u16,
    pub ledger_seq: u64,
    /// 64 hex digits.
    pub epoch_id: String,
    pub depth: u8,
    /// 64 hex digits.
    pub root_hash: String,
    pub root_sum: u64,
    pub reserves: Option<u64>,
}

impl SolvencyRootJson {
    pub fn from_root(r: &kura_engine::SolvencyRoot) -> SolvencyRootJson {
        SolvencyRootJson {
            asset: r.asset.0,
            ledger_seq: r.ledger_seq,
            epoch_id: hex::encode(r.epoch_id),
            depth: r.depth,
            root_hash: hex::encode(r.root_hash),
            root_sum: r.root_sum,
            reserves: r.reserves,
        }
    }

    pub fn to_root(&self) -> Result<kura_engine::SolvencyRoot> {
        let hash = |what: &str, text: &str| -> Result<[u8; 32]> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out)
                .map_err(|_| anyhow!("{what} must be 64 hex digits"))?;
            Ok(out)
        };
        Ok(kura_engine::SolvencyRoot {
            asset: kura_units::AssetId(self.asset),
            ledger_seq: self.ledger_seq,
            epoch_id: hash("epoch_id", &self.epoch_id)?,
            depth: self.depth,
            root_hash: hash("root_hash", &self.root_hash)?,
            root_sum: self.root_sum,
            reserves: self.reserves,
        })
    }
}

/// A request with who sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub operator: String,
    #[serde(flatten)]
    pub request: Request,
}

/// Send one request to the node that owns `data_dir` and return its answer.
pub fn call(data_dir: &Path, envelope: &Envelope) -> Result<Value> {
    use std::os::unix::net::UnixStream;
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "connecting to {} (is `kura serve --data {}` running?)",
            path.display(),
            data_dir.display()
        )
    })?;
    let mut line = serde_json::to_string(envelope)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the node's answer")?;
    let value: Value = serde_json::from_str(answer.trim())
        .with_context(|| format!("the node answered {answer:?}"))?;
    match value.get("error").and_then(Value::as_str) {
        Some(why) => bail!("{why}"),
        None => Ok(value),
    }
}

/// Bind the admin socket (mode 0600). A stale socket left by a killed node is replaced:
/// the data-directory lock proves nobody owns it.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding the admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve the bound admin socket until `shutdown` resolves, then remove it.
pub async fn serve(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    backend: NodeBackend,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    serve_with_chain(listener, path, backend, ChainContext::default(), shutdown).await
}

/// [`serve`], with the custody task's view for `custody_status`.
pub async fn serve_with_chain(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    backend: NodeBackend,
    chain: ChainContext,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => break,
            conn = listener.accept() => conn,
        };
        let Ok((stream, _)) = conn else { continue };
        let backend = backend.clone();
        let chain = chain.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64));
            let mut line = String::new();
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match serde_json::from_str::<Envelope>(line.trim()) {
                Ok(env) => match handle_with_chain(&backend, &chain, env).await {
                    Ok(v) => v,
                    Err(e) => json!({ "error": format!("{e:#}") }),
                },
                Err(e) => json!({ "error": format!("malformed admin request: {e}") }),
            };
            let mut out = answer.to_string();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// An operator's action on an open batch, run on the custody task: a reason is
/// required and journaled with the operator's name; answers the batch, the action and
/// the transaction it concerns.
async fn batch_action(
    chain: &ChainContext,
    op: &str,
    batch: u64,
    reason: String,
    action: &'static str,
    run: impl FnOnce(super::custody::CustodyControl, Origin) -> Result<kura_chain::bitcoin::Txid>
        + Send
        + 'static,
) -> Result<Value> {
    if reason.trim().is_empty() {
        bail!("a reason is required");
    }
    let control = chain
        .control
        .clone()
        .ok_or_else(|| anyhow!("this node follows no chain; start it with --chain"))?;
    let by = origin(op, &reason);
    let txid = tokio::task::spawn_blocking(move || run(control, by))
        .await
        .map_err(|e| anyhow!("{e}"))??;
    tracing::warn!(operator = %op, batch, action, %reason, %txid, "operator acted on a withdrawal batch");
    Ok(json!({
        "batch": batch,
        "action": action,
        "txid": txid.to_string(),
        "reason": reason,
    }))
}

fn origin(operator: &str, reason: &str) -> Origin {
    Origin::Admin {
        operator: operator.chars().take(64).collect(),
        reason: reason.to_owned(),
    }
}

async fn run(backend: &NodeBackend, origin: Origin, command: Command) -> Result<Vec<Event>> {
    let outcome = backend
        .submit(Entry {
            ctx_timestamp_ms: 0,
            origin,
            command,
        })
        .await
        .map_err(|e| anyhow!("{e}"))?;
    outcome
        .result
        .map_err(|r| anyhow!("refused by the exchange: {r}"))
}

async fn user_id(backend: &NodeBackend, name: &str) -> Result<UserId> {
    let n = name.to_owned();
    backend
        .query(move |e| e.user_by_name(&n))
        .await
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no customer named {name:?}"))
}

/// Asset id and amount in minor units.
async fn asset_amount(
    backend: &NodeBackend,
    asset: &str,
    amount: &str,
) -> Result<(kura_units::AssetId, Amount)> {
    let a = asset.to_ascii_uppercase();
    let found = backend
        .query(move |e| {
            e.asset_by_symbol(&a)
                .and_then(|id| Some((id, e.asset_scale(id)?)))
        })
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let (id, scale) = found.ok_or_else(|| anyhow!("unknown asset {asset:?}"))?;
    let minor =
        parse_decimal(amount, scale).map_err(|e| anyhow!("amount {amount:?} for {asset}: {e}"))?;
    Ok((id, Amount::new(minor)))
}

fn balances_json(engine: &Engine, only: Option<UserId>) -> Value {
    let mut rows = Vec::new();
    let users: Vec<UserId> = match only {
        Some(u) => vec![u],
        None => (0..engine.user_count() as u32).map(UserId).collect(),
    };
    for user in users {
        for a in 0..engine.asset_count() as u16 {
            let asset = kura_units::AssetId(a);
            let (Ok(b), Some(scale), Some(symbol)) = (
                engine.ledger().balance(user, asset),
                engine.asset_scale(asset),
                engine.asset_symbol(asset),
            ) else {
                continue;
            };
            rows.push(json!({
                "user": engine.user_name(user).map_or_else(|| format!("#{}", user.0), str::to_owned),
                "asset": symbol,
                "free": format_decimal(b.available.get(), scale),
                "locked": format_decimal(b.held.get(), scale),
            }));
        }
    }
    Value::Array(rows)
}

fn permissions(perms: &[String]) -> Result<KeyPermissions> {
    let mut p = KeyPermissions::default();
    for name in perms {
        match name.trim() {
            "read" => p.read = true,
            "trade" => p.trade = true,
            "withdraw" => p.withdraw = true,
            other => bail!("unknown permission {other:?} (read, trade, withdraw)"),
        }
    }
    Ok(p)
}

pub async fn handle(backend: &NodeBackend, env: Envelope) -> Result<Value> {
    handle_with_chain(backend, &ChainContext::default(), env).await
}

/// [`handle`], with the custody task's view for `custody_status`.
pub async fn handle_with_chain(
    backend: &NodeBackend,
    chain: &ChainContext,
    env: Envelope,
) -> Result<Value> {
    let op = env.operator;
    let cancel = matches!(env.request, Request::BatchCancel { .. });
    match env.request {
        Request::UserCreate { name } => {
            let events = run(
                backend,
                origin(&op, "create customer"),
                Command::RegisterUser { name: name.clone() },
            )
            .await?;
            let id = events.iter().find_map(|e| match e.kind {
                EventKind::UserCreated { user } => Some(user.0),
                _ => None,
            });
            Ok(json!({ "user": name, "id": id }))
        }
        Request::KeyCreate {
            user,
            perms,
            ed25519_public,
            ip_allow,
            label,
        } => {
            let uid = user_id(backend, &user).await?;
            let permissions = permissions(&perms)?;
            let ip_allow = ip_allow
                .iter()
                .map(|t| parse_ip_range(t).ok_or_else(|| anyhow!("bad IP range {t:?}")))
                .collect::<Result<Vec<_>>>()?;
            let scheme = match &ed25519_public {
                None => KeyScheme::Hmac,
                Some(hex_key) => {
                    let mut public = [0u8; 32];
                    hex::decode_to_slice(hex_key, &mut public)
                        .map_err(|_| anyhow!("ed25519_public must be 64 hex digits"))?;
                    KeyScheme::Ed25519(public)
                }
            };
            let key = ApiKeyId::from_random(rand::random::<[u8; 32]>());
            let events = run(
                backend,
                origin(&op, "create API key"),
                Command::CreateApiKey {
                    user: uid,
                    key: key.as_str().to_owned(),
                    scheme,
                    permissions,
                    ip_allow,
                    label,
                },
            )
            .await?;
            let number = events.iter().find_map(|e| match e.kind {
                EventKind::ApiKeyCreated { number, .. } => Some(number),
                _ => None,
            });
            let secret = match scheme {
                KeyScheme::Hmac => Some(backend.master_key().derive_hmac_secret(&key)),
                KeyScheme::Ed25519(_) => None,
            };
            Ok(json!({
                "user": user,
                "key": key.as_str(),
                "number": number,
                "scheme": if secret.is_some() { "hmac" } else { "ed25519" },
                "secret": secret.as_ref().map(|s| s.expose().to_owned()),
                "permissions": {
                    "read": permissions.read,
                    "trade": permissions.trade,
                    "withdraw": permissions.withdraw,
                },
            }))
        }
        Request::KeyRevoke { key, reason } => {
            run(
                backend,
                origin(&op, &reason),
                Command::RevokeApiKey { key: key.clone() },
            )
            .await?;
            Ok(json!({ "revoked": key }))
        }
        Request::Credit {
            user,
            asset,
            amount,
            reference,
            reason,
        } => {
            let uid = user_id(backend, &user).await?;
            let (aid, amt) = asset_amount(backend, &asset, &amount).await?;
            run(
                backend,
                origin(&op, &reason),
                Command::Deposit {
                    user: uid,
                    asset: aid,
                    amount: amt,
                    reference: reference.clone(),
                },
            )
            .await?;
            Ok(json!({ "credited": amount, "asset": asset, "user": user, "reference": reference }))
        }
        Request::Debit {
            user,
            asset,
            amount,
            reason,
        } => {
            let uid = user_id(backend, &user).await?;
            let (aid, amt) = asset_amount(backend, &asset, &amount).await?;
            run(
                backend,
                origin(&op, &reason),
                Command::Adjust {
                    user: uid,
                    asset: aid,
                    delta: AmountDelta::debit(amt),
                    reason: reason.clone(),
                },
            )
            .await?;
            Ok(json!({ "debited": amount, "asset": asset, "user": user }))
        }
        Request::Halt { symbol, reason } | Request::Resume { symbol, reason }
            if reason.trim().is_empty() =>
        {
            bail!("a reason is required to halt or resume {symbol}")
        }
        Request::Halt { symbol, reason } => {
            let market = market_id(backend, &symbol).await?;
            run(
                backend,
                origin(&op, &reason),
                Command::HaltMarket {
                    market,
                    reason: reason.clone(),
                },
            )
            .await?;
            Ok(json!({ "halted": symbol, "reason": reason }))
        }
        Request::Resume { symbol, reason } => {
            let market = market_id(backend, &symbol).await?;
            run(
                backend,
                origin(&op, &reason),
                Command::ResumeMarket { market },
            )
            .await?;
            Ok(json!({ "resumed": symbol }))
        }
        Request::Balances { user } => {
            let only = match &user {
                Some(name) => Some(user_id(backend, name).await?),
                None => None,
            };
            backend
                .query(move |e| balances_json(e, only))
                .await
                .map_err(|e| anyhow!("{e}"))
        }
        Request::CustodyStatus => custody_status(backend, chain).await,
        Request::CustodyCoins => custody_coins(backend, chain).await,
        Request::WithdrawalList { state } => {
            let filter = StateFilter::parse(state.as_deref())?;
            backend
                .query(move |e| withdrawals_json(e, filter))
                .await
                .map_err(|e| anyhow!("{e}"))
        }
        Request::WithdrawalApprove { id, reason } => {
            in_review(backend, &id).await?;
            let reason = if reason.trim().is_empty() {
                "approve withdrawal".to_owned()
            } else {
                reason
            };
            run(
                backend,
                origin(&op, &reason),
                Command::ApproveWithdrawal { id: id.clone() },
            )
            .await?;
            let state = withdrawal_state(backend, &id).await?;
            Ok(json!({ "approved": id, "state": state.map(WithdrawalState::name) }))
        }
        Request::SolvencyRecord { epoch, roots } => {
            let roots = roots
                .iter()
                .map(SolvencyRootJson::to_root)
                .collect::<Result<Vec<_>>>()?;
            let outcome = backend
                .submit(Entry {
                    ctx_timestamp_ms: 0,
                    origin: origin(&op, &format!("solvency epoch {epoch}")),
                    command: Command::RecordSolvency { epoch, roots },
                })
                .await
                .map_err(|e| anyhow!("{e}"))?;
            outcome
                .result
                .map_err(|r| anyhow!("refused by the exchange: {r}"))?;
            Ok(json!({ "epoch": epoch, "seq": outcome.seq, "timestamp_ms": outcome.timestamp_ms }))
        }
        Request::WithdrawalReject { id, reason } => {
            if reason.trim().is_empty() {
                bail!("a reason is required to reject withdrawal {id:?}");
            }
            in_review(backend, &id).await?;
            run(
                backend,
                origin(&op, &reason),
                Command::RejectWithdrawal { id: id.clone() },
            )
            .await?;
            let state = withdrawal_state(backend, &id).await?;
            Ok(json!({
                "rejected": id,
                "state": state.map(WithdrawalState::name),
                "reason": reason,
            }))
        }
        Request::BatchBump {
            batch,
            fee_rate_sat_vb,
            reason,
        }
        | Request::BatchCancel {
            batch,
            fee_rate_sat_vb,
            reason,
        } => {
            let action = if cancel { "cancel" } else { "bump" };
            batch_action(chain, &op, batch, reason, action, move |control, by| {
                if cancel {
                    control.cancel_as(batch, fee_rate_sat_vb, by)
                } else {
                    control.bump_as(batch, fee_rate_sat_vb, by)
                }
            })
            .await
        }
        Request::BatchAbandon { batch, reason } => {
            batch_action(chain, &op, batch, reason, "abandon", move |control, by| {
                control.abandon_as(batch, by)
            })
            .await
        }
        Request::WalletRegisterCold { descriptor, reason } => {
            if reason.trim().is_empty() {
                bail!("a reason is required to register a wallet");
            }
            let network = chain
                .view
                .as_ref()
                .map(|v| v.lock().unwrap_or_else(|p| p.into_inner()).network)
                .ok_or_else(|| anyhow!("this node follows no chain; start it with --chain"))?;
            let canonical = kura_custody::parse_descriptor(&descriptor)
                .map_err(|e| anyhow!("not a usable descriptor: {e}"))?
                .canonical();
            let (_, first) = kura_custody::derive(&canonical, 0, network)
                .map_err(|e| anyhow!("the descriptor does not derive {network} addresses: {e}"))?;
            let asset = backend
                .query(|e| e.asset_by_symbol("BTC"))
                .await
                .map_err(|e| anyhow!("{e}"))?
                .ok_or_else(|| anyhow!("the exchange has no BTC asset"))?;
            let events = run(
                backend,
                origin(&op, &reason),
                Command::RegisterWallet {
                    asset,
                    role: WalletRole::Cold,
                    descriptor: canonical.clone(),
                },
            )
            .await?;
            let wallet = events.iter().find_map(|e| match &e.kind {
                EventKind::WalletRegistered { wallet, .. } => Some(*wallet),
                _ => None,
            });
            Ok(json!({
                "wallet": wallet,
                "role": "cold",
                "descriptor": canonical,
                "first_address": first.to_string(),
            }))
        }
    }
}

// ---- chain withdrawals -----------------------------------------------------------

/// Which chain withdrawals `withdrawal_list` shows.
#[derive(Clone, Copy, Debug)]
enum StateFilter {
    One(WithdrawalState),
    All,
}

impl StateFilter {
    fn parse(state: Option<&str>) -> Result<StateFilter> {
        Ok(match state.map(str::trim) {
            None | Some("") | Some("review") => StateFilter::One(WithdrawalState::Review),
            Some("approved") => StateFilter::One(WithdrawalState::Approved),
            Some("batched") => StateFilter::One(WithdrawalState::Batched),
            Some("settled") => StateFilter::One(WithdrawalState::Settled),
            Some("cancelled") => StateFilter::One(WithdrawalState::Cancelled),
            Some("all") => StateFilter::All,
            Some(other) => bail!(
                "unknown withdrawal state {other:?} (review, approved, batched, settled, \
                 cancelled, all)"
            ),
        })
    }

    fn accepts(self, state: WithdrawalState) -> bool {
        match self {
            StateFilter::One(s) => s == state,
            StateFilter::All => true,
        }
    }
}

/// Chain withdrawals (those with a destination address) passing `filter`, oldest
/// request first. Amounts are decimals in the asset's unit; times are ms since the
/// epoch, with a UTC text beside each.
fn withdrawals_json(engine: &Engine, filter: StateFilter) -> Value {
    use kura_api::http::wallet::utc_text;
    let mut rows: Vec<(u64, &str, Value)> = engine
        .withdrawals()
        .filter(|(_, w)| !w.address.is_empty() && filter.accepts(w.state))
        .map(|(id, w)| {
            let scale = engine.asset_scale(w.asset);
            let decimal = |a: Amount| {
                scale.map_or_else(|| a.get().to_string(), |s| format_decimal(a.get(), s))
            };
            let row = json!({
                "id": id,
                "user": engine.user_name(w.user),
                "user_id": w.user.0,
                "asset": engine.asset_symbol(w.asset),
                "amount": decimal(w.amount),
                "fee": decimal(w.fee),
                "address": w.address,
                "state": w.state.name(),
                "requested_ms": w.requested_ms,
                "requested": utc_text(w.requested_ms),
                "release_ms": w.release_ms,
                "release": utc_text(w.release_ms),
                "batch": w.batch,
            });
            (w.requested_ms, id, row)
        })
        .collect();
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    Value::Array(rows.into_iter().map(|(_, _, row)| row).collect())
}

async fn withdrawal_state(backend: &NodeBackend, id: &str) -> Result<Option<WithdrawalState>> {
    let i = id.to_owned();
    backend
        .query(move |e| e.withdrawal(&i).map(|w| w.state))
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// Fail with a readable error unless `id` is a withdrawal waiting for review. The
/// engine checks again when the command is applied.
async fn in_review(backend: &NodeBackend, id: &str) -> Result<()> {
    match withdrawal_state(backend, id).await? {
        None => bail!("no withdrawal with id {id:?}"),
        Some(WithdrawalState::Review) => Ok(()),
        Some(state) => bail!(
            "withdrawal {id:?} is {}, not waiting for review",
            state.name()
        ),
    }
}

async fn market_id(backend: &NodeBackend, symbol: &str) -> Result<kura_units::MarketId> {
    let s = symbol.to_ascii_uppercase();
    backend
        .query(move |e| e.market_by_symbol(&s))
        .await
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("unknown market {symbol:?}"))
}

// ---- custody status --------------------------------------------------------------

/// What the admin socket can read of the custody task besides the books.
#[derive(Clone, Debug, Default)]
pub struct ChainContext {
    /// "devnet" or "bitcoind"; `None` when the node follows no chain.
    source: Option<&'static str>,
    view: Option<Arc<Mutex<CustodyView>>>,
    control: Option<super::custody::CustodyControl>,
}

impl ChainContext {
    /// The chain the node was configured with, and the custody task's view of it.
    pub fn new(choice: &ChainChoice, view: Option<Arc<Mutex<CustodyView>>>) -> ChainContext {
        let source = match choice {
            ChainChoice::None => None,
            ChainChoice::Devnet { .. } => Some("devnet"),
            ChainChoice::Bitcoind { .. } => Some("bitcoind"),
        };
        ChainContext {
            source,
            view,
            control: None,
        }
    }

    /// With the custody task's operator actions (bump, cancel).
    pub fn with_control(mut self, control: Option<super::custody::CustodyControl>) -> ChainContext {
        self.control = control;
        self
    }
}

/// Satoshis (or any u128 total) as a JSON number, as text beyond u64.
fn big(v: u128) -> Value {
    u64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from)
}

/// The books' side of the status, copied out of the engine in one query.
#[derive(Debug)]
struct BooksStatus {
    asset: String,
    scale: u8,
    /// (id, role, descriptor, next index) of every BTC wallet.
    wallets: Vec<(u32, WalletRole, String, u32)>,
    liabilities: Option<u128>,
    reconciliation: Option<kura_engine::Reconciliation>,
    halted: Option<String>,
    batches: Vec<Value>,
    withdrawals: Value,
}

fn books_status(engine: &Engine) -> Option<BooksStatus> {
    use kura_chain::bitcoin::hashes::Hash as _;
    let asset = engine.asset_by_symbol("BTC")?;
    let wallets = engine
        .wallets()
        .iter()
        .enumerate()
        .filter(|(_, w)| w.asset == asset)
        .map(|(i, w)| (i as u32, w.role, w.descriptor.clone(), w.next_index))
        .collect();
    let batches = engine
        .withdrawal_batches()
        .iter()
        .enumerate()
        .filter(|(_, b)| b.asset == asset && b.state == BatchState::Open)
        .map(|(id, b)| {
            let latest = b.versions.last();
            json!({
                "id": id,
                "txid": latest.map(|v| kura_chain::bitcoin::Txid::from_byte_array(v.txid).to_string()),
                "network_fee_sat": latest.map(|v| v.network_fee.get()),
                "versions": b.versions.len(),
                "members": b.withdrawals.len(),
                "withdrawals": b.withdrawals,
                "inputs": b.inputs.len(),
                "built_ms": b.built_ms,
                // A transfer between our own wallets: a sweep to cold storage, or a
                // refill of the hot wallet (its PSBT waits in custody/refills/ for
                // the offline ceremony).
                "transfer": b.transfer.map(|t| {
                    let to_role = engine.wallets().get(t.to.0 as usize).map(|w| w.role);
                    json!({
                        "kind": if to_role == Some(WalletRole::Hot) { "refill" } else { "sweep" },
                        "to_wallet": t.to.0,
                        "to_index": t.to.1,
                        "amount_sat": t.amount.get(),
                    })
                }),
            })
        })
        .collect();
    let (mut review, mut review_sat, mut approved, mut batched) = (0u64, 0u128, 0u64, 0u64);
    for (_, w) in engine.withdrawals().filter(|(_, w)| w.asset == asset) {
        match w.state {
            WithdrawalState::Review => {
                review += 1;
                review_sat += u128::from(w.amount.get());
            }
            WithdrawalState::Approved => approved += 1,
            WithdrawalState::Batched => batched += 1,
            _ => {}
        }
    }
    Some(BooksStatus {
        asset: engine.asset_symbol(asset).unwrap_or("BTC").to_owned(),
        scale: engine.asset_scale(asset).map_or(8, |s| s.places()),
        wallets,
        liabilities: engine.ledger().customer_total(asset).ok(),
        reconciliation: engine.last_reconciliation(asset),
        halted: engine.withdrawals_halted(asset).map(str::to_owned),
        batches,
        withdrawals: json!({
            "review": review,
            "review_sat": big(review_sat),
            "approved": approved,
            "batched": batched,
        }),
    })
}

/// The chain's side of the status, copied out of the custody task's view.
#[derive(Debug)]
struct ChainStatus {
    facts: Value,
    /// wallet id → (coins, confirmed sat).
    by_wallet: BTreeMap<u32, (u64, u128)>,
    holdings_sat: u64,
}

fn chain_status(source: &str, v: &CustodyView) -> ChainStatus {
    let mut by_wallet: BTreeMap<u32, (u64, u128)> = BTreeMap::new();
    for (_, value, owner, _) in v.watcher.coins() {
        let e = by_wallet.entry(owner.wallet).or_default();
        e.0 += 1;
        e.1 += u128::from(value);
    }
    let (pending, pending_sat) = v.watcher.pending().fold((0u64, 0u128), |(n, s), d| {
        (n + 1, s + u128::from(d.amount_sat))
    });
    let followed = v.watcher.tip();
    ChainStatus {
        facts: json!({
            "source": source,
            "network": v.network.to_string(),
            "tip_height": v.chain_tip.map(|t| t.height),
            "tip_hash": v.chain_tip.map(|t| t.hash.to_string()),
            "followed_height": followed.map(|(h, _)| h),
            "followed_hash": followed.map(|(_, h)| h.to_string()),
            "synced": v.synced,
            "last_error": v.last_error,
            "blocks_processed": v.blocks,
            "confirmations_required": v.params.confirmations,
            "unconfirmed_deposits": pending,
            "unconfirmed_deposits_sat": big(pending_sat),
            "signer": match &v.signer_socket {
                Some(socket) => json!({"kind": "separate", "socket": socket.display().to_string()}),
                None => json!({"kind": "in_process"}),
            },
        }),
        by_wallet,
        holdings_sat: v.watcher.holdings_sat(),
    }
}

async fn custody_status(backend: &NodeBackend, chain: &ChainContext) -> Result<Value> {
    use kura_chain::bitcoin::hashes::Hash as _;
    let books = backend
        .query(books_status)
        .await
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("the exchange has no BTC asset"))?;
    let coins = match (chain.source, &chain.view) {
        (Some(source), Some(view)) => {
            let v = view.lock().unwrap_or_else(|p| p.into_inner());
            Some(chain_status(source, &v))
        }
        _ => None,
    };
    let mut by_role: BTreeMap<&'static str, u128> =
        WalletRole::ALL.iter().map(|r| (r.name(), 0u128)).collect();
    let wallets: Vec<Value> = books
        .wallets
        .iter()
        .map(|(id, role, descriptor, next_index)| {
            let held = coins
                .as_ref()
                .map(|c| c.by_wallet.get(id).copied().unwrap_or_default());
            if let Some((_, sat)) = held {
                *by_role.entry(role.name()).or_default() += sat;
            }
            json!({
                "id": id,
                "role": role.name(),
                "descriptor": descriptor,
                "next_index": next_index,
                "coins": held.map(|(n, _)| n),
                "confirmed_sat": held.map(|(_, sat)| big(sat)),
            })
        })
        .collect();
    let holdings = coins.as_ref().map(|c| {
        let mut h = serde_json::Map::new();
        for (role, sat) in &by_role {
            h.insert(format!("{role}_sat"), big(*sat));
        }
        h.insert("total_sat".into(), Value::from(c.holdings_sat));
        Value::Object(h)
    });
    let reconciliation = books.reconciliation.map(|r| {
        let holdings = u128::from(r.holdings.get());
        json!({
            "seq": r.seq,
            "height": r.height,
            "block_hash": kura_chain::bitcoin::BlockHash::from_byte_array(r.block_hash).to_string(),
            "holdings_sat": r.holdings.get(),
            "liabilities_sat": big(r.liabilities),
            "status": if holdings >= r.liabilities { "ok" } else { "short" },
            "shortfall_sat": big(r.liabilities.saturating_sub(holdings)),
        })
    });
    Ok(json!({
        "asset": books.asset,
        "scale": books.scale,
        "chain": coins.as_ref().map(|c| c.facts.clone()),
        "wallets": wallets,
        "descriptors": books.wallets.iter().map(|w| w.2.clone()).collect::<Vec<_>>(),
        "holdings": holdings,
        "liabilities_sat": books.liabilities.map(big),
        "reconciliation": reconciliation,
        "withdrawals_halted": books.halted,
        "batches": books.batches,
        "withdrawals": books.withdrawals,
    }))
}

/// `custody_coins`: the wallets of the registry and every confirmed coin of the custody
/// task's watcher, at the block it has followed to.
async fn custody_coins(backend: &NodeBackend, chain: &ChainContext) -> Result<Value> {
    let books = backend
        .query(books_status)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let view = chain
        .view
        .as_ref()
        .ok_or_else(|| anyhow!("this node follows no chain, so it knows no coins"))?;
    coins_json(books, view)
}

/// The `custody_coins` answer from inside the node (no admin socket): what a proof of
/// reserves spends (`kura::reserves::prove_from`).
pub fn custody_coins_now(
    handle: &crate::node::NodeHandle,
    view: &Arc<Mutex<CustodyView>>,
) -> Result<Value> {
    let books = handle
        .query_wait(books_status)
        .map_err(|e| anyhow!("{e}"))?;
    coins_json(books, view)
}

/// Every confirmed coin the custody task watches, with the registered wallets.
fn coins_json(books: Option<BooksStatus>, view: &Arc<Mutex<CustodyView>>) -> Result<Value> {
    let books = books.ok_or_else(|| anyhow!("the exchange has no BTC asset"))?;
    let v = view.lock().unwrap_or_else(|p| p.into_inner());
    let followed = v.watcher.tip();
    let coins: Vec<Value> = v
        .watcher
        .coins()
        .map(|(outpoint, value_sat, owner, height)| {
            json!({
                "outpoint": outpoint.to_string(),
                "value_sat": value_sat,
                "wallet": owner.wallet,
                "index": owner.index,
                "height": height,
            })
        })
        .collect();
    Ok(json!({
        "network": v.network.to_string(),
        "synced": v.synced,
        "tip_height": v.chain_tip.map(|t| t.height),
        "followed_height": followed.map(|(h, _)| h),
        "followed_hash": followed.map(|(_, h)| h.to_string()),
        "wallets": books
            .wallets
            .iter()
            .map(|(id, role, descriptor, _)| json!({
                "id": id,
                "role": role.name(),
                "descriptor": descriptor,
            }))
            .collect::<Vec<_>>(),
        "coins": coins,
        "liabilities_sat": books.liabilities.map(big),
        "signer_socket": v.signer_socket.as_ref().map(|p| p.display().to_string()),
    }))
}
