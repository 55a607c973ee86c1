use super::*;
use crate::workload::exchange_core_single_pair;

#[test]
fn kura_alone_runs_and_counts() {
    let w = exchange_core_single_pair(2, 20_000);
    let r = book_only(&w, 1);
    assert!(r.ops_per_sec["kura"] > 0);
    let k = &r.engines["kura"];
    assert!(k.trades_common > 0 && k.volume_common > 0);
    // Reduce is off in this preset, so native and common runs are the same.
    assert_eq!(k.trades_native, k.trades_common);
    let st = crate::workload::validate(&w).expect("valid");
    assert_eq!((k.trades_native, k.volume_native), (st.trades, st.volume));
    assert_eq!(r.peers_built, cfg!(feature = "peers"));
    let json = r.to_json();
    assert!(json.contains("\"kura\""), "{json}");
    assert!(json.contains("\"peers_built\""), "{json}");
    if !cfg!(feature = "peers") {
        assert_eq!(r.ops_per_sec.len(), 1);
        assert!(r.agree.is_empty());
        assert!(!json.contains("matchcore"));
    }
}

#[test]
fn kura_adapter_basics() {
    let mut k = KuraBook::new(Semantics::Native);
    assert_eq!(k.place_limit(1, Side::Sell, 100, 5, GenKind::Gtc), 0);
    assert_eq!(k.place_limit(2, Side::Sell, 101, 5, GenKind::Gtc), 0);
    assert_eq!(k.place_limit(3, Side::Buy, 100, 3, GenKind::Ioc), 3);
    assert!(k.reduce(1, 1));
    assert_eq!(k.l2(10), (vec![], vec![(100, 1), (101, 5)]));
    assert_eq!(k.move_price(2, 99), 0);
    // A FOK-budget buy of 6 costs 1·100 + 5·99 = 595: a budget of 594 is not enough.
    assert_eq!(
        k.place_limit(4, Side::Buy, 0, 6, GenKind::FokBudget { budget_tl: 594 }),
        0
    );
    assert_eq!(
        k.place_limit(5, Side::Buy, 0, 6, GenKind::FokBudget { budget_tl: 595 }),
        6
    );
    assert_eq!((k.trades(), k.volume()), (3, 9));
    assert!(!k.cancel(1));
    k.place_limit(6, Side::Buy, 90, 4, GenKind::Gtc);
    k.place_limit(7, Side::Buy, 89, 4, GenKind::Gtc);
    // A FOK-budget sell of 6 brings 4·90 + 2·89 = 538.
    assert_eq!(
        k.place_limit(8, Side::Sell, 0, 6, GenKind::FokBudget { budget_tl: 539 }),
        0
    );
    assert_eq!(
        k.place_limit(9, Side::Sell, 0, 6, GenKind::FokBudget { budget_tl: 538 }),
        6
    );
    assert_eq!(k.l2(10), (vec![(89, 2)], vec![]));
}

#[cfg(feature = "peers")]
mod with_peers {
    use super::*;

    fn scripted<B: BookUnderTest>(mut b: B) -> (u64, u64, L2) {
        b.place_limit(1, Side::Sell, 100, 5, GenKind::Gtc);
        b.place_limit(2, Side::Sell, 101, 5, GenKind::Gtc);
        b.place_limit(3, Side::Sell, 100, 2, GenKind::Gtc);
        assert_eq!(
            b.place_limit(4, Side::Buy, 100, 3, GenKind::Ioc),
            3,
            "{}",
            b.name()
        );
        assert!(b.reduce(1, 1), "{}", b.name());
        assert_eq!(b.move_price(2, 99), 0, "{}", b.name());
        assert_eq!(
            b.place_limit(5, Side::Buy, 0, 6, GenKind::FokBudget { budget_tl: 594 }),
            0,
            "{}",
            b.name()
        );
        assert_eq!(
            b.place_limit(6, Side::Buy, 0, 6, GenKind::FokBudget { budget_tl: 595 }),
            6
        );
        b.place_limit(7, Side::Buy, 90, 4, GenKind::Gtc);
        b.place_limit(8, Side::Buy, 89, 4, GenKind::Gtc);
        assert_eq!(b.move_price(7, 100), 2, "{}", b.name());
        assert!(b.cancel(8), "{}", b.name());
        assert!(!b.cancel(8), "{}", b.name());
        (b.trades(), b.volume(), b.l2(usize::MAX))
    }

    #[test]
    fn adapters_agree_on_a_script() {
        for sem in [Semantics::Native, Semantics::Common] {
            let k = scripted(KuraBook::new(sem));
            assert_eq!(k, scripted(MatchcoreBook::new(sem, 16)), "{sem:?}");
            let l = scripted(LobsterBook::new(sem, 16));
            if sem == Semantics::Common {
                assert_eq!(k, l, "{sem:?}");
            } else {
                // lobster reduces by cancel + place: order 1 lost its place behind order 3,
                // so the final move trades against both (2 fills instead of 1).
                assert_eq!((l.0, l.1, &l.2), (k.0 + 1, k.1, &k.2), "{sem:?}");
            }
            assert_eq!(k, scripted(OrderbookRsBook::new(sem)), "{sem:?}");
        }
    }

    /// matchcore 0.4.0 matches a crossing limit order past its limit price; the adapter
    /// works around it. If this test fails, matchcore has fixed it and the workaround in
    /// `matchcore_peer` can go.
    #[test]
    fn matchcore_raw_limit_order_crosses_its_limit() {
        use matchcore::{
            Command, CommandKind, CommandMeta, CommandOutcome, CommandReport, LimitOrder, NewOrder,
            OrderBook, OrderFlags, Price, Quantity, QuantityPolicy, SequenceNumber, SubmitCmd,
            TimeInForce, Timestamp,
        };
        let mut book = OrderBook::new("raw");
        let mut seq = 0u64;
        let mut submit = |book: &mut OrderBook, side, price, qty| {
            let cmd = Command {
                meta: CommandMeta {
                    sequence_number: SequenceNumber(seq),
                    timestamp: Timestamp(0),
                },
                kind: CommandKind::Submit(SubmitCmd {
                    order: NewOrder::Limit(LimitOrder::new(
                        Price(price),
                        QuantityPolicy::Standard {
                            quantity: Quantity(qty),
                        },
                        OrderFlags::new(side, false, TimeInForce::Gtc),
                    )),
                }),
            };
            seq += 1;
            book.execute(&cmd)
        };
        submit(&mut book, matchcore::Side::Sell, 100, 2);
        submit(&mut book, matchcore::Side::Sell, 101, 30);
        let out = submit(&mut book, matchcore::Side::Buy, 100, 21);
        let CommandOutcome::Applied(CommandReport::Submit(effects)) = out else {
            panic!("rejected: {out}");
        };
        let traded = effects
            .target_order()
            .match_result()
            .map_or(0, |m| m.executed_quantity().0);
        assert_eq!(traded, 21, "a buy limited at 100 took 19 lots at 101");

        // Through the adapter: 2 lots trade, 19 rest at 100.
        let mut m = MatchcoreBook::new(Semantics::Native, 4);
        m.place_limit(1, Side::Sell, 100, 2, GenKind::Gtc);
        m.place_limit(2, Side::Sell, 101, 30, GenKind::Gtc);
        assert_eq!(m.place_limit(3, Side::Buy, 100, 21, GenKind::Gtc), 2);
        assert_eq!(m.l2(9), (vec![(100, 19)], vec![(101, 30)]));
        assert_eq!(m.move_price(3, 102), 19);
        assert_eq!(m.l2(9), (vec![], vec![(101, 11)]));
    }

    #[test]
    fn every_peer_agrees_with_kura_on_generated_commands() {
        let w = exchange_core_single_pair(4, 20_000);
        let r = book_only(&w, 1);
        assert!(r.peers_built);
        for name in ["matchcore", "lobster", "orderbook-rs"] {
            assert!(r.ops_per_sec[name] > 0, "{name}");
            assert_eq!(
                r.agree.get(name),
                Some(&true),
                "{:?}",
                r.first_difference.get(name)
            );
        }
        let json: serde_json::Value = match serde_json::from_str(&r.to_json()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(json["agree"]["matchcore"], serde_json::Value::Bool(true));
        assert!(json["orderbook-rs"].as_u64().is_some());
    }

    #[test]
    fn peers_agree_with_the_reduce_variant_too() {
        let w = crate::workload::generate(&crate::workload::GenParams {
            name: "newest generator".into(),
            seed: 9,
            symbols: 3,
            commands: 20_000,
            target_orders: 1_500,
            accounts: 3_000,
            currencies: 4,
            reduce: true,
            fok_budget: true,
        });
        let r = book_only(&w, 1);
        for name in ["matchcore", "lobster", "orderbook-rs"] {
            assert_eq!(
                r.agree.get(name),
                Some(&true),
                "{:?}",
                r.first_difference.get(name)
            );
        }
        // Reducing in place keeps priority on kura, matchcore and orderbook-rs.
        assert_eq!(r.agree_native.get("matchcore"), Some(&true));
        assert_eq!(r.agree_native.get("orderbook-rs"), Some(&true));
    }
}
