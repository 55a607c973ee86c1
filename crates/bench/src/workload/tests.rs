use super::*;

#[test]
fn same_seed_same_commands() {
    let a = exchange_core_single_pair(7, 20_000);
    let b = exchange_core_single_pair(7, 20_000);
    let c = exchange_core_single_pair(8, 20_000);
    assert_eq!(a, b);
    assert_ne!(a.commands, c.commands);
    assert_eq!(a.prefill.len(), 1_000);
    assert_eq!(a.commands.len(), 20_000);
    assert_eq!(a.users, 1_000);
}

#[test]
fn mix_is_close_to_the_published_one() {
    let w = exchange_core_single_pair(1, 200_000);
    let m = Mix::of(&w.commands);
    eprintln!("{m}");
    let close = |got: u64, want_bp: i64| (m.bp(got) as i64 - want_bp).abs() <= 150;
    assert!(close(m.gtc, 900), "GTC: {m}");
    assert!(close(m.instant(), 300), "IOC: {m}");
    assert!(close(m.cancel, 600), "cancel: {m}");
    assert!(close(m.moves, 8_200), "move: {m}");
    assert_eq!(m.reduce, 0);
    assert!(m.fok_budget > 0, "{m}");
}

#[test]
fn single_pair_is_valid() {
    let w = exchange_core_single_pair(3, 200_000);
    let st = validate(&w).expect("valid workload");
    eprintln!("{st:?}");
    assert!(st.trades > 0 && st.volume > 0);
    // exchange-core's README: about 6% of commands trade; about 1,000 orders rest.
    let trading_bp = st.commands_trading * 10_000 / w.commands.len() as u64;
    assert!((150..=1_000).contains(&trading_bp), "{st:?}");
    assert!((700..=1_100).contains(&st.mean_resting_orders), "{st:?}");
    for (_, c) in w.prefill.iter().chain(&w.commands) {
        if let GenCmd::Place { price, .. } | GenCmd::Move { price, .. } = c {
            assert!(*price >= 1);
        }
        assert!((1..=w.users).contains(&c.uid()), "{c:?}");
    }
}

#[test]
fn reduce_variant_is_valid() {
    let w = generate(&GenParams {
        name: "newest generator".into(),
        seed: 11,
        symbols: 1,
        commands: 100_000,
        target_orders: 1_000,
        accounts: 2_000,
        currencies: 2,
        reduce: true,
        fok_budget: true,
    });
    let m = Mix::of(&w.commands);
    eprintln!("with reduce: {m}");
    assert!(m.reduce > 0);
    validate(&w).expect("valid workload");
}

#[test]
fn many_symbols_are_valid_and_deterministic() {
    let params = GenParams {
        name: "medium, scaled down".into(),
        seed: 5,
        symbols: 200,
        commands: 60_000,
        target_orders: 20_000,
        accounts: 66_000,
        currencies: 40,
        reduce: false,
        fok_budget: true,
    };
    let w = generate(&params);
    assert_eq!(w, generate(&params));
    assert_eq!(w.commands.len(), 60_000);
    let used: std::collections::BTreeSet<u32> = w.commands.iter().map(|c| c.0).collect();
    assert!(
        used.len() > 100,
        "commands spread over {} symbols",
        used.len()
    );
    // Pareto weights: the busiest symbol gets many times the median share.
    let mut per = vec![0usize; 200];
    for (s, _) in &w.commands {
        per[*s as usize] += 1;
    }
    let max = *per.iter().max().unwrap_or(&0);
    per.sort_unstable();
    assert!(max > 4 * per[100].max(1), "max {max} median {}", per[100]);
    validate(&w).expect("valid workload");
}
