//! Times building a por/v1 tree: `cargo run --release -p kura-proofs --example por_build -- [DEPTH] [ACCOUNTS]`
//! (defaults: depth 20, 100 000 accounts), then checks every 1000th customer's proof.

use std::time::Instant;

use kura_proofs::por::{verify, Epoch, LiabilityTree};

fn main() {
    let mut args = std::env::args().skip(1);
    let depth: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let accounts: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let logins: Vec<String> = (0..accounts).map(|i| format!("user{i}")).collect();
    let input: Vec<(u64, &str, u64)> = logins
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64, l.as_str(), (i as u64 * 7_919) % 100_000_000))
        .collect();
    let epoch = Epoch {
        ledger_seq: 1,
        block_height: 900_000,
        block_hash: [7; 32],
    };
    let start = Instant::now();
    let tree = match LiabilityTree::build(&epoch, b"por", b"pad", depth, &input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot build: {e}");
            std::process::exit(1);
        }
    };
    let built = start.elapsed();
    let start = Instant::now();
    let mut checked = 0;
    for (id, _, _) in input.iter().step_by(1000) {
        if let Some(p) = tree.proof(*id) {
            if verify(&p, &tree.epoch_id(), depth, &tree.root()).is_ok() {
                checked += 1;
            }
        }
    }
    println!(
        "depth {depth} ({} slots), {accounts} accounts: built in {} ms; root sum {}; {checked} proofs made and verified in {} µs",
        1u64 << depth,
        built.as_millis(),
        tree.root().sum,
        start.elapsed().as_micros()
    );
}
