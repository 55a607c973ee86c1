//! `kura custody status`: the custody layer of a running node, through its admin socket
//! (`custody_status`): the chain it follows, our wallets and their coins, what customers
//! are owed, the last reconciliation, any withdrawal halt, open withdrawal batches.

use anyhow::Result;
use clap::Subcommand;
use kura::server::admin::{call, Envelope, Request};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum CustodyCommand {
    /// Chain, wallets, holdings, liabilities, reconciliation, halts and batches of a
    /// running node. --json prints one object whose "descriptors" list is what
    /// `kura cold sign --descriptors` reads.
    Status {
        /// Data directory of the running server.
        #[arg(long, env = "KURA_DATA", default_value = "kura-data")]
        data: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: &CustodyCommand) -> Result<()> {
    match cmd {
        CustodyCommand::Status { data, json } => {
            let operator = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            let status = call(
                data,
                &Envelope {
                    operator,
                    request: Request::CustodyStatus,
                },
            )?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if *json {
                writeln!(out, "{status}")?;
            } else {
                print_status(&status, &mut out)?;
            }
            Ok(())
        }
    }
}

/// Minor units as a decimal with `scale` places.
fn decimal(minor: u128, scale: u32) -> String {
    if scale == 0 {
        return minor.to_string();
    }
    let unit = 10u128.pow(scale);
    format!(
        "{}.{:0width$}",
        minor / unit,
        minor % unit,
        width = scale as usize
    )
}

/// A JSON amount (a number, or text beyond u64) in minor units.
fn minor(v: &Value) -> Option<u128> {
    match v {
        Value::Number(n) => n.as_u64().map(u128::from),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn print_status(s: &Value, out: &mut dyn Write) -> Result<()> {
    let asset = s["asset"].as_str().unwrap_or("BTC");
    let scale = s["scale"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(8);
    let amount = |v: &Value| match minor(v) {
        Some(m) => format!("{} {asset}", decimal(m, scale)),
        None => "unknown".into(),
    };
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let number = |v: &Value| v.as_u64().map_or_else(|| "?".into(), |n| n.to_string());

    let chain = &s["chain"];
    if chain.is_null() {
        writeln!(
            out,
            "chain        no chain (deposits only by operator credit; coins unknown)"
        )?;
    } else {
        writeln!(
            out,
            "chain        {} ({})",
            text(&chain["source"]),
            text(&chain["network"])
        )?;
        writeln!(
            out,
            "tip          {} {}",
            number(&chain["tip_height"]),
            chain["tip_hash"].as_str().unwrap_or("")
        )?;
        writeln!(
            out,
            "followed     {} {} ({})",
            number(&chain["followed_height"]),
            chain["followed_hash"].as_str().unwrap_or(""),
            if chain["synced"].as_bool() == Some(true) {
                "synced"
            } else {
                "catching up"
            }
        )?;
        writeln!(
            out,
            "last error   {}",
            chain["last_error"].as_str().unwrap_or("none")
        )?;
        let signer = &chain["signer"];
        match signer["kind"].as_str() {
            Some("separate") => writeln!(
                out,
                "signer       a separate process (kura signer serve) at {}",
                text(&signer["socket"])
            )?,
            Some("in_process") => writeln!(
                out,
                "signer       in this node's process (keys in its data directory's signer/)"
            )?,
            _ => {}
        }
        writeln!(
            out,
            "unconfirmed  {} deposit(s), {} (credited at {} confirmations)",
            number(&chain["unconfirmed_deposits"]),
            amount(&chain["unconfirmed_deposits_sat"]),
            number(&chain["confirmations_required"])
        )?;
    }

    writeln!(out, "wallets")?;
    for w in s["wallets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let coins = if chain.is_null() {
            String::new()
        } else {
            format!(
                "  {} coin(s)  {}",
                number(&w["coins"]),
                amount(&w["confirmed_sat"])
            )
        };
        writeln!(
            out,
            "  #{} {:<8} next index {}{coins}",
            number(&w["id"]),
            text(&w["role"]),
            number(&w["next_index"])
        )?;
        writeln!(out, "     {}", text(&w["descriptor"]))?;
    }

    let h = &s["holdings"];
    if h.is_null() {
        writeln!(out, "holdings     unknown (no chain)")?;
    } else {
        writeln!(
            out,
            "holdings     {} (deposit {}, hot {}, cold {}, retired {})",
            amount(&h["total_sat"]),
            amount(&h["deposit_sat"]),
            amount(&h["hot_sat"]),
            amount(&h["cold_sat"]),
            amount(&h["retired_sat"])
        )?;
    }
    writeln!(
        out,
        "liabilities  {} (customers' balances)",
        amount(&s["liabilities_sat"])
    )?;

    let r = &s["reconciliation"];
    if r.is_null() {
        writeln!(out, "reconciled   never")?;
    } else {
        let verdict = match r["status"].as_str() {
            Some("ok") => "ok".to_owned(),
            _ => format!("SHORT by {}", amount(&r["shortfall_sat"])),
        };
        writeln!(
            out,
            "reconciled   at height {} ({}): holdings {}, liabilities {}: {verdict}",
            number(&r["height"]),
            text(&r["block_hash"]),
            amount(&r["holdings_sat"]),
            amount(&r["liabilities_sat"])
        )?;
    }
    match s["withdrawals_halted"].as_str() {
        Some(reason) => writeln!(out, "withdrawals  HALTED: {reason}")?,
        None => writeln!(out, "withdrawals  not halted")?,
    }
    let w = &s["withdrawals"];
    writeln!(
        out,
        "             {} waiting for review ({}), {} approved waiting for a batch, {} in batches",
        number(&w["review"]),
        amount(&w["review_sat"]),
        number(&w["approved"]),
        number(&w["batched"])
    )?;
    let batches = s["batches"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if batches.is_empty() {
        writeln!(out, "batches      none open")?;
    } else {
        writeln!(out, "batches      {} open", batches.len())?;
        for b in batches {
            let what = match b["transfer"]["kind"].as_str() {
                Some("refill") => format!(
                    "refill of {} from cold storage, waiting for the offline ceremony (custody/refills/{}.psbt)",
                    amount(&b["transfer"]["amount_sat"]),
                    number(&b["id"])
                ),
                Some(_) => format!(
                    "sweep of {} to cold storage",
                    amount(&b["transfer"]["amount_sat"])
                ),
                None => format!("{} withdrawal(s)", number(&b["members"])),
            };
            writeln!(
                out,
                "  #{} {}  {what}  network fee {}",
                number(&b["id"]),
                b["txid"].as_str().unwrap_or("(no txid)"),
                amount(&b["network_fee_sat"])
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(decimal(0, 8), "0.00000000");
        assert_eq!(decimal(150_000, 8), "0.00150000");
        assert_eq!(decimal(2_100_000_000_000_000, 8), "21000000.00000000");
        assert_eq!(decimal(7, 0), "7");
        assert_eq!(minor(&Value::from(5u64)), Some(5));
        assert_eq!(
            minor(&Value::String(
                "340282366920938463463374607431768211455".into()
            )),
            Some(u128::MAX)
        );
        assert_eq!(minor(&Value::Null), None);
    }

    #[test]
    fn names_the_signer_the_node_uses() {
        let with = |signer: Value| {
            let status = serde_json::json!({
                "asset": "BTC", "scale": 8, "wallets": [], "descriptors": [],
                "holdings": null, "liabilities_sat": 0, "reconciliation": null,
                "withdrawals_halted": null, "batches": [], "withdrawals": {},
                "chain": {"source": "devnet", "network": "regtest", "tip_height": 5,
                          "tip_hash": "00aa", "followed_height": 5, "followed_hash": "00aa",
                          "synced": true, "last_error": null, "confirmations_required": 3,
                          "unconfirmed_deposits": 0, "unconfirmed_deposits_sat": 0,
                          "signer": signer},
            });
            let mut buf = Vec::new();
            print_status(&status, &mut buf).expect("print");
            String::from_utf8(buf).expect("utf-8")
        };
        let separate = with(serde_json::json!({"kind": "separate", "socket": "/d/signer.sock"}));
        assert!(
            separate
                .contains("signer       a separate process (kura signer serve) at /d/signer.sock"),
            "{separate}"
        );
        let local = with(serde_json::json!({"kind": "in_process"}));
        assert!(
            local.contains("signer       in this node's process"),
            "{local}"
        );
    }

    #[test]
    fn prints_a_status_without_a_chain_and_a_short_reconciliation() {
        let status = serde_json::json!({
            "asset": "BTC", "scale": 8, "chain": null,
            "wallets": [{"id": 0, "role": "deposit", "descriptor": "wpkh(x)", "next_index": 3,
                         "coins": null, "confirmed_sat": null}],
            "descriptors": ["wpkh(x)"], "holdings": null, "liabilities_sat": 250_000,
            "reconciliation": {"seq": 9, "height": 120, "block_hash": "00ab", "holdings_sat": 200_000,
                               "liabilities_sat": 250_000, "status": "short", "shortfall_sat": 50_000},
            "withdrawals_halted": "coins missing",
            "batches": [{"id": 2, "txid": "ff00", "members": 3, "network_fee_sat": 1_000},
                        {"id": 3, "txid": "ee00", "members": 0, "network_fee_sat": 500,
                         "transfer": {"kind": "refill", "amount_sat": 3_000_000}},
                        {"id": 4, "txid": "dd00", "members": 0, "network_fee_sat": 400,
                         "transfer": {"kind": "sweep", "amount_sat": 97_500_000}}],
            "withdrawals": {"review": 1, "review_sat": 300_000_000, "approved": 0, "batched": 3},
        });
        let mut buf = Vec::new();
        print_status(&status, &mut buf).expect("print");
        let text = String::from_utf8(buf).expect("utf-8");
        for expected in [
            "chain        no chain",
            "  #0 deposit  next index 3\n",
            "holdings     unknown (no chain)",
            "liabilities  0.00250000 BTC",
            "at height 120 (00ab): holdings 0.00200000 BTC, liabilities 0.00250000 BTC: SHORT by 0.00050000 BTC",
            "withdrawals  HALTED: coins missing",
            "1 waiting for review (3.00000000 BTC)",
            "  #2 ff00  3 withdrawal(s)  network fee 0.00001000 BTC",
            "  #3 ee00  refill of 0.03000000 BTC from cold storage, waiting for the offline ceremony (custody/refills/3.psbt)",
            "  #4 dd00  sweep of 0.97500000 BTC to cold storage  network fee 0.00000400 BTC",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }
}
