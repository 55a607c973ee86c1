//! Same-run comparison of order books on exchange-core's generated workload.
//!
//! `cargo run --release -p kura-bench --features peers --example book_only -- [single|medium] [commands] [repeats] [seed]`
//!
//! Prints the report as JSON on stdout; the mix and timings of generation on stderr.

use kura_bench::peers::book_only;
use kura_bench::workload::{exchange_core_medium, exchange_core_single_pair, Mix};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = args.first().map_or("single", String::as_str);
    let commands: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3_000_000);
    let repeats: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let seed: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);

    let t = Instant::now();
    let w = match preset {
        "medium" => exchange_core_medium(seed, commands),
        _ => exchange_core_single_pair(seed, commands),
    };
    eprintln!(
        "generated {} ({} pre-fill, {} measured) in {:?}",
        w.name,
        w.prefill.len(),
        w.commands.len(),
        t.elapsed()
    );
    eprintln!("mix: {}", Mix::of(&w.commands));
    let t = Instant::now();
    let report = book_only(&w, repeats);
    eprintln!("ran every engine in {:?}", t.elapsed());
    println!("{}", report.to_json());
}
