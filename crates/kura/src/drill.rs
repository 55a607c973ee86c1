//! The command stream of the crash drill (`kura debug stress-node` and the J1 test):
//! deposits and orders, each carrying a unique key (deposit reference or client order
//! id) so the journal can be searched for every acknowledged command.

use kura_engine::{genesis, Command, OrderType, Side, TimeInForce};
use kura_units::{Amount, ClientOrderId, MarketId, PriceTicks, QtyLots, UserId};

pub const USERS: u32 = 8;

/// The command with key number `i`: deposits and orders, each with a unique key.
pub fn command(i: u64) -> (String, Command) {
    let user = UserId((i % u64::from(USERS)) as u32);
    if i.is_multiple_of(3) {
        let key = format!("d{i}");
        (
            key.clone(),
            Command::Deposit {
                user,
                // Every user receives both assets over time: the asset switches every
                // 8 deposits, and deposits visit the 8 users in turn.
                asset: if (i / 24).is_multiple_of(2) {
                    genesis::BTC
                } else {
                    genesis::JPY
                },
                amount: Amount::new(1_000_000 + i % 1_000),
                reference: key,
            },
        )
    } else {
        let key = format!("o{i}");
        let side = if i.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 15_000_000 + (i * 7919 % 200) * 100 - 10_000;
        (
            key.clone(),
            Command::PlaceOrder {
                user,
                market: MarketId(0),
                side,
                order: OrderType::Limit {
                    price: PriceTicks::new(price),
                    qty: QtyLots::new(1 + i % 5),
                    tif: TimeInForce::Gtc,
                    post_only: false,
                },
                client_id: ClientOrderId::parse(&key).ok(),
                stp: None,
            },
        )
    }
}

/// The key a journaled command carries, if it is one of [`command`]'s.
pub fn key_of(cmd: &Command) -> Option<String> {
    match cmd {
        Command::Deposit { reference, .. } if reference.starts_with('d') => Some(reference.clone()),
        Command::PlaceOrder {
            client_id: Some(c), ..
        } => Some(c.as_str().to_owned()),
        _ => None,
    }
}
