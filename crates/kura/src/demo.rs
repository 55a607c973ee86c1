//! `kura demo`: a running exchange for a newcomer in one command.
//!
//! It starts a server on a fresh data directory (or `--data`), with the default markets
//! BTC/JPY and BTC/USD, three customers (`demo`, whose API key it prints; `maker` and
//! `taker`, two simulated traders), and a market maker that keeps both books populated
//! around a reference price that moves at random, while the taker trades against it now
//! and then, so the books, trades, tickers and candles are alive.

use crate::serve_cli::{self, ServeArgs};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use kura::server::admin::{self, Envelope, Request};
use kura::server::backend::NodeBackend;
use kura::server::{self as server};
use kura_api::backend::Backend;
use kura_engine::codec::{Entry, Origin};
use kura_engine::{Command, OrderType, Side, TimeInForce};
use kura_units::{MarketId, PriceTicks, QtyLots, UserId};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Do not run the simulated market maker and taker.
    #[arg(long)]
    no_maker: bool,
    /// Milliseconds between market-maker updates.
    #[arg(long, default_value_t = 500)]
    tick_ms: u64,
}

const OPERATOR: &str = "kura-demo";

async fn admin(backend: &NodeBackend, request: Request) -> Result<Value> {
    admin::handle(
        backend,
        Envelope {
            operator: OPERATOR.into(),
            request,
        },
    )
    .await
}

async fn ensure_user(backend: &NodeBackend, name: &str, funds: &[(&str, &str)]) -> Result<()> {
    let exists = {
        let n = name.to_owned();
        backend
            .query(move |e| e.user_by_name(&n).is_some())
            .await
            .map_err(|e| anyhow!("{e}"))?
    };
    if !exists {
        admin(backend, Request::UserCreate { name: name.into() }).await?;
        for (asset, amount) in funds {
            admin(
                backend,
                Request::Credit {
                    user: name.into(),
                    asset: (*asset).into(),
                    amount: (*amount).into(),
                    reference: format!("demo-{name}-{asset}"),
                    reason: "demo starting balance".into(),
                },
            )
            .await?;
        }
    }
    Ok(())
}

struct Book {
    market: MarketId,
    /// Reference price in ticks.
    reference: u64,
    /// Half the spread and the step between levels, in ticks.
    step: u64,
}

/// A small xorshift generator: the demo's prices need variety, not cryptography.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn submit(backend: &NodeBackend, command: Command) {
    let entry = Entry {
        ctx_timestamp_ms: 0,
        origin: Origin::Operator {
            name: "demo-simulator".into(),
        },
        command,
    };
    // A refused order (for example while a market is halted) is simply skipped.
    let _ = backend.submit(entry).await;
}

fn limit(user: UserId, market: MarketId, side: Side, price: u64, lots: u64) -> Command {
    Command::PlaceOrder {
        user,
        market,
        side,
        order: OrderType::Limit {
            price: PriceTicks::new(price),
            qty: QtyLots::new(lots),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        client_id: None,
        stp: None,
    }
}

/// The BTC the demo credits its customers (10 + 15 + 15), which the exchange's hot
/// wallet must hold on the devnet so that reconciliation finds the books covered.
const DEMO_BTC_SAT: u64 = 40 * 100_000_000;

/// A regtest address outside the exchange, for the printed withdrawal example.
const DEMO_DESTINATION: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// With the devnet as the chain: pay the coins that back the demo's credited BTC from
/// the devnet faucet to the hot wallet and wait until the custody task holds them, so
/// the first reconciliation after the credits finds the books covered (an uncovered
/// book halts withdrawals, as it must).
fn fund_treasury(exchange: &kura::server::Exchange) -> Result<()> {
    let Some(custody) = exchange.custody() else {
        return Ok(());
    };
    let Some(devnet) = custody.devnet() else {
        return Ok(());
    };
    let held = || custody.view().watcher.holdings_sat();
    let wait = |what: &str, done: &dyn Fn() -> bool| -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    // The custody task must have followed the chain before holdings mean anything.
    wait("the custody task to follow the devnet", &|| {
        let v = custody.view();
        v.synced && v.watcher.tip().map(|(h, _)| h) == Some(devnet.tip().height)
    })?;
    if held() >= DEMO_BTC_SAT {
        return Ok(());
    }
    let descriptor = exchange
        .backend()
        .handle()
        .query_wait(|e| {
            e.wallets()
                .iter()
                .find(|w| w.role == kura_engine::WalletRole::Hot)
                .map(|w| w.descriptor.clone())
        })
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no hot wallet is registered"))?;
    let (_, address) = kura_custody::derive(&descriptor, 0, kura_chain::bitcoin::Network::Regtest)
        .map_err(|e| anyhow!("deriving the hot wallet address: {e}"))?;
    let need = DEMO_BTC_SAT + 100_000_000 - held();
    devnet
        .send(&address, kura_chain::bitcoin::Amount::from_sat(need))
        .map_err(|e| anyhow!("funding the hot wallet from the devnet faucet: {e}"))?;
    devnet
        .mine(1)
        .map_err(|e| anyhow!("mining the funding block: {e}"))?;
    wait("the hot wallet's funding to confirm", &|| {
        held() >= DEMO_BTC_SAT
    })
}

/// The demo's cold wallet: 2-of-3 on BIP-48 paths, registered once the customers are
/// credited (so the hot band has liabilities to measure against). The three holders'
/// master keys are kept in `DIR/cold-demo/holder-N.key` (mode 0600) so the offline
/// ceremony can be tried; a real cold wallet's keys never touch the exchange's machines.
fn demo_cold_wallet(exchange: &kura::server::Exchange, data: &Path) -> Result<Option<PathBuf>> {
    use kura_chain::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
    use kura_chain::bitcoin::secp256k1::Secp256k1;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(custody) = exchange.custody() else {
        return Ok(None);
    };
    if custody.devnet().is_none() {
        return Ok(None);
    }
    let dir = data.join("cold-demo");
    let handle = exchange.backend().handle();
    let registered = handle
        .query_wait(|e| {
            e.wallets()
                .iter()
                .any(|w| w.role == kura_engine::WalletRole::Cold)
        })
        .map_err(|e| anyhow!("{e}"))?;
    if registered {
        return Ok(Some(dir));
    }
    let secp = Secp256k1::new();
    let path = DerivationPath::from_str("m/48'/1'/0'/2'").context("the BIP-48 path")?;
    let mut keys = Vec::new();
    for n in 1..=3 {
        let seed = kura::server::files::load_or_create_secret(
            &dir.join(format!("holder-{n}.seed")),
            "a demo cold key seed",
        )?;
        let master = Xpriv::new_master(kura_chain::bitcoin::Network::Regtest, &seed)
            .context("deriving a demo cold key")?;
        let key_file = dir.join(format!("holder-{n}.key"));
        if !key_file.exists() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_file)
                .with_context(|| format!("writing {}", key_file.display()))?;
            writeln!(f, "{master}")?;
        }
        let account = master
            .derive_priv(&secp, &path)
            .context("deriving a demo cold account")?;
        keys.push(format!(
            "[{}/48'/1'/0'/2']{}/0/*",
            master.fingerprint(&secp),
            Xpub::from_priv(&secp, &account)
        ));
    }
    let descriptor =
        kura_custody::parse_descriptor(&format!("wsh(sortedmulti(2,{}))", keys.join(",")))
            .map_err(|e| anyhow!("the demo cold descriptor is invalid: {e}"))?
            .canonical();
    let asset = handle
        .query_wait(|e| e.asset_by_symbol("BTC"))
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no BTC asset"))?;
    handle
        .submit_wait(kura::node::internal(kura_engine::Command::RegisterWallet {
            asset,
            role: kura_engine::WalletRole::Cold,
            descriptor,
        }))
        .map_err(|e| anyhow!("registering the demo cold wallet: {e}"))?
        .result
        .map_err(|r| anyhow!("registering the demo cold wallet: {r}"))?;
    Ok(Some(dir))
}

async fn market_maker(backend: NodeBackend, tick: Duration) -> Result<()> {
    let ids = backend
        .query(|e| {
            Some((
                e.user_by_name("maker")?,
                e.user_by_name("taker")?,
                e.market_by_symbol("BTCJPY")?,
                e.market_by_symbol("BTCUSD")?,
            ))
        })
        .await
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("demo customers or markets missing"))?;
    let (maker, taker, jpy, usd) = ids;
    let mut books = [
        Book {
            market: jpy,
            reference: 15_000_000,
            step: 1_000,
        },
        Book {
            market: usd,
            reference: 10_000_000,
            step: 500,
        },
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        for book in &mut books {
            // A random walk of the reference, at most 0.1 % a tick.
            let drift = book.reference / 1_000;
            let delta = rng.below(2 * drift + 1);
            book.reference = (book.reference + delta)
                .saturating_sub(drift)
                .max(book.step * 20);
            submit(
                &backend,
                Command::CancelAll {
                    user: maker,
                    market: book.market,
                },
            )
            .await;
            for level in 1..=10u64 {
                let lots = 100 + rng.below(900);
                let bid = book.reference - level * book.step;
                let ask = book.reference + level * book.step;
                submit(&backend, limit(maker, book.market, Side::Buy, bid, lots)).await;
                submit(&backend, limit(maker, book.market, Side::Sell, ask, lots)).await;
            }
            // The taker crosses the spread now and then.
            if rng.below(3) == 0 {
                let side = if rng.below(2) == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                submit(
                    &backend,
                    Command::PlaceOrder {
                        user: taker,
                        market: book.market,
                        side,
                        order: OrderType::MarketBase {
                            qty: QtyLots::new(10 + rng.below(200)),
                        },
                        client_id: None,
                        stp: None,
                    },
                )
                .await;
            }
        }
    }
}

fn snippet(rest: &str, key: &str, secret: &str) -> String {
    format!(
        r#"import ccxt
from urllib.parse import urlsplit
ex = ccxt.binance({{'apiKey': '{key}', 'secret': '{secret}', 'options': {{'defaultType': 'spot', 'fetchMarkets': {{'types': ['spot']}}, 'fetchCurrencies': False, 'fetchMargins': False, 'fetchOpenOrders': {{'warnWithoutSymbol': False}}}}}})
ex.urls['api'].update({{k: '{rest}' + urlsplit(v).path for k, v in ex.urls['api'].items() if isinstance(v, str)}})
ex.exceptions['exact'].update(ex.exceptions['spot']['exact'])
ex.load_markets()
print(ex.fetch_ticker('BTC/JPY')['last'])
print(ex.create_order('BTC/JPY', 'limit', 'buy', 0.001, 14000000)['status'])
print(ex.fetch_balance()['JPY'])
"#
    )
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let mut serve = args.serve.clone();
    if serve.data.is_none() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        serve.data = Some(std::env::temp_dir().join(format!("kura-demo-{stamp}")));
    }
    // The demo follows the built-in devnet unless told otherwise: a block every 10 s,
    // deposits credited at the second confirmation.
    if serve.chain.is_none() {
        serve.chain = Some("devnet".into());
        serve.block_interval_secs = serve.block_interval_secs.or(Some(10));
        serve.confirmations = serve.confirmations.or(Some(2));
        // New withdrawal addresses are payable after 10 s; batches every 5 s.
        serve.withdrawal_address_delay_secs = serve.withdrawal_address_delay_secs.or(Some(10));
        serve.withdrawal_batch_secs = serve.withdrawal_batch_secs.or(Some(5));
        // A solvency epoch every minute (the first at the first reconciled block), with
        // small trees, so that GET /kura/v1/solvency has a report to show.
        serve.solvency_every_minutes = serve.solvency_every_minutes.or(Some(1));
        serve.solvency_depth = serve.solvency_depth.or(Some(16));
    }
    // A signed audit checkpoint a minute, so the log always has a recent one.
    serve.audit_checkpoint_every_secs = serve.audit_checkpoint_every_secs.or(Some(60));
    let mut config = serve_cli::resolve(&serve)?;
    // The first epoch once the demo's customers are credited (a few seconds in), not
    // of the empty books at the first block.
    config.solvency.first_after = Duration::from_secs(20);
    let config_solvency = config.solvency.enabled();
    let audit_every = config.audit_every;
    let listen = config.listen;
    let data = config.data_dir().to_path_buf();
    let exchange = serve_cli::open(config)?;
    fund_treasury(&exchange)?;
    let rt = serve_cli::runtime()?;
    let tick = Duration::from_millis(args.tick_ms.max(10));
    let no_maker = args.no_maker;
    rt.block_on(async {
        let backend = exchange.backend().clone();
        ensure_user(
            &backend,
            "demo",
            &[("BTC", "10"), ("JPY", "100000000"), ("USD", "1000000")],
        )
        .await?;
        ensure_user(
            &backend,
            "maker",
            &[
                ("BTC", "15"),
                ("JPY", "1000000000000"),
                ("USD", "10000000000"),
            ],
        )
        .await?;
        ensure_user(
            &backend,
            "taker",
            &[
                ("BTC", "15"),
                ("JPY", "1000000000000"),
                ("USD", "10000000000"),
            ],
        )
        .await?;
        let cold = demo_cold_wallet(&exchange, &data)?;
        let key = admin(
            &backend,
            Request::KeyCreate {
                user: "demo".into(),
                perms: vec!["read".into(), "trade".into(), "withdraw".into()],
                ed25519_public: None,
                ip_allow: vec!["127.0.0.1".into()],
                label: "demo".into(),
            },
        )
        .await?;
        let field = |k: &str| key.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let (api_key, secret) = (field("key"), field("secret"));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen} (try --listen 127.0.0.1:0)"))?;
        let addr = listener.local_addr()?;
        let rest = format!("http://{addr}");
        println!("kura demo is running.\n");
        println!("  REST API:    {rest}/api/v3  (Binance spot v3)");
        println!("  data:        {}", data.display());
        println!("  API key:     {api_key}");
        println!("  API secret:  {secret}");
        println!("  customer:    demo (10 BTC, 100,000,000 JPY, 1,000,000 USD; key may withdraw from 127.0.0.1)");
        println!(
            "  markets:     BTC/JPY, BTC/USD{}",
            if no_maker {
                ""
            } else {
                " (a market maker keeps them moving)"
            }
        );
        println!("\nPaste into Python (pip install ccxt==4.5.90):\n");
        println!("{}", snippet(&rest, &api_key, &secret));
        if let Some(custody) = exchange.custody() {
            let address = custody.deposit_address(backend.handle(), "demo")?;
            println!("Bitcoin (built-in devnet, a block every 10 s, credited at 2 confirmations):");
            println!("  demo's deposit address: {address}");
            println!(
                "  deposit from the devnet faucet: kura devnet --data {} send {address} 0.5",
                data.display()
            );
            println!(
                "  withdraw (CCXT): ex.withdraw('BTC', 0.1, '{DEMO_DESTINATION}'); paid within ~30 s"
            );
            println!(
                "  check it arrived: kura devnet --data {} balance {DEMO_DESTINATION}",
                data.display()
            );
            if let Some(cold) = &cold {
                println!("  hot/cold: the hot float is kept at 2-5 % of what customers are owed; the rest");
                println!("    is swept to a 2-of-3 cold wallet (demo keys in {}).", cold.display());
                println!(
                    "    see both: kura custody status --data {}; refills wait in {}",
                    data.display(),
                    data.join("custody").join("refills").display()
                );
            }
        }
        if config_solvency {
            println!(
                "Proof of solvency: {rest}/kura/v1/solvency (an epoch a minute); your own \
                 proof: GET /kura/v1/solvency/proof (signed), or kura solvency proof --data {} \
                 --account <id>",
                data.display()
            );
        }
        if let Some(every) = audit_every {
            println!(
                "Audit log: a signed checkpoint every {} s in {}; prove a record is in it: \
                 kura audit prove-inclusion SEQ --data {}",
                every.as_secs(),
                data.join("audit").join("checkpoints").display(),
                data.display()
            );
        }
        println!("Admin: kura admin --data {} balances demo", data.display());
        println!("Stop with Ctrl-C.");
        let maker = (!no_maker).then(|| tokio::spawn(market_maker(backend.clone(), tick)));
        drop(backend);
        let served = exchange.serve(listener, server::shutdown_signal()).await;
        if let Some(task) = maker {
            task.abort();
        }
        served
    })?;
    let head = exchange.stop()?;
    eprintln!(
        "kura stopped cleanly at seq {}; data kept in {}",
        head.seq,
        data.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_snippet_has_no_block_statements_so_it_pastes_into_a_repl() {
        let s = super::snippet("http://127.0.0.1:8080", "K", "S");
        for line in s.lines() {
            assert!(
                !line.starts_with(' ') && !line.trim_end().ends_with(':'),
                "{line}"
            );
        }
        assert!(s.contains("'apiKey': 'K'") && s.contains("'secret': 'S'"));
        assert!(s.contains("'http://127.0.0.1:8080' + urlsplit(v).path"));
    }
}
