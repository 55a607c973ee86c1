//! `bdk_bitcoind_rpc`'s `Emitter` (the block-by-block reader the custody code builds on)
//! against the devnet's JSON-RPC over loopback: it sees every block, the mempool, and a
//! reorg, exactly as it would against a real `bitcoind`.

use crate::common;

use bdk_bitcoind_rpc::bitcoincore_rpc::{Auth, Client};
use bdk_bitcoind_rpc::Emitter;
use bdk_core::{BlockId, CheckPoint};
use bitcoin::Amount;
use common::{devnet, Key};
use kura_chain::DevnetRpcServer;

#[test]
fn emitter_sees_blocks_mempool_and_reorgs() {
    let (_dir, devnet) = devnet();
    let server = DevnetRpcServer::start(devnet.clone(), 0).expect("start");
    let ep = server.endpoint();
    let client = Client::new(&ep.url, Auth::CookieFile(ep.cookie.clone())).expect("client");
    let genesis = devnet.block_hash(0).expect("genesis");
    let cp = CheckPoint::new(BlockId {
        height: 0,
        hash: genesis,
    });
    let mut emitter = Emitter::new(&client, cp, 0, bdk_bitcoind_rpc::NO_EXPECTED_MEMPOOL_TXS);

    let mut seen = Vec::new();
    while let Some(ev) = emitter.next_block().expect("next block") {
        assert_eq!(ev.block.block_hash(), ev.block_hash());
        seen.push((ev.block_height(), ev.block_hash()));
    }
    // Everything above the checkpoint it started from (genesis), in order.
    assert_eq!(
        seen.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
        (1..=101).collect::<Vec<u32>>()
    );
    for (height, hash) in &seen {
        assert_eq!(devnet.block_hash(*height), Some(*hash));
    }

    // A mempool transaction is emitted with its full body.
    let key = Key::new(31);
    let txid = devnet
        .send(&key.address, Amount::from_sat(250_000))
        .expect("send");
    let mempool = emitter.mempool().expect("mempool");
    assert_eq!(mempool.update.len(), 1);
    assert_eq!(mempool.update[0].0.compute_txid(), txid);
    assert!(mempool.evicted.is_empty());

    // It confirms: the next block carries it.
    let mined = devnet.mine(1).expect("mine")[0];
    let ev = emitter.next_block().expect("next").expect("a block");
    assert_eq!(ev.block_hash(), mined);
    assert!(ev.block.txdata.iter().any(|t| t.compute_txid() == txid));
    assert!(emitter.next_block().expect("next").is_none());
    assert!(emitter.mempool().expect("mempool").update.is_empty());

    // A reorg of that block: the emitter walks back to the fork point and emits the
    // replacement branch; the transaction is in the mempool again.
    let report = devnet.reorg(1).expect("reorg");
    let mut replaced = Vec::new();
    while let Some(ev) = emitter.next_block().expect("next block") {
        replaced.push(ev.block_hash());
        // The checkpoint chain is always the devnet's active chain.
        assert_eq!(devnet.block_hash(ev.block_height()), Some(ev.block_hash()));
    }
    assert_eq!(replaced, report.new_blocks);
    let mempool = emitter.mempool().expect("mempool");
    assert_eq!(
        mempool
            .update
            .iter()
            .map(|(t, _)| t.compute_txid())
            .collect::<Vec<_>>(),
        vec![txid]
    );

    // The emitter is at the tip again; a replacement by fee shows up as the new transaction
    // and the eviction of the one it replaces.
    while emitter.next_block().expect("next").is_some() {}
    let coin = common::fund(&devnet, &key, Amount::from_sat(90_000));
    while emitter.next_block().expect("next").is_some() {}
    let first = key.pay(coin, &Key::new(32).script, 1_000);
    let first_id = devnet.submit_tx(&first).expect("first");
    let seen: Vec<_> = emitter
        .mempool()
        .expect("mempool")
        .update
        .iter()
        .map(|(t, _)| t.compute_txid())
        .collect();
    assert!(seen.contains(&first_id));
    let second = key.pay(coin, &Key::new(33).script, 3_000);
    let second_id = devnet.submit_tx(&second).expect("replacement");
    let ev = emitter.mempool().expect("mempool");
    assert!(ev.update.iter().any(|(t, _)| t.compute_txid() == second_id));
    assert!(!ev.update.iter().any(|(t, _)| t.compute_txid() == first_id));
    assert_eq!(
        ev.evicted.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![first_id]
    );
}
