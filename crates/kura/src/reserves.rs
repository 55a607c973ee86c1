//! Proof of reserves of a running node: a BIP-127 transaction over every confirmed coin of
//! every registered wallet, committing to a message (for an epoch of the por/v1 proof of
//! liabilities: `kura_proofs::por::reserves_message`). The transaction format is
//! `kura_custody::reserves`'.
//!
//! [`prove`] asks the node (admin socket, `custody_coins`) for the coins its custody task
//! watches — the wallets come from the registry in the journal, the coins from the blocks
//! the task followed, so nothing is rescanned — builds the PSBT, signs the hot and deposit
//! coins with the hot signer's keys (`DIR/signer/`, opened read-only beside the running
//! node) and writes, in the output directory:
//!
//! - `reserves.psbt`: the PSBT (base64), hot-signed; the cold wallet's holders sign
//!   copies of it with `kura cold sign` and combine them with `kura cold finalize`.
//! - `reserves.tx`: the finished transaction (hex), when every coin was the hot signer's.
//! - `descriptors.json`: our registered descriptors and their roles, the list
//!   `kura cold sign --descriptors` reads.
//! - `reserves.json`: what was proven, for people and tools (`tools/verify/reserves_verify.py`):
//!
//! ```json
//! {"format": "kura-reserves/1", "message": "…", "commitment_sha256": HEX,
//!  "network": "regtest", "block": {"height": H, "hash": HEX},
//!  "total_sat": N, "coins": [{"outpoint": "TXID:VOUT", "value_sat": N,
//!  "script_pubkey": HEX, "address": "…", "wallet": ID, "role": "hot|deposit|cold|…",
//!  "index": I, "height": H, "signer": "hot|offline"}],
//!  "psbt": "reserves.psbt", "transaction": "reserves.tx" or null}
//! ```
//!
//! `commitment_sha256` is `SHA-256("Proof-of-Reserves: " ‖ message)` in the order the
//! hash produces it (the serialized outpoint's order; txid displays reverse it). The block
//! is the one the node had followed to when the coins were listed.
//!
//! [`verify_on_chain`] checks a finished transaction against a chain source: every coin
//! input unspent at the tip (`gettxout`, mempool ignored), then every signature and the
//! sum (`kura_custody::reserves::verify_reserves`), and asks the chain whether it would
//! take the transaction (`testmempoolaccept`; it must not).

use crate::server::admin::{call, Envelope, Request};
use crate::signing::keys::{self, Missing};
use anyhow::{anyhow, bail, Context, Result};
use kura_chain::bitcoin::consensus::encode::serialize_hex;
use kura_chain::bitcoin::hashes::Hash as _;
use kura_chain::bitcoin::psbt::Psbt;
use kura_chain::bitcoin::{
    Amount, BlockHash, Network, OutPoint, ScriptBuf, Transaction, TxOut, Txid,
};
use kura_chain::{ChainSource, RpcSource};
use kura_custody::reserves::{
    build_reserves_psbt, commitment_txid, finalize_reserves, never_valid_on_chain, verify_reserves,
};
use kura_custody::SpendableCoin;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub const PSBT_FILE: &str = "reserves.psbt";
pub const TX_FILE: &str = "reserves.tx";
pub const PROOF_FILE: &str = "reserves.json";
pub const DESCRIPTORS_FILE: &str = "descriptors.json";
/// The `format` of `reserves.json`.
pub const FORMAT: &str = "kura-reserves/1";

/// One coin of the proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenCoin {
    pub outpoint: OutPoint,
    pub value_sat: u64,
    pub script_pubkey: ScriptBuf,
    pub address: String,
    /// The wallet's id in the registry, its role and the index of the coin's address.
    pub wallet: u32,
    pub role: String,
    pub index: u32,
    /// The height of the block that holds it.
    pub height: u32,
    /// Whether the hot signer signed it (else it waits for the cold holders).
    pub hot_signed: bool,
}

/// What [`prove`] made and wrote.
#[derive(Debug)]
pub struct Proved {
    pub message: String,
    pub network: Network,
    /// The block the node had followed to when the coins were listed.
    pub height: u32,
    pub block_hash: BlockHash,
    pub total_sat: u64,
    /// In input order (input 1 onwards).
    pub coins: Vec<ProvenCoin>,
    /// Hot-signed; final when `tx` is set.
    pub psbt: Psbt,
    /// The finished transaction, when the hot signer signed every coin.
    pub tx: Option<Transaction>,
    pub psbt_path: PathBuf,
    pub tx_path: Option<PathBuf>,
    pub proof_path: PathBuf,
    pub descriptors_path: PathBuf,
    /// The customers' balances on the books when the coins were listed.
    pub liabilities_sat: Option<u128>,
}

impl Proved {
    /// Coins that still need the cold wallet's holders.
    pub fn offline(&self) -> usize {
        self.coins.iter().filter(|c| !c.hot_signed).count()
    }
}

/// A message given on the command line or in a file: the file's text, without one
/// trailing newline.
pub fn read_message(text: Option<&str>, file: Option<&Path>) -> Result<String> {
    match (text, file) {
        (Some(t), None) => Ok(t.to_owned()),
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the message file {}", path.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("the message file {} is not UTF-8", path.display()))?;
            let text = text
                .strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
                .unwrap_or(&text);
            Ok(text.to_owned())
        }
        _ => bail!("give the message with --message TEXT or --message-file FILE"),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v.get(name)
        .filter(|f| !f.is_null())
        .ok_or_else(|| anyhow!("the node's custody_coins answer has no {name:?}"))
}

fn u32_of(v: &Value, name: &str) -> Result<u32> {
    field(v, name)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| anyhow!("the node's custody_coins answer: {name:?} is not a height"))
}

fn str_of<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    field(v, name)?
        .as_str()
        .ok_or_else(|| anyhow!("the node's custody_coins answer: {name:?} is not text"))
}

/// Who signs the hot and deposit coins of a proof: the node's keys opened here, or the
/// separate signer the node uses (its socket given in the node's `custody_coins`).
enum HotReserves {
    Local(kura_signer::ReservesSigner),
    Remote(crate::signing::client::Client),
}

impl HotReserves {
    /// The descriptors whose coins this signer signs.
    fn spendable_descriptors(&self) -> Result<BTreeSet<String>> {
        Ok(match self {
            HotReserves::Local(s) => s
                .spendable_descriptors()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            HotReserves::Remote(client) => {
                let hello = client.hello()?;
                [hello.hot_descriptor, hello.deposit_descriptor]
                    .into_iter()
                    .collect()
            }
        })
    }

    /// The PSBT with this signer's signatures, and the coins it signed.
    fn sign(&self, psbt: &Psbt, message: &str) -> Result<(Psbt, BTreeSet<OutPoint>)> {
        match self {
            HotReserves::Local(s) => {
                let signed = s
                    .sign_reserves(psbt, message)
                    .map_err(|r| anyhow!("the hot signer refused the proof: {r}"))?;
                let set = signed.signed.iter().copied().collect();
                Ok((signed.psbt, set))
            }
            HotReserves::Remote(client) => {
                let (psbt, coins) = client.sign_reserves(psbt, message)?;
                Ok((psbt, coins.into_iter().collect()))
            }
        }
    }
}

/// Create `path` (never overwriting) with `text`, flushed to disk.
fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (kura never overwrites a proof)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Prove the reserves of the node whose data directory is `data` (it must be running
/// with a chain), committing to `message`; write the files into `out` (see the module
/// documentation).
pub fn prove(data: &Path, message: &str, out: &Path) -> Result<Proved> {
    prove_from(data, &coins_via_admin(data)?, message, out)
}

/// The node's coins and wallets (the admin socket's `custody_coins` answer), asked
/// through the admin socket of the node running in `data`.
pub fn coins_via_admin(data: &Path) -> Result<Value> {
    let operator = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    call(
        data,
        &Envelope {
            operator,
            request: Request::CustodyCoins,
        },
    )
    .context("asking the node for its coins")
}

/// [`prove`] from a `custody_coins` answer (`server::admin::coins_json`): the signer's
/// keys are read from `data`.
pub fn prove_from(data: &Path, answer: &Value, message: &str, out: &Path) -> Result<Proved> {
    let network = Network::from_str(str_of(answer, "network")?)
        .map_err(|e| anyhow!("the node's network: {e}"))?;
    if answer.get("synced").and_then(Value::as_bool) != Some(true) {
        bail!(
            "the node has not caught up with its chain yet (followed to {}, tip {}); try again when it has",
            answer["followed_height"],
            answer["tip_height"]
        );
    }
    let height = u32_of(answer, "followed_height")?;
    let block_hash = BlockHash::from_str(str_of(answer, "followed_hash")?)
        .map_err(|e| anyhow!("the node's followed block hash: {e}"))?;
    let mut wallets: BTreeMap<u32, (String, String)> = BTreeMap::new();
    for w in field(answer, "wallets")?
        .as_array()
        .ok_or_else(|| anyhow!("the node's wallets are not a list"))?
    {
        wallets.insert(
            u32_of(w, "id")?,
            (
                str_of(w, "role")?.to_owned(),
                str_of(w, "descriptor")?.to_owned(),
            ),
        );
    }
    let mut listed = Vec::new();
    for c in field(answer, "coins")?
        .as_array()
        .ok_or_else(|| anyhow!("the node's coins are not a list"))?
    {
        let outpoint = OutPoint::from_str(str_of(c, "outpoint")?)
            .map_err(|e| anyhow!("the node listed a coin with a bad outpoint: {e}"))?;
        let value_sat = field(c, "value_sat")?
            .as_u64()
            .ok_or_else(|| anyhow!("coin {outpoint}: value_sat is not a number"))?;
        let wallet = u32_of(c, "wallet")?;
        let (role, descriptor) = wallets.get(&wallet).cloned().ok_or_else(|| {
            anyhow!("coin {outpoint} belongs to wallet {wallet}, which the node did not list")
        })?;
        listed.push((
            SpendableCoin {
                outpoint,
                value_sat,
                descriptor,
                index: u32_of(c, "index")?,
            },
            wallet,
            role,
            u32_of(c, "height")?,
        ));
    }
    if listed.is_empty() {
        bail!("the node holds no confirmed coin: there are no reserves to prove");
    }
    let spendable: Vec<SpendableCoin> = listed.iter().map(|(c, ..)| c.clone()).collect();
    let built = build_reserves_psbt(&spendable, message, network)
        .map_err(|e| anyhow!("building the proof of reserves: {e}"))?;

    let descriptors: Vec<String> = wallets.values().map(|(_, d)| d.clone()).collect();
    let signer = match answer.get("signer_socket").and_then(Value::as_str) {
        Some(socket) => HotReserves::Remote(crate::signing::client::Client::new(Path::new(socket))),
        None => HotReserves::Local(
            kura_signer::ReservesSigner::new(
                keys::hot_key(data, network, Missing::Refuse)?,
                descriptors.clone(),
                vec![keys::deposit_master(data, network, Missing::Refuse)?],
            )
            .map_err(|e| anyhow!("opening the hot signer: {e}"))?,
        ),
    };
    let hot_wallets = signer.spendable_descriptors()?;
    let any_hot = listed
        .iter()
        .any(|(c, ..)| hot_wallets.contains(&c.descriptor));
    let (psbt, hot_signed): (Psbt, BTreeSet<OutPoint>) = if any_hot {
        signer.sign(&built.psbt, message)?
    } else {
        (built.psbt.clone(), BTreeSet::new())
    };
    let tx = if hot_signed.len() == listed.len() {
        let (tx, total) = finalize_reserves(std::slice::from_ref(&psbt))
            .map_err(|e| anyhow!("finalizing the hot-signed proof: {e}"))?;
        if total != built.total_sat {
            bail!(
                "the finished proof shows {total} sat, not the {} sat built",
                built.total_sat
            );
        }
        Some(tx)
    } else {
        None
    };

    let by_outpoint: BTreeMap<OutPoint, &(SpendableCoin, u32, String, u32)> =
        listed.iter().map(|l| (l.0.outpoint, l)).collect();
    let mut coins = Vec::with_capacity(built.coins.len());
    for (op, input) in built.coins.iter().zip(psbt.inputs.iter().skip(1)) {
        let (coin, wallet, role, height) = by_outpoint
            .get(op)
            .copied()
            .ok_or_else(|| anyhow!("the proof spends {op}, which the node did not list"))?;
        let utxo = input
            .witness_utxo
            .as_ref()
            .ok_or_else(|| anyhow!("the proof's input {op} has no amount"))?;
        let address = kura_chain::bitcoin::Address::from_script(&utxo.script_pubkey, network)
            .map(|a| a.to_string())
            .unwrap_or_default();
        coins.push(ProvenCoin {
            outpoint: *op,
            value_sat: coin.value_sat,
            script_pubkey: utxo.script_pubkey.clone(),
            address,
            wallet: *wallet,
            role: role.clone(),
            index: coin.index,
            height: *height,
            hot_signed: hot_signed.contains(op),
        });
    }

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let psbt_path = out.join(PSBT_FILE);
    let proof_path = out.join(PROOF_FILE);
    let descriptors_path = out.join(DESCRIPTORS_FILE);
    let tx_path = tx.as_ref().map(|_| out.join(TX_FILE));
    for path in [&psbt_path, &proof_path, &descriptors_path]
        .into_iter()
        .chain(tx_path.as_ref())
    {
        if path.exists() {
            bail!(
                "{} exists; kura never overwrites a proof (give another --out)",
                path.display()
            );
        }
    }
    let descriptor_list = json!({
        "descriptors": descriptors,
        "wallets": wallets
            .values()
            .map(|(role, d)| json!({"descriptor": d, "role": role}))
            .collect::<Vec<_>>(),
    });
    let proof = json!({
        "format": FORMAT,
        "message": message,
        "commitment_sha256": commitment_hex(message),
        "network": network.to_string(),
        "block": {"height": height, "hash": block_hash.to_string()},
        "total_sat": built.total_sat,
        "coins": coins.iter().map(|c| json!({
            "outpoint": c.outpoint.to_string(),
            "value_sat": c.value_sat,
            "script_pubkey": c.script_pubkey.to_hex_string(),
            "address": c.address,
            "wallet": c.wallet,
            "role": c.role,
            "index": c.index,
            "height": c.height,
            "signer": if c.hot_signed { "hot" } else { "offline" },
        })).collect::<Vec<_>>(),
        "psbt": PSBT_FILE,
        "transaction": tx.as_ref().map(|_| TX_FILE),
    });
    write_new(&psbt_path, &format!("{psbt}\n"))?;
    write_new(
        &descriptors_path,
        &format!("{}\n", serde_json::to_string_pretty(&descriptor_list)?),
    )?;
    if let (Some(path), Some(tx)) = (&tx_path, &tx) {
        write_new(path, &format!("{}\n", serialize_hex(tx)))?;
    }
    write_new(
        &proof_path,
        &format!("{}\n", serde_json::to_string_pretty(&proof)?),
    )?;
    let liabilities_sat = match answer.get("liabilities_sat") {
        Some(Value::Number(n)) => n.as_u64().map(u128::from),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(Proved {
        message: message.to_owned(),
        network,
        height,
        block_hash,
        total_sat: built.total_sat,
        coins,
        psbt,
        tx,
        psbt_path,
        tx_path,
        proof_path,
        descriptors_path,
        liabilities_sat,
    })
}

/// A raw transaction file: hex (as `kura cold finalize --out` and [`prove`] write it).
pub fn read_tx(path: &Path) -> Result<Transaction> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the transaction {}", path.display()))?;
    kura_chain::bitcoin::consensus::encode::deserialize_hex(text.trim())
        .map_err(|e| anyhow!("{} is not a raw transaction in hex: {e}", path.display()))
}

/// One coin as the chain showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainCoin {
    pub outpoint: OutPoint,
    pub value_sat: u64,
    pub confirmations: u64,
}

/// A proof checked against the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainVerified {
    pub total_sat: u64,
    pub coins: Vec<ChainCoin>,
    /// The tip every coin was unspent at.
    pub tip_height: u32,
    pub tip_hash: BlockHash,
    /// The chain's `testmempoolaccept` reject reason, when it answered.
    pub chain_refusal: Option<String>,
}

/// The unspent output `op` at the chain's tip (mempool ignored), with the tip's hash the
/// answer is for and its confirmations; `None` if spent or unknown.
fn unspent(chain: &RpcSource, op: &OutPoint) -> Result<Option<(TxOut, BlockHash, u64)>> {
    let answer: Value = chain
        .call(
            "gettxout",
            &[json!(op.txid.to_string()), json!(op.vout), json!(false)],
        )
        .map_err(|e| anyhow!("asking the chain for {op}: {e}"))?;
    if answer.is_null() {
        return Ok(None);
    }
    let bad = |what: &str| anyhow!("the chain's gettxout answer for {op} has no valid {what}");
    let btc = answer["value"].as_f64().ok_or_else(|| bad("value"))?;
    let value = Amount::from_btc(btc).map_err(|_| bad("value"))?;
    let script = answer["scriptPubKey"]["hex"]
        .as_str()
        .and_then(|h| ScriptBuf::from_hex(h).ok())
        .ok_or_else(|| bad("scriptPubKey"))?;
    let best = answer["bestblock"]
        .as_str()
        .and_then(|h| BlockHash::from_str(h).ok())
        .ok_or_else(|| bad("bestblock"))?;
    let confirmations = answer["confirmations"].as_u64().unwrap_or(0);
    Ok(Some((
        TxOut {
            value,
            script_pubkey: script,
        },
        best,
        confirmations,
    )))
}

/// Check the finished proof `tx` for `message` against `chain` (see the module
/// documentation). Fails naming the first coin that is not unspent at the tip, or the
/// first check the transaction does not pass.
pub fn verify_on_chain(
    tx: &Transaction,
    message: &str,
    chain: &RpcSource,
) -> Result<ChainVerified> {
    never_valid_on_chain(tx, message).map_err(|e| anyhow!("not a proof for this message: {e}"))?;
    // The tip may move while the coins are looked up: every answer must be for one tip.
    for _attempt in 0..3 {
        let tip = chain
            .tip()
            .map_err(|e| anyhow!("asking the chain for its tip: {e}"))?;
        let mut prevouts = BTreeMap::new();
        let mut coins = Vec::new();
        let mut moved = false;
        for (i, txin) in tx.input.iter().enumerate().skip(1) {
            let op = txin.previous_output;
            let Some((out, best, confirmations)) = unspent(chain, &op)? else {
                bail!(
                    "input {i} spends {op}, which is not an unspent coin at block {} {} (spent since, or never existed): the proof does not hold at the tip",
                    tip.height,
                    tip.hash
                );
            };
            if best != tip.hash {
                moved = true;
                break;
            }
            coins.push(ChainCoin {
                outpoint: op,
                value_sat: out.value.to_sat(),
                confirmations,
            });
            prevouts.insert(op, out);
        }
        if moved {
            continue;
        }
        let total_sat = verify_reserves(tx, &prevouts, message)
            .map_err(|e| anyhow!("the proof does not verify: {e}"))?;
        let chain_refusal = chain_refusal(chain, tx)?;
        return Ok(ChainVerified {
            total_sat,
            coins,
            tip_height: tip.height,
            tip_hash: tip.hash,
            chain_refusal,
        });
    }
    bail!("the chain's tip kept moving while the coins were looked up; try again")
}

/// Offer `tx` to the chain's `testmempoolaccept`: it must be refused. `None` when the
/// chain does not answer that call.
fn chain_refusal(chain: &RpcSource, tx: &Transaction) -> Result<Option<String>> {
    let answer: Value = match chain.call("testmempoolaccept", &[json!([serialize_hex(tx)])]) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "the chain did not answer testmempoolaccept");
            return Ok(None);
        }
    };
    let first = &answer[0];
    if first["allowed"].as_bool() == Some(true) {
        bail!(
            "the chain would accept transaction {}: it is not a proof of reserves",
            tx.compute_txid()
        );
    }
    Ok(Some(
        first["reject-reason"]
            .as_str()
            .unwrap_or("refused")
            .to_owned(),
    ))
}

/// Txid of the commitment, for display: the hash's own byte order (what `reserves.json`
/// shows as `commitment_sha256`).
pub fn commitment_hex(message: &str) -> String {
    let txid: Txid = commitment_txid(message);
    hex::encode(txid.to_byte_array())
}
