//! Bitcoin Core accepts the devnet's blocks. Runs only when `BITCOIND_EXE` names a
//! `bitcoind` binary (none is packaged for the build machines); otherwise it says that it
//! was skipped, and passes.
//!
//! It starts `bitcoind -regtest` on loopback with a temporary data directory, builds a
//! devnet chain with coinbase-only blocks, segwit spends (so witness commitments), a
//! halving boundary and a reorg, then submits every block of the devnet's active chain with
//! `submitblock` and checks Core ends on the same tip.

use crate::common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bitcoin::Amount;
use bitcoincore_rpc::{Auth, Client, RpcApi};
use common::{devnet, fund, wait_for, Key};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bitcoin_core_accepts_devnet_blocks() {
    let Some(exe) = std::env::var_os("BITCOIND_EXE") else {
        println!("SKIPPED bitcoin_core_accepts_devnet_blocks: set BITCOIND_EXE to a bitcoind binary to run it");
        eprintln!("SKIPPED bitcoin_core_accepts_devnet_blocks: BITCOIND_EXE is not set");
        return;
    };

    // The devnet chain: past the first halving (150), with segwit spends and a reorg.
    let (_ddir, devnet) = devnet();
    let key = Key::new(41);
    let coin = fund(&devnet, &key, Amount::from_sat(5_000_000));
    devnet
        .submit_tx(&key.pay(coin, &Key::new(42).script, 3_000))
        .expect("spend");
    devnet
        .send(&Key::new(43).address, Amount::from_sat(123_456))
        .expect("send");
    devnet.mine(3).expect("mine");
    devnet
        .send(&key.address, Amount::from_sat(77_777))
        .expect("send");
    devnet.mine(1).expect("mine");
    devnet.reorg(2).expect("reorg");
    devnet.mine(50).expect("past the halving");
    let tip = devnet.tip();
    assert!(tip.height > 150);

    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(&exe)
        .arg("-regtest")
        .arg(format!("-datadir={}", dir.path().display()))
        .arg(format!("-rpcport={port}"))
        .arg("-rpcbind=127.0.0.1")
        .arg("-rpcallowip=127.0.0.1")
        .arg("-listen=0")
        .arg("-dnsseed=0")
        .arg("-disablewallet=1")
        .arg("-server=1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bitcoind");
    let _node = Node(child);
    let cookie = dir.path().join("regtest").join(".cookie");
    assert!(
        wait_for(Duration::from_secs(60), || cookie.exists()),
        "bitcoind wrote no cookie"
    );
    let url = format!("http://127.0.0.1:{port}");
    let rpc = Client::new(&url, Auth::CookieFile(cookie.clone())).expect("client");
    assert!(
        wait_for(Duration::from_secs(60), || rpc.get_block_count().is_ok()),
        "bitcoind's RPC did not come up"
    );
    assert_eq!(
        rpc.get_block_hash(0).expect("genesis"),
        devnet.block_hash(0).expect("genesis")
    );

    for height in 1..=tip.height {
        let hash = devnet.block_hash(height).expect("hash");
        let block = devnet.block(&hash).expect("block");
        let answer: serde_json::Value = rpc
            .call(
                "submitblock",
                &[serde_json::json!(
                    bitcoin::consensus::encode::serialize_hex(&block)
                )],
            )
            .expect("submitblock");
        assert!(answer.is_null(), "Core refused block {height}: {answer}");
    }
    assert_eq!(rpc.get_best_block_hash().expect("best"), tip.hash);
    assert_eq!(rpc.get_block_count().expect("count"), u64::from(tip.height));
    let _: serde_json::Value = rpc.call("stop", &[]).expect("stop");
}
