//! `kura admin …`: operator actions against a running server, found through its data
//! directory (the admin socket, see `kura::server::admin`).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use kura::server::admin::{call, Envelope, Request};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Data directory of the running server (before or after the subcommand).
    #[arg(long, env = "KURA_DATA", default_value = "kura-data", global = true)]
    data: PathBuf,
    /// Who is acting, for the journal (default: the login name).
    #[arg(long, env = "KURA_OPERATOR", global = true)]
    operator: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Customers.
    #[command(subcommand)]
    User(UserCommand),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Credit a customer (a fiat deposit); idempotent on --ref.
    Credit {
        name: String,
        asset: String,
        amount: String,
        /// External reference (bank transfer id): a second credit with it is refused.
        #[arg(long = "ref")]
        reference: String,
        #[arg(long)]
        reason: String,
    },
    /// Debit a customer (a correction), with a reason.
    Debit {
        name: String,
        asset: String,
        amount: String,
        #[arg(long)]
        reason: String,
    },
    /// Halt trading.
    #[command(subcommand)]
    Halt(HaltTarget),
    /// Resume trading.
    #[command(subcommand)]
    Resume(HaltTarget),
    /// Balances of one customer, or of all.
    Balances {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Chain withdrawals: list them, approve or reject those held for review.
    #[command(subcommand)]
    Withdrawal(WithdrawalCommand),
    /// Our wallets: register a cold wallet (public keys only).
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Open withdrawal batches: raise the fee, cancel by a double-spend to ourselves, or
    /// abandon a refill that never reached the network.
    #[command(subcommand)]
    Batch(BatchCommand),
}

#[derive(Subcommand, Debug)]
enum BatchCommand {
    /// Replace the batch's transaction with one paying FEE_RATE sat/vB: the same coins
    /// and payments, less change (replace-by-fee). Settled once, whichever confirms.
    Bump {
        batch: u64,
        #[arg(long)]
        fee_rate: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel the batch: spend its coins back to our hot wallet at FEE_RATE sat/vB. Its
    /// withdrawals are refunded only when that transaction confirms; if a paying
    /// version confirms first, they are settled instead.
    Cancel {
        batch: u64,
        #[arg(long)]
        fee_rate: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Abandon a refill from cold storage whose offline ceremony did not take place:
    /// refused if any version of it is in the mempool or the chain. Its cold coins are
    /// unlocked, so the next refill may spend them; should the abandoned transaction
    /// confirm after all, the spend is one no batch explains and withdrawals halt.
    Abandon {
        batch: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum WalletCommand {
    /// Register a cold wallet for BTC by its public descriptor, e.g. a 2-of-3
    /// `wsh(sortedmulti(2,[fp/48'/0'/0'/2']xpub…/0/*,…))`. SegWit only, no private
    /// keys. Never forgotten: its coins are reconciled forever, and the hot band sweeps
    /// to the newest cold wallet.
    Register {
        /// The public descriptor (with or without checksum).
        descriptor: String,
        /// Only "cold" can be registered by an operator.
        #[arg(long, default_value = "cold")]
        role: String,
        /// Why, for the journal.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum WithdrawalCommand {
    /// Chain withdrawals in one state, oldest request first (default: waiting for
    /// review).
    List {
        /// review, approved, batched, settled, cancelled or all.
        #[arg(long, default_value = "review")]
        state: String,
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Approve a withdrawal held for review: it is batched once its release time comes.
    Approve {
        id: String,
        /// Why, for the journal (default: "approve withdrawal").
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Reject a withdrawal held for review: it is cancelled and its amount returns to
    /// the customer's available balance.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a customer with a unique name.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create an API key; its secret is printed once and never stored.
    Create {
        /// The customer.
        name: String,
        /// Comma-separated: read, trade, withdraw (withdraw needs --ip).
        #[arg(long, value_delimiter = ',', default_value = "read")]
        perm: Vec<String>,
        /// Allowed source addresses or CIDR blocks (repeatable, or comma-separated).
        #[arg(long, alias = "allow-ip", value_delimiter = ',')]
        ip: Vec<String>,
        /// An Ed25519 key (preferred): generated here, the server only gets the public
        /// key; the secret printed is the PEM private key CCXT signs with.
        #[arg(long)]
        ed25519: bool,
        #[arg(long, default_value = "")]
        label: String,
        /// Print one JSON object with at least `key` and `secret`.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key for good.
    Revoke {
        key: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum HaltTarget {
    /// A market, by symbol (e.g. BTCJPY).
    Market {
        symbol: String,
        #[arg(long)]
        reason: String,
    },
}

fn operator(args: &AdminArgs) -> String {
    args.operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into())
}

pub fn run(args: &AdminArgs) -> Result<()> {
    let (request, json, private_pem) = match &args.command {
        AdminCommand::User(UserCommand::Create { name, json }) => {
            (Request::UserCreate { name: name.clone() }, *json, None)
        }
        AdminCommand::Key(KeyCommand::Create {
            name,
            perm,
            ip,
            ed25519,
            label,
            json,
        }) => {
            let (public, pem) = if *ed25519 {
                let (public, pem) = new_ed25519()?;
                (Some(public), Some(pem))
            } else {
                (None, None)
            };
            (
                Request::KeyCreate {
                    user: name.clone(),
                    perms: perm.clone(),
                    ed25519_public: public,
                    ip_allow: ip.clone(),
                    label: label.clone(),
                },
                *json,
                pem,
            )
        }
        AdminCommand::Key(KeyCommand::Revoke { key, reason }) => (
            Request::KeyRevoke {
                key: key.clone(),
                reason: reason.clone(),
            },
            false,
            None,
        ),
        AdminCommand::Credit {
            name,
            asset,
            amount,
            reference,
            reason,
        } => (
            Request::Credit {
                user: name.clone(),
                asset: asset.clone(),
                amount: amount.clone(),
                reference: reference.clone(),
                reason: reason.clone(),
            },
            false,
            None,
        ),
        AdminCommand::Debit {
            name,
            asset,
            amount,
            reason,
        } => (
            Request::Debit {
                user: name.clone(),
                asset: asset.clone(),
                amount: amount.clone(),
                reason: reason.clone(),
            },
            false,
            None,
        ),
        AdminCommand::Halt(HaltTarget::Market { symbol, reason }) => (
            Request::Halt {
                symbol: symbol.clone(),
                reason: reason.clone(),
            },
            false,
            None,
        ),
        AdminCommand::Resume(HaltTarget::Market { symbol, reason }) => (
            Request::Resume {
                symbol: symbol.clone(),
                reason: reason.clone(),
            },
            false,
            None,
        ),
        AdminCommand::Balances { name, json } => {
            (Request::Balances { user: name.clone() }, *json, None)
        }
        AdminCommand::Withdrawal(WithdrawalCommand::List { state, json }) => (
            Request::WithdrawalList {
                state: Some(state.clone()),
            },
            *json,
            None,
        ),
        AdminCommand::Withdrawal(WithdrawalCommand::Approve { id, reason, json }) => (
            Request::WithdrawalApprove {
                id: id.clone(),
                reason: reason.clone(),
            },
            *json,
            None,
        ),
        AdminCommand::Withdrawal(WithdrawalCommand::Reject { id, reason, json }) => (
            Request::WithdrawalReject {
                id: id.clone(),
                reason: reason.clone(),
            },
            *json,
            None,
        ),
        AdminCommand::Batch(BatchCommand::Bump {
            batch,
            fee_rate,
            reason,
            json,
        }) => (
            Request::BatchBump {
                batch: *batch,
                fee_rate_sat_vb: *fee_rate,
                reason: reason.clone(),
            },
            *json,
            None,
        ),
        AdminCommand::Batch(BatchCommand::Cancel {
            batch,
            fee_rate,
            reason,
            json,
        }) => (
            Request::BatchCancel {
                batch: *batch,
                fee_rate_sat_vb: *fee_rate,
                reason: reason.clone(),
            },
            *json,
            None,
        ),
        AdminCommand::Batch(BatchCommand::Abandon {
            batch,
            reason,
            json,
        }) => (
            Request::BatchAbandon {
                batch: *batch,
                reason: reason.clone(),
            },
            *json,
            None,
        ),
        AdminCommand::Wallet(WalletCommand::Register {
            descriptor,
            role,
            reason,
            json,
        }) => {
            if role != "cold" {
                bail!("only a cold wallet can be registered here (--role cold); deposit and hot wallets are the node's own");
            }
            (
                Request::WalletRegisterCold {
                    descriptor: descriptor.clone(),
                    reason: reason.clone(),
                },
                *json,
                None,
            )
        }
    };
    let is_balances = matches!(request, Request::Balances { .. });
    let withdrawals_in = match &request {
        Request::WithdrawalList { state } => Some(state.clone().unwrap_or_else(|| "review".into())),
        _ => None,
    };
    let is_key = matches!(request, Request::KeyCreate { .. });
    let mut answer = call(
        &args.data,
        &Envelope {
            operator: operator(args),
            request,
        },
    )?;
    if let (Some(pem), Some(obj)) = (private_pem, answer.as_object_mut()) {
        obj.insert("secret".into(), Value::String(pem));
    }
    if json {
        println!("{answer}");
    } else if is_balances {
        print_balances(&answer);
    } else if let Some(state) = &withdrawals_in {
        print_withdrawals(&answer, state);
    } else if is_key {
        let field = |k: &str| {
            answer
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        println!("user:   {}", field("user"));
        println!("key:    {}", field("key"));
        println!("scheme: {}", field("scheme"));
        println!("secret: {}", field("secret"));
        eprintln!("(the secret is shown once; kura does not keep it)");
    } else {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}

fn print_balances(answer: &Value) {
    let Some(rows) = answer.as_array() else {
        println!("{answer}");
        return;
    };
    println!(
        "{:<20} {:<6} {:>24} {:>24}",
        "customer", "asset", "free", "locked"
    );
    for row in rows {
        let f = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("");
        println!(
            "{:<20} {:<6} {:>24} {:>24}",
            f("user"),
            f("asset"),
            f("free"),
            f("locked")
        );
    }
}

fn print_withdrawals(answer: &Value, state: &str) {
    let Some(rows) = answer.as_array() else {
        println!("{answer}");
        return;
    };
    if rows.is_empty() {
        if state == "all" {
            println!("no withdrawals");
        } else {
            println!("no withdrawals in state {state} (--state all lists every one)");
        }
        return;
    }
    println!(
        "{:<24} {:<20} {:<6} {:>20} {:>12} {:<42} {:<9} {:<19} {:<19} {:>6}",
        "id",
        "customer",
        "asset",
        "amount",
        "fee",
        "address",
        "state",
        "requested (UTC)",
        "release (UTC)",
        "batch"
    );
    for row in rows {
        let f = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("");
        let user_id = row.get("user_id").and_then(Value::as_u64);
        let customer = match (row.get("user").and_then(Value::as_str), user_id) {
            (Some(name), Some(id)) => format!("{name} (#{id})"),
            (None, Some(id)) => format!("#{id}"),
            (Some(name), None) => name.to_owned(),
            (None, None) => String::new(),
        };
        let batch = row
            .get("batch")
            .and_then(Value::as_u64)
            .map_or_else(|| "-".to_owned(), |b| b.to_string());
        println!(
            "{:<24} {:<20} {:<6} {:>20} {:>12} {:<42} {:<9} {:<19} {:<19} {:>6}",
            f("id"),
            customer,
            f("asset"),
            f("amount"),
            f("fee"),
            f("address"),
            f("state"),
            f("requested"),
            f("release"),
            batch
        );
    }
}

/// A fresh Ed25519 key pair: the public key in hex and the private key as PKCS#8 v1 PEM
/// (the seed only, as `openssl genpkey -algorithm ed25519` writes it: the form CCXT and
/// Python's `cryptography` load; the v2 form with the public key embedded is not).
fn new_ed25519() -> Result<(String, String)> {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, KeypairBytes};
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let seed_only = KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    };
    let pem = match seed_only.to_pkcs8_pem(LineEnding::LF) {
        Ok(pem) => pem.to_string(),
        Err(e) => bail!("encoding the private key: {e}"),
    };
    Ok((hex::encode(signing.verifying_key().to_bytes()), pem))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ed25519_secret_is_the_short_pkcs8_form_and_matches_the_public_key() {
        use base64::Engine as _;
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let (public_hex, pem) = super::new_ed25519().expect("key");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64");
        // SEQUENCE(46) { version 0, AlgorithmIdentifier(Ed25519), OCTET STRING(seed) }
        assert_eq!(der.len(), 48);
        assert_eq!(hex::encode(&der[..16]), "302e020100300506032b657004220420");
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("parses");
        assert_eq!(hex::encode(key.verifying_key().to_bytes()), public_hex);
    }
}
