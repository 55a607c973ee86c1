//! The default assets and markets, as commands: markets are added by command, never by
//! code, so a node's markets are whatever its journal says. `kura demo`, tests and
//! benchmarks start from these.

use crate::{Command, FeeTier, MarketSpec, Stp};
use kura_units::{Amount, AssetId, PriceTicks, QtyLots, Scale};

/// BTC (8 decimals), JPY (0), USD (2), in that order: asset ids 0, 1, 2.
pub const BTC: AssetId = AssetId(0);
pub const JPY: AssetId = AssetId(1);
pub const USD: AssetId = AssetId(2);

/// Fee tiers of the default markets (maker/taker, ppm): 0.10/0.10 %, 0.08/0.09 %,
/// 0.00/0.05 %.
pub fn default_fee_tiers() -> Vec<FeeTier> {
    vec![
        FeeTier {
            maker_ppm: 1_000,
            taker_ppm: 1_000,
        },
        FeeTier {
            maker_ppm: 800,
            taker_ppm: 900,
        },
        FeeTier {
            maker_ppm: 0,
            taker_ppm: 500,
        },
    ]
}

/// BTC/JPY: tick 1 JPY, lot 0.00001 BTC, min notional 100 JPY.
pub fn btc_jpy() -> MarketSpec {
    MarketSpec {
        symbol: "BTCJPY".into(),
        base: BTC,
        quote: JPY,
        tick: Amount::new(1),
        lot: Amount::new(1_000),
        min_qty: QtyLots::new(1),
        max_qty: QtyLots::new(900_000_000),
        min_notional: Amount::new(100),
        max_notional: Amount::new(1_000_000_000_000),
        max_price: PriceTicks::new(10_000_000_000),
        fees: default_fee_tiers(),
        collar_bps: 500,
        default_stp: Stp::ExpireMaker,
    }
}

/// BTC/USD: tick 0.01 USD, lot 0.00001 BTC, min notional 5 USD.
pub fn btc_usd() -> MarketSpec {
    MarketSpec {
        symbol: "BTCUSD".into(),
        base: BTC,
        quote: USD,
        tick: Amount::new(1),
        lot: Amount::new(1_000),
        min_qty: QtyLots::new(1),
        max_qty: QtyLots::new(900_000_000),
        min_notional: Amount::new(500),
        max_notional: Amount::new(1_000_000_000_000),
        max_price: PriceTicks::new(10_000_000_000),
        fees: default_fee_tiers(),
        collar_bps: 500,
        default_stp: Stp::ExpireMaker,
    }
}

/// The commands that set up the default assets and markets on an empty engine.
pub fn genesis() -> Vec<Command> {
    let scale = |p| Scale::new(p).expect("scale below the maximum");
    vec![
        Command::AddAsset {
            symbol: "BTC".into(),
            scale: scale(8),
        },
        Command::AddAsset {
            symbol: "JPY".into(),
            scale: scale(0),
        },
        Command::AddAsset {
            symbol: "USD".into(),
            scale: scale(2),
        },
        Command::AddMarket { spec: btc_jpy() },
        Command::AddMarket { spec: btc_usd() },
    ]
}
