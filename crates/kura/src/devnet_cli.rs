//! `kura devnet send | mine | reorg | balance | tx`: drive the built-in devnet of a running
//! node (`kura serve --chain devnet`). The node writes its devnet's JSON-RPC address to
//! `DIR/devnet/rpc.json` (`{"url": "http://127.0.0.1:PORT", "cookie": "DIR/devnet/.cookie"}`);
//! these commands read it and talk to the devnet through the same Bitcoin Core JSON-RPC
//! client the node uses against a real `bitcoind`, plus the devnet's own `devnet_*` methods
//! where Core has no equivalent.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use kura_chain::bitcoin::{Address, Amount, Denomination, Transaction, Txid};
use kura_chain::{ChainSource, RpcEndpoint, RpcSource, TxStatus};
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum DevnetCommand {
    /// Pay AMOUNT (BTC, decimal text such as 0.5) from the devnet's faucet to ADDRESS.
    /// Prints the txid; the payment is unconfirmed until a block is mined.
    Send {
        /// A regtest address (bcrt1…, or a legacy regtest address).
        address: String,
        /// Amount in BTC, e.g. 0.00100000.
        amount: String,
    },
    /// Mine N blocks (default 1) to the faucet, with the mempool's transactions. Prints the
    /// new tip's height and hash.
    Mine {
        /// How many blocks.
        #[arg(default_value_t = 1)]
        blocks: u32,
    },
    /// Reorganise the chain: disconnect the top DEPTH blocks (their transactions go back to
    /// the mempool) and mine a longer replacement branch without them.
    Reorg {
        /// How many blocks to disconnect (at least 1).
        depth: u32,
    },
    /// Print ADDRESS's confirmed balance in BTC, then the unconfirmed change the mempool
    /// makes to it.
    Balance {
        /// A regtest address.
        address: String,
    },
    /// Print a readable summary of a transaction in the mempool or the chain.
    Tx {
        /// The transaction id.
        txid: String,
    },
}

/// Runs one devnet command against the node whose data directory is `data_dir`.
pub fn run(cmd: &DevnetCommand, data_dir: &Path) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    execute(cmd, data_dir, &mut out)
}

/// The devnet's JSON-RPC client, from `DIR/devnet/rpc.json` of a running node.
pub(crate) fn connect(data_dir: &Path) -> Result<RpcSource> {
    let path = RpcEndpoint::file_in(&data_dir.join("devnet"));
    if !path.exists() {
        bail!(
            "no running devnet found: {} does not exist (start the node with `kura serve --chain devnet --data {}`)",
            path.display(),
            data_dir.display()
        );
    }
    let endpoint = RpcEndpoint::read(&path).context("reading the devnet's rpc.json")?;
    RpcSource::for_endpoint(&endpoint)
        .with_context(|| format!("connecting to the devnet at {}", endpoint.url))
}

/// Satoshis as BTC with eight decimals.
fn btc(sat: u64) -> String {
    format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000)
}

fn signed_btc(sat: i64) -> String {
    let sign = if sat < 0 { "-" } else { "+" };
    format!("{sign}{}", btc(sat.unsigned_abs()))
}

fn check_address(text: &str) -> Result<Address> {
    Address::from_str(text)
        .map_err(|e| anyhow!("not an address: {text}: {e}"))?
        .require_network(kura_chain::bitcoin::Network::Regtest)
        .map_err(|_| anyhow!("{text} is not a regtest address"))
}

fn execute(cmd: &DevnetCommand, data_dir: &Path, out: &mut dyn Write) -> Result<()> {
    let rpc = connect(data_dir)?;
    match cmd {
        DevnetCommand::Send { address, amount } => {
            check_address(address)?;
            let parsed = Amount::from_str_in(amount, Denomination::Bitcoin)
                .map_err(|e| anyhow!("amount {amount:?} is not a BTC amount: {e}"))?;
            if parsed == Amount::ZERO {
                bail!("amount must be positive");
            }
            let txid: String = rpc
                .call("devnet_send", &[json!(address), json!(amount)])
                .context("devnet_send")?;
            writeln!(out, "{txid}")?;
        }
        DevnetCommand::Mine { blocks } => {
            let _: Vec<String> = rpc
                .call("devnet_mine", &[json!(blocks)])
                .context("devnet_mine")?;
            let tip = rpc.tip().context("reading the tip")?;
            writeln!(out, "{} {}", tip.height, tip.hash)?;
        }
        DevnetCommand::Reorg { depth } => {
            let r: Value = rpc
                .call("devnet_reorg", &[json!(depth)])
                .context("devnet_reorg")?;
            let count = |k: &str| r[k].as_array().map_or(0, Vec::len);
            writeln!(
                out,
                "disconnected {} blocks, {} transactions back in the mempool, {} dropped",
                count("disconnected"),
                count("returned_to_mempool"),
                count("dropped")
            )?;
            writeln!(
                out,
                "new tip {} {}",
                r["height"],
                r["bestblockhash"].as_str().unwrap_or("?")
            )?;
        }
        DevnetCommand::Balance { address } => {
            let addr = check_address(address)?;
            // Confirmed: Core's own UTXO scan, so the same code works against bitcoind.
            let scan: Value = rpc
                .call(
                    "scantxoutset",
                    &[json!("start"), json!([format!("addr({addr})")])],
                )
                .context("scantxoutset")?;
            let confirmed: u64 = scan["unspents"]
                .as_array()
                .map(|u| {
                    u.iter()
                        .filter_map(|x| x["amount"].as_number())
                        .filter_map(|n| {
                            Amount::from_str_in(&n.to_string(), Denomination::Bitcoin).ok()
                        })
                        .map(Amount::to_sat)
                        .sum()
                })
                .unwrap_or(0);
            let bal: Value = rpc
                .call("devnet_balance", &[json!(address)])
                .context("devnet_balance")?;
            let unconfirmed = bal["unconfirmed_sat"].as_i64().unwrap_or(0);
            writeln!(out, "{} BTC confirmed", btc(confirmed))?;
            writeln!(out, "{} BTC unconfirmed", signed_btc(unconfirmed))?;
        }
        DevnetCommand::Tx { txid } => {
            let id = Txid::from_str(txid).map_err(|e| anyhow!("not a txid: {txid}: {e}"))?;
            let Some((tx, status)) = rpc.get_tx(&id).context("getrawtransaction")? else {
                bail!("no transaction {txid} in the devnet's mempool or chain");
            };
            describe(&rpc, &tx, status, out)?;
        }
    }
    Ok(())
}

fn describe(
    rpc: &RpcSource,
    tx: &Transaction,
    status: TxStatus,
    out: &mut dyn Write,
) -> Result<()> {
    let txid = tx.compute_txid();
    writeln!(out, "txid    {txid}")?;
    writeln!(out, "wtxid   {}", tx.compute_wtxid())?;
    match status {
        TxStatus::Mempool => writeln!(out, "status  unconfirmed (in the mempool)")?,
        TxStatus::Confirmed(b) => {
            let tip = rpc.tip()?;
            writeln!(
                out,
                "status  confirmed in block {} ({}), {} confirmations",
                b.height,
                b.hash,
                tip.height.saturating_sub(b.height) + 1
            )?;
        }
    }
    writeln!(
        out,
        "size    {} vbytes, version {}, locktime {}",
        tx.vsize(),
        tx.version.0,
        tx.lock_time
    )?;
    let mut value_in: Option<u64> = Some(0);
    if tx.is_coinbase() {
        writeln!(out, "input   coinbase")?;
        value_in = None;
    } else {
        for input in &tx.input {
            let prev = rpc.get_tx(&input.previous_output.txid).ok().flatten();
            let value = prev.as_ref().and_then(|(p, _)| {
                p.output
                    .get(input.previous_output.vout as usize)
                    .map(|o| o.value.to_sat())
            });
            match value {
                Some(v) => {
                    writeln!(out, "input   {} {} BTC", input.previous_output, btc(v))?;
                    value_in = value_in.map(|s| s + v);
                }
                None => {
                    writeln!(out, "input   {}", input.previous_output)?;
                    value_in = None;
                }
            }
        }
    }
    let mut value_out = 0u64;
    for (n, o) in tx.output.iter().enumerate() {
        value_out += o.value.to_sat();
        let to = Address::from_script(&o.script_pubkey, kura_chain::bitcoin::Network::Regtest)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| format!("script {}", o.script_pubkey.to_hex_string()));
        writeln!(out, "output  {n}: {} BTC to {to}", btc(o.value.to_sat()))?;
    }
    if let Some(v) = value_in {
        let fee = v.saturating_sub(value_out);
        // Feerate with one decimal, in integers.
        let tenths = fee * 10 / (tx.vsize().max(1) as u64);
        writeln!(
            out,
            "fee     {} BTC ({}.{} sat/vB)",
            btc(fee),
            tenths / 10,
            tenths % 10
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_chain::{Devnet, DevnetOptions, DevnetRpcServer};

    fn output(cmd: DevnetCommand, dir: &Path) -> Result<String> {
        let mut buf = Vec::new();
        execute(&cmd, dir, &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }

    #[test]
    fn commands_against_a_running_devnet() -> Result<()> {
        let data = tempfile::tempdir()?;
        // Without a running devnet the commands say how to start one.
        let err = output(DevnetCommand::Mine { blocks: 1 }, data.path()).expect_err("no devnet");
        assert!(err.to_string().contains("no running devnet"), "{err}");

        let devnet =
            Devnet::open_with(&data.path().join("devnet"), DevnetOptions { premine: 101 })?;
        let _server = DevnetRpcServer::start(devnet.clone(), 0)?;
        let addr = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".to_string();

        let sent = output(
            DevnetCommand::Send {
                address: addr.clone(),
                amount: "0.5".into(),
            },
            data.path(),
        )?;
        let txid = sent.trim().to_string();
        assert_eq!(txid.len(), 64);
        let bal = output(
            DevnetCommand::Balance {
                address: addr.clone(),
            },
            data.path(),
        )?;
        assert_eq!(
            bal,
            "0.00000000 BTC confirmed\n+0.50000000 BTC unconfirmed\n"
        );
        let tx = output(DevnetCommand::Tx { txid: txid.clone() }, data.path())?;
        assert!(tx.contains("unconfirmed"), "{tx}");
        assert!(tx.contains(&format!("0.50000000 BTC to {addr}")), "{tx}");
        assert!(tx.contains("fee     0.00000"), "{tx}");

        let mined = output(DevnetCommand::Mine { blocks: 2 }, data.path())?;
        let tip = devnet.tip();
        assert_eq!(mined, format!("{} {}\n", tip.height, tip.hash));
        assert_eq!(tip.height, 103);
        let bal = output(
            DevnetCommand::Balance {
                address: addr.clone(),
            },
            data.path(),
        )?;
        assert_eq!(
            bal,
            "0.50000000 BTC confirmed\n+0.00000000 BTC unconfirmed\n"
        );
        let tx = output(DevnetCommand::Tx { txid: txid.clone() }, data.path())?;
        assert!(tx.contains("confirmed in block 102"), "{tx}");
        assert!(tx.contains("2 confirmations"), "{tx}");

        let reorg = output(DevnetCommand::Reorg { depth: 2 }, data.path())?;
        assert!(
            reorg.starts_with("disconnected 2 blocks, 1 transactions back in the mempool"),
            "{reorg}"
        );
        assert_eq!(devnet.tip().height, 104);
        let bal = output(
            DevnetCommand::Balance {
                address: addr.clone(),
            },
            data.path(),
        )?;
        assert_eq!(
            bal,
            "0.00000000 BTC confirmed\n+0.50000000 BTC unconfirmed\n"
        );

        // Bad input is an error, not a panic.
        assert!(output(
            DevnetCommand::Send {
                address: addr.clone(),
                amount: "lots".into()
            },
            data.path()
        )
        .is_err());
        assert!(output(
            DevnetCommand::Send {
                address: "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4".into(),
                amount: "1".into()
            },
            data.path()
        )
        .is_err());
        assert!(output(DevnetCommand::Tx { txid: "zz".into() }, data.path()).is_err());
        assert!(output(DevnetCommand::Reorg { depth: 0 }, data.path()).is_err());
        Ok(())
    }
}
