//! `kura cold sign | finalize`: the cold wallet's ceremony.
//!
//! `sign` runs offline, on the machine that holds one cold key: it reads a refill PSBT,
//! the key (an extended private master key, `xprv…`/`tprv…`) and the list of our
//! registered public descriptors (one per line, or the JSON `kura custody status --json`
//! prints), shows what the transaction does, refuses any transaction paying anything
//! that is not one of our wallets, and otherwise writes a copy of the PSBT with this
//! key's signatures added. `finalize` combines the signed copies, finalizes the
//! transaction and prints it, and with `--broadcast` hands it to the node's chain.
//!
//! A proof of reserves (`kura reserves prove`, BIP-127) is recognised by its commitment
//! field: `sign` shows it as one (the message, the total, the coins) and, once it is
//! checked to be one for that message, signs its coins SIGHASH_ALL; `finalize` finishes
//! and checks it but refuses `--broadcast`, since it can never be valid on chain.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use kura_chain::bitcoin::bip32::Xpriv;
use kura_chain::bitcoin::consensus::encode::serialize_hex;
use kura_chain::bitcoin::psbt::Psbt;
use kura_chain::bitcoin::secp256k1::Secp256k1;
use kura_chain::bitcoin::{Network, NetworkKind, Transaction};
use kura_chain::{ChainSource, RpcAuth, RpcEndpoint, RpcSource};
use kura_signer::Summary;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Largest PSBT, key or descriptor file read (a refill PSBT is a few kilobytes).
const MAX_FILE: u64 = 16 * 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum ColdCommand {
    /// Review a PSBT against our wallets and add this key's signatures to a copy of it.
    /// Offline: no node, no network. Refuses (and writes nothing) when any output pays
    /// something that is not one of our wallets.
    Sign(SignArgs),
    /// Combine signed copies of one PSBT, finalize it and print its txid and raw
    /// transaction (hex); with --broadcast, send it to the node's chain.
    Finalize(FinalizeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    Bitcoin,
    Testnet,
    Signet,
    Regtest,
}

impl From<NetworkArg> for Network {
    fn from(n: NetworkArg) -> Network {
        match n {
            NetworkArg::Bitcoin => Network::Bitcoin,
            NetworkArg::Testnet => Network::Testnet,
            NetworkArg::Signet => Network::Signet,
            NetworkArg::Regtest => Network::Regtest,
        }
    }
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The PSBT to sign (base64 text, or binary).
    #[arg(long)]
    psbt: PathBuf,
    /// A file holding this holder's extended private master key (xprv… or tprv…).
    #[arg(long)]
    key: PathBuf,
    /// Our registered public descriptors: one per line (blank lines and lines starting
    /// with # are skipped), or the JSON object `kura custody status --json` prints.
    #[arg(long)]
    descriptors: PathBuf,
    /// The network the PSBT, the key and the descriptors belong to.
    #[arg(long, value_enum, default_value = "bitcoin")]
    network: NetworkArg,
    /// Where to write the signed copy (never overwritten). Default: beside the PSBT, as
    /// NAME.signed-N.psbt with the first free N.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// A signed copy of the PSBT (repeat for each copy).
    #[arg(long, required = true, num_args = 1..)]
    psbt: Vec<PathBuf>,
    /// Write the raw transaction (hex) to this file instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Send the transaction to the chain of the node in --data (its devnet), or to the
    /// Bitcoin Core node at --rpc-url.
    #[arg(long)]
    broadcast: bool,
    /// Data directory of a running `kura serve --chain devnet` node.
    #[arg(long, requires = "broadcast")]
    data: Option<PathBuf>,
    /// Bitcoin Core's JSON-RPC URL (with --rpc-cookie, or --rpc-user and --rpc-password).
    #[arg(long, requires = "broadcast", conflicts_with = "data")]
    rpc_url: Option<String>,
    /// Bitcoin Core's cookie file.
    #[arg(long, requires = "rpc_url")]
    rpc_cookie: Option<PathBuf>,
    /// Bitcoin Core's RPC user.
    #[arg(long, requires = "rpc_url")]
    rpc_user: Option<String>,
    /// Bitcoin Core's RPC password.
    #[arg(long, env = "KURA_RPC_PASSWORD", hide_env_values = true)]
    rpc_password: Option<String>,
}

pub fn run(cmd: &ColdCommand) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        ColdCommand::Sign(args) => sign(args, &mut out),
        ColdCommand::Finalize(args) => finalize(args, &mut out),
    }
}

/// A file's bytes, with an error naming it.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a file", path.display());
    }
    if meta.len() > MAX_FILE {
        bail!(
            "{what} {} is too large ({} bytes) to be one",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// A PSBT file: base64 text (as `kura` writes them), or the binary format.
fn read_psbt(path: &Path) -> Result<Psbt> {
    let bytes = read_file(path, "the PSBT")?;
    if bytes.starts_with(b"psbt\xff") {
        return Psbt::deserialize(&bytes)
            .map_err(|e| anyhow!("{} is not a valid PSBT: {e}", path.display()));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| {
            anyhow!(
                "{} is not a PSBT (neither base64 text nor binary)",
                path.display()
            )
        })?
        .trim();
    if text.is_empty() {
        bail!("{} is empty, not a PSBT", path.display());
    }
    Psbt::from_str(text).map_err(|e| anyhow!("{} is not a valid base64 PSBT: {e}", path.display()))
}

/// The holder's master key. The key's text never appears in an error.
fn read_key(path: &Path, network: Network) -> Result<Xpriv> {
    let bytes = read_file(path, "the key file")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow!("the key file {} is not text", path.display()))?;
    let mut words = text.split_whitespace();
    let (Some(word), None) = (words.next(), words.next()) else {
        bail!(
            "the key file {} must hold exactly one extended private key (xprv… or tprv…)",
            path.display()
        );
    };
    if word.starts_with("xpub") || word.starts_with("tpub") {
        bail!(
            "the key file {} holds a public key; signing needs the private master key (xprv… or tprv…)",
            path.display()
        );
    }
    let key = Xpriv::from_str(word).map_err(|e| {
        anyhow!(
            "the key file {} does not hold an extended private key (xprv… or tprv…): {e}",
            path.display()
        )
    })?;
    if key.network != NetworkKind::from(network) {
        let (found, wanted) = match key.network {
            NetworkKind::Main => ("a mainnet key (xprv)", "a test-network key (tprv)"),
            NetworkKind::Test => ("a test-network key (tprv)", "a mainnet key (xprv)"),
        };
        bail!(
            "the key file {} holds {found}, but --network {network} needs {wanted}",
            path.display()
        );
    }
    if key.depth != 0 {
        bail!(
            "the key file {} holds a key at depth {}; give the master key (depth 0) the cold descriptor's key origins start from",
            path.display(),
            key.depth
        );
    }
    Ok(key)
}

/// Our wallets: descriptors, and a label for each (its role, when the file says).
#[derive(Debug)]
struct OurWallets {
    descriptors: Vec<String>,
    labels: Vec<String>,
}

fn read_descriptors(path: &Path) -> Result<OurWallets> {
    let bytes = read_file(path, "the descriptor list")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow!("the descriptor list {} is not text", path.display()))?;
    let mut descriptors = Vec::new();
    let mut labels = Vec::new();
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            anyhow!(
                "the descriptor list {} is not valid JSON: {e}",
                path.display()
            )
        })?;
        let list = value
            .get("descriptors")
            .and_then(|d| d.as_array())
            .ok_or_else(|| {
                anyhow!(
                    "the descriptor list {} is JSON without a \"descriptors\" array",
                    path.display()
                )
            })?;
        let roles: Vec<(String, String)> = value
            .get("wallets")
            .and_then(|w| w.as_array())
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| {
                        Some((
                            w.get("descriptor")?.as_str()?.to_owned(),
                            w.get("role")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (i, d) in list.iter().enumerate() {
            let d = d.as_str().ok_or_else(|| {
                anyhow!(
                    "the descriptor list {}: entry {i} of \"descriptors\" is not a string",
                    path.display()
                )
            })?;
            let role = roles.iter().find(|(text, _)| text == d).map(|(_, r)| r);
            labels.push(match role {
                Some(r) => format!("{r} #{i}"),
                None => format!("wallet #{i}"),
            });
            descriptors.push(d.to_owned());
        }
    } else {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            labels.push(format!("wallet #{}", descriptors.len()));
            descriptors.push(line.to_owned());
        }
    }
    if descriptors.is_empty() {
        bail!("the descriptor list {} names no descriptor", path.display());
    }
    Ok(OurWallets {
        descriptors,
        labels,
    })
}

/// Satoshis as BTC with eight decimals.
fn btc(sat: u64) -> String {
    format!("{}.{:08} BTC", sat / 100_000_000, sat % 100_000_000)
}

fn print_summary(
    out: &mut dyn Write,
    psbt_path: &Path,
    summary: &Summary,
    ours: &OurWallets,
) -> Result<()> {
    let label = |wallet: usize| {
        ours.labels
            .get(wallet)
            .cloned()
            .unwrap_or_else(|| format!("wallet #{wallet}"))
    };
    writeln!(out, "PSBT {}", psbt_path.display())?;
    writeln!(out, "transaction {}", summary.txid)?;
    writeln!(out, "our wallets:")?;
    for (i, d) in ours.descriptors.iter().enumerate() {
        writeln!(out, "  {}: {d}", label(i))?;
    }
    writeln!(out, "inputs ({}):", summary.inputs.len())?;
    for i in &summary.inputs {
        let amount = i.value_sat.map_or_else(|| "amount unknown".into(), btc);
        let from = match &i.ours {
            Some(o) => format!("from {} index {}", label(o.wallet), o.index),
            None => "NOT FROM OUR WALLETS".into(),
        };
        writeln!(out, "  {}  {amount}  {from}", i.outpoint)?;
    }
    writeln!(out, "outputs ({}):", summary.outputs.len())?;
    for o in &summary.outputs {
        let to = match &o.ours {
            Some(w) => format!("pays {} index {}", label(w.wallet), w.index),
            None => "NOT OURS".into(),
        };
        writeln!(
            out,
            "  #{} {}  {}  {to}",
            o.vout,
            o.address,
            btc(o.amount_sat)
        )?;
    }
    match summary.fee_sat {
        Some(fee) => writeln!(out, "fee: {} ({fee} sat)", btc(fee))?,
        None => writeln!(
            out,
            "fee: unknown (an input amount is missing or the outputs exceed the inputs)"
        )?,
    }
    Ok(())
}

/// `DIR/NAME.signed-N.psbt` for the first N not taken, created (empty) so that two
/// signers working beside each other never take the same name.
fn default_out(psbt: &Path) -> Result<(PathBuf, std::fs::File)> {
    let name = psbt
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "refill.psbt".into());
    let stem = name.strip_suffix(".psbt").unwrap_or(&name).to_owned();
    let dir = psbt.parent().unwrap_or_else(|| Path::new(""));
    for n in 1..10_000u32 {
        let path = dir.join(format!("{stem}.signed-{n}.psbt"));
        match create_new(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!(
        "no free name {stem}.signed-N.psbt beside {}; give --out",
        psbt.display()
    )
}

fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Write `text` to a file just created, flushed to disk; removes the file on failure.
fn fill(path: &Path, mut file: std::fs::File, text: &str) -> Result<()> {
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

fn signature_count(psbt: &Psbt) -> usize {
    psbt.inputs
        .iter()
        .map(|i| i.partial_sigs.len() + i.tap_key_sig.iter().count() + i.tap_script_sigs.len())
        .sum()
}

fn sign(args: &SignArgs, out: &mut dyn Write) -> Result<()> {
    let network = Network::from(args.network);
    // Every file is read and checked before anything is shown or written.
    let mut psbt = read_psbt(&args.psbt)?;
    let key = read_key(&args.key, network)?;
    let ours = read_descriptors(&args.descriptors)?;
    if let Some(path) = &args.out {
        if path.exists() {
            bail!("{} exists; kura never overwrites a PSBT", path.display());
        }
    }
    if kura_custody::reserves::is_reserves_psbt(&psbt) {
        return sign_reserves(args, psbt, &key, &ours, out);
    }
    let summary = kura_signer::summarize(&psbt, &ours.descriptors, network)
        .map_err(|e| anyhow!("the descriptor list {}: {e}", args.descriptors.display()))?;
    print_summary(out, &args.psbt, &summary, &ours)?;
    out.flush()?;
    if let Some(foreign) = summary.outputs.iter().find(|o| o.ours.is_none()) {
        bail!(
            "refused: output #{} pays {} to {}, which is not one of our wallets; nothing was signed or written",
            foreign.vout,
            btc(foreign.amount_sat),
            foreign.address
        );
    }
    let before = signature_count(&psbt);
    let added = kura_signer::cold_sign(&mut psbt, &key, &ours.descriptors, network)
        .map_err(|r| anyhow!("refused: {r}; nothing was written"))?;
    let (path, file) = match &args.out {
        Some(path) => {
            let file = create_new(path).with_context(|| format!("creating {}", path.display()))?;
            (path.clone(), file)
        }
        None => default_out(&args.psbt)?,
    };
    fill(&path, file, &format!("{psbt}\n"))?;
    let fingerprint = key.fingerprint(&Secp256k1::signing_only());
    writeln!(
        out,
        "added {added} signature{} with key {fingerprint} (the copy holds {} in all, {} before)",
        if added == 1 { "" } else { "s" },
        signature_count(&psbt),
        before
    )?;
    writeln!(out, "wrote {}", path.display())?;
    Ok(())
}

/// The fee of a finalized transaction, from the PSBTs' input amounts.
fn fee_of(tx: &Transaction, psbt: &Psbt) -> Option<u64> {
    let inputs = psbt
        .inputs
        .iter()
        .map(|i| i.witness_utxo.as_ref().map(|u| u.value.to_sat()))
        .try_fold(0u64, |acc, v| acc.checked_add(v?))?;
    let outputs = tx
        .output
        .iter()
        .try_fold(0u64, |acc, o| acc.checked_add(o.value.to_sat()))?;
    inputs.checked_sub(outputs)
}

fn chain_for(args: &FinalizeArgs) -> Result<RpcSource> {
    if let Some(url) = &args.rpc_url {
        let auth = match (&args.rpc_cookie, &args.rpc_user, &args.rpc_password) {
            (Some(c), _, _) => RpcAuth::CookieFile(c.clone()),
            (None, Some(u), Some(p)) => RpcAuth::UserPass(u.clone(), p.clone()),
            _ => bail!("--rpc-url needs --rpc-cookie FILE, or --rpc-user and --rpc-password"),
        };
        return RpcSource::new(url, auth).map_err(|e| anyhow!("connecting to {url}: {e}"));
    }
    let Some(data) = &args.data else {
        bail!("--broadcast needs --data DIR (a node running the devnet) or --rpc-url URL");
    };
    let path = RpcEndpoint::file_in(&data.join("devnet"));
    if !path.exists() {
        bail!(
            "no running devnet found: {} does not exist (is `kura serve --chain devnet --data {}` running?)",
            path.display(),
            data.display()
        );
    }
    let endpoint = RpcEndpoint::read(&path)
        .map_err(|e| anyhow!("reading the devnet's endpoint {}: {e}", path.display()))?;
    RpcSource::for_endpoint(&endpoint)
        .map_err(|e| anyhow!("connecting to the devnet at {}: {e}", endpoint.url))
}

fn finalize(args: &FinalizeArgs, out: &mut dyn Write) -> Result<()> {
    let psbts = args
        .psbt
        .iter()
        .map(|p| read_psbt(p))
        .collect::<Result<Vec<_>>>()?;
    if psbts.iter().any(kura_custody::reserves::is_reserves_psbt) {
        return finalize_reserves(args, &psbts, out);
    }
    if args.broadcast && args.data.is_none() && args.rpc_url.is_none() {
        bail!("--broadcast needs --data DIR (a node running the devnet) or --rpc-url URL");
    }
    if let Some(first) = psbts.first() {
        let txid = first.unsigned_tx.compute_txid();
        for (p, path) in psbts.iter().zip(&args.psbt).skip(1) {
            if p.unsigned_tx.compute_txid() != txid {
                bail!(
                    "{} is a different transaction ({}) from {} ({txid})",
                    path.display(),
                    p.unsigned_tx.compute_txid(),
                    args.psbt[0].display()
                );
            }
        }
    }
    let tx = kura_signer::finalize(&psbts)
        .map_err(|e| anyhow!("cannot finalize from {} signed copies: {e}", psbts.len()))?;
    let txid = tx.compute_txid();
    let hex = serialize_hex(&tx);
    writeln!(out, "txid {txid}")?;
    let fee = psbts.first().and_then(|p| fee_of(&tx, p));
    match fee {
        Some(fee) => {
            // Fee rate with one decimal, in integers.
            let tenths = fee.saturating_mul(10) / tx.vsize().max(1) as u64;
            writeln!(
                out,
                "size {} vB, fee {} ({fee} sat, {}.{} sat/vB)",
                tx.vsize(),
                btc(fee),
                tenths / 10,
                tenths % 10
            )?;
        }
        None => writeln!(out, "size {} vB, fee unknown", tx.vsize())?,
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, format!("{hex}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(out, "wrote the raw transaction to {}", path.display())?;
        }
        None => writeln!(out, "{hex}")?,
    }
    if args.broadcast {
        let chain = chain_for(args)?;
        let accepted = chain
            .broadcast(&tx)
            .map_err(|e| anyhow!("broadcasting {txid}: {e}"))?;
        writeln!(out, "broadcast: the chain accepted {accepted}")?;
    }
    Ok(())
}

/// The signed copy's path and file: `--out`, or the first free `NAME.signed-N.psbt`.
fn signed_copy(args: &SignArgs) -> Result<(PathBuf, std::fs::File)> {
    match &args.out {
        Some(path) => {
            let file = create_new(path).with_context(|| format!("creating {}", path.display()))?;
            Ok((path.clone(), file))
        }
        None => default_out(&args.psbt),
    }
}

/// `sign` for a proof of reserves (BIP-127): shown as one, checked to be one for the
/// message it carries, and its coin inputs signed SIGHASH_ALL.
fn sign_reserves(
    args: &SignArgs,
    mut psbt: Psbt,
    key: &Xpriv,
    ours: &OurWallets,
    out: &mut dyn Write,
) -> Result<()> {
    use kura_custody::reserves::{check_reserves_psbt, psbt_message};
    let network = Network::from(args.network);
    let refused = |why: String| {
        anyhow!(
            "refused: {} is not a valid proof of reserves: {why}; nothing was signed or written",
            args.psbt.display()
        )
    };
    let message = match psbt_message(&psbt) {
        Some(Ok(m)) => m,
        Some(Err(e)) => return Err(refused(e.to_string())),
        None => return Err(refused("no commitment message".into())),
    };
    let shape = check_reserves_psbt(&psbt, &message).map_err(|e| refused(e.to_string()))?;
    let summary = kura_signer::summarize(&psbt, &ours.descriptors, network)
        .map_err(|e| anyhow!("the descriptor list {}: {e}", args.descriptors.display()))?;
    let label = |wallet: usize| {
        ours.labels
            .get(wallet)
            .cloned()
            .unwrap_or_else(|| format!("wallet #{wallet}"))
    };
    writeln!(out, "PSBT {}", args.psbt.display())?;
    writeln!(
        out,
        "PROOF OF RESERVES: it can never be valid on chain and moves nothing"
    )?;
    writeln!(
        out,
        "  its first input spends SHA-256(\"Proof-of-Reserves: \" + message) = {} vout 0, which no transaction creates",
        kura::reserves::commitment_hex(&message)
    )?;
    writeln!(out, "  message: {message:?}")?;
    writeln!(
        out,
        "  total: {} ({} sat) over {} coin(s); one OP_RETURN output nobody can spend; no fee",
        btc(shape.total_sat),
        shape.total_sat,
        shape.coins.len()
    )?;
    writeln!(out, "our wallets:")?;
    for (i, d) in ours.descriptors.iter().enumerate() {
        writeln!(out, "  {}: {d}", label(i))?;
    }
    writeln!(out, "coins ({}):", shape.coins.len())?;
    for i in summary.inputs.iter().skip(1) {
        let amount = i.value_sat.map_or_else(|| "amount unknown".into(), btc);
        let from = match &i.ours {
            Some(o) => format!("from {} index {}", label(o.wallet), o.index),
            None => "NOT FROM OUR WALLETS".into(),
        };
        writeln!(out, "  {}  {amount}  {from}", i.outpoint)?;
    }
    out.flush()?;
    let before = signature_count(&psbt);
    let (added, _) = kura_signer::cold_sign_reserves(&mut psbt, key, &ours.descriptors, network)
        .map_err(|r| anyhow!("refused: {r}; nothing was written"))?;
    let (path, file) = signed_copy(args)?;
    fill(&path, file, &format!("{psbt}\n"))?;
    let fingerprint = key.fingerprint(&Secp256k1::signing_only());
    writeln!(
        out,
        "added {added} signature{} (SIGHASH_ALL) with key {fingerprint} (the copy holds {} in all, {} before)",
        if added == 1 { "" } else { "s" },
        signature_count(&psbt),
        before
    )?;
    writeln!(out, "wrote {}", path.display())?;
    Ok(())
}

/// `finalize` for a proof of reserves: combined, finalized and checked against the
/// PSBTs' amounts, never broadcast.
fn finalize_reserves(args: &FinalizeArgs, psbts: &[Psbt], out: &mut dyn Write) -> Result<()> {
    if args.broadcast {
        bail!(
            "a proof of reserves can never be valid on chain, so it is not broadcast; drop --broadcast and check it with `kura reserves verify`"
        );
    }
    let (tx, total) = kura_custody::reserves::finalize_reserves(psbts).map_err(|e| {
        anyhow!(
            "cannot finalize the proof of reserves from {} signed copies: {e}",
            psbts.len()
        )
    })?;
    let message = psbts
        .first()
        .and_then(kura_custody::reserves::psbt_message)
        .and_then(Result::ok)
        .unwrap_or_default();
    writeln!(
        out,
        "proof of reserves: can never be valid on chain (not broadcast)"
    )?;
    writeln!(out, "message {message:?}")?;
    writeln!(
        out,
        "total {} ({total} sat) over {} coin(s); every signature checked against the PSBT's amounts",
        btc(total),
        tx.input.len() - 1
    )?;
    writeln!(out, "txid {}", tx.compute_txid())?;
    let hex = serialize_hex(&tx);
    match &args.out {
        Some(path) => {
            std::fs::write(path, format!("{hex}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(out, "wrote the proof to {}", path.display())?;
        }
        None => writeln!(out, "{hex}")?,
    }
    Ok(())
}
