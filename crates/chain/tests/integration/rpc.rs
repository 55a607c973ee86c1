//! The devnet's JSON-RPC server over loopback: every method through the same client crate
//! production uses, Core's error codes and HTTP statuses, cookie authentication, and
//! `RpcSource` as a `ChainSource`.

use crate::common;

use std::str::FromStr;

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{Amount, BlockHash, OutPoint, Transaction, Txid};
use bitcoincore_rpc::bitcoincore_rpc_json::{ScanTxOutRequest, StringOrStringArray};
use bitcoincore_rpc::{jsonrpc, Auth, Client, RpcApi};
use common::{base64, devnet, fund, http_post, Key};
use kura_chain::{
    ChainError, ChainSource, DevnetRpcServer, RpcAuth, RpcEndpoint, RpcSource, TxStatus,
};
use serde_json::{json, Value};

fn code(e: bitcoincore_rpc::Error) -> i32 {
    match e {
        bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(r)) => r.code,
        other => panic!("expected an RPC error, got {other}"),
    }
}

fn client(server: &DevnetRpcServer) -> Client {
    let ep = server.endpoint();
    Client::new(&ep.url, Auth::CookieFile(ep.cookie.clone())).expect("client")
}

#[test]
fn writes_rpc_json_and_cookie_and_refuses_without_them() {
    let (dir, devnet) = devnet();
    let server = DevnetRpcServer::start(devnet, 0).expect("start");
    let ep = RpcEndpoint::read(&RpcEndpoint::file_in(dir.path())).expect("rpc.json");
    assert_eq!(&ep, server.endpoint());
    assert!(ep.url.starts_with("http://127.0.0.1:"));
    let cookie = std::fs::read_to_string(&ep.cookie).expect("cookie");
    assert!(cookie.starts_with("__cookie__:") && cookie.len() > 40);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ep.cookie)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let body = r#"{"jsonrpc":"1.0","id":1,"method":"getblockcount","params":[]}"#;
    assert_eq!(http_post(&ep.url, None, body).0, 401);
    let wrong = format!("Basic {}", base64(b"__cookie__:wrong"));
    assert_eq!(http_post(&ep.url, Some(&wrong), body).0, 401);
    let right = format!("Basic {}", base64(cookie.as_bytes()));
    let (status, text) = http_post(&ep.url, Some(&right), body);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v, json!({"result": 101, "error": null, "id": 1}));

    // A client with a wrong password is refused too.
    let bad =
        Client::new(&ep.url, Auth::UserPass("__cookie__".into(), "nope".into())).expect("client");
    assert!(bad.get_block_count().is_err());

    // Core's error statuses for JSON-RPC 1.0; 2.0 always answers 200.
    let (status, text) = http_post(
        &ep.url,
        Some(&right),
        r#"{"id":2,"method":"nosuchmethod","params":[]}"#,
    );
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["error"]["code"], -32601);
    let (status, text) = http_post(
        &ep.url,
        Some(&right),
        r#"{"id":3,"method":"getblockhash","params":[5000]}"#,
    );
    assert_eq!(status, 500);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        v["error"],
        json!({"code": -8, "message": "Block height out of range"})
    );
    let (status, text) = http_post(
        &ep.url,
        Some(&right),
        r#"{"jsonrpc":"2.0","id":4,"method":"getblockhash","params":["x"]}"#,
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["error"]["code"], -3);
    assert!(v.get("result").is_none());
    let (status, text) = http_post(&ep.url, Some(&right), "{not json");
    assert_eq!(status, 500);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["error"]["code"], -32700);
    // Batches.
    let (status, text) = http_post(
        &ep.url,
        Some(&right),
        r#"[{"id":5,"method":"getblockcount"},{"id":6,"method":"getbestblockhash"}]"#,
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v[0]["result"], 101);
    assert_eq!(v[1]["id"], 6);

    // Stopping removes the cookie and rpc.json.
    server.stop();
    assert!(!ep.cookie.exists());
    assert!(!RpcEndpoint::file_in(dir.path()).exists());
}

#[test]
fn core_methods_answer_in_cores_shapes() {
    let (_dir, devnet) = devnet();
    let key = Key::new(21);
    let coin = fund(&devnet, &key, Amount::from_sat(1_000_000));
    let server = DevnetRpcServer::start(devnet.clone(), 0).expect("start");
    let rpc = client(&server);

    let info = rpc.get_blockchain_info().expect("getblockchaininfo");
    assert_eq!(info.chain, bitcoin::Network::Regtest);
    assert_eq!(info.blocks, 102);
    assert_eq!(info.best_block_hash, devnet.tip().hash);
    assert!(matches!(info.warnings, StringOrStringArray::StringArray(_)));
    assert_eq!(rpc.get_block_count().expect("count"), 102);
    assert_eq!(rpc.get_best_block_hash().expect("best"), devnet.tip().hash);
    let h1 = rpc.get_block_hash(1).expect("hash");
    assert_eq!(Some(h1), devnet.block_hash(1));
    assert_eq!(code(rpc.get_block_hash(103).expect_err("above tip")), -8);

    let block = rpc.get_block(&h1).expect("getblock 0");
    assert_eq!(block.block_hash(), h1);
    let info = rpc.get_block_info(&h1).expect("getblock 1");
    assert_eq!(info.height, 1);
    assert_eq!(info.confirmations, 102);
    assert_eq!(info.nextblockhash, devnet.block_hash(2));
    assert_eq!(info.tx, vec![block.txdata[0].compute_txid()]);
    assert_eq!(info.bits, "207fffff");
    let header = rpc.get_block_header(&h1).expect("header");
    assert_eq!(header, block.header);
    let hinfo = rpc.get_block_header_info(&h1).expect("header info");
    assert_eq!(hinfo.height, 1);
    assert_eq!(hinfo.previous_block_hash, devnet.block_hash(0));
    assert_eq!(hinfo.chainwork.len(), 32);
    let unknown = BlockHash::from_str(&"11".repeat(32)).expect("hash");
    assert_eq!(code(rpc.get_block(&unknown).expect_err("unknown")), -5);
    assert_eq!(
        code(rpc.get_block_header_info(&unknown).expect_err("unknown")),
        -5
    );
    let bad: Result<Value, _> = rpc.call("getblock", &[json!("abcd")]);
    assert_eq!(code(bad.expect_err("short hash")), -8);

    // Transactions: one confirmed (funding), one in the mempool.
    let other = Key::new(22);
    let tx = key.pay(coin, &other.script, 2_000);
    let accept = rpc.test_mempool_accept(&[&tx]).expect("testmempoolaccept");
    assert!(accept[0].allowed);
    assert_eq!(
        accept[0].fees.as_ref().map(|f| f.base),
        Some(Amount::from_sat(2_000))
    );
    assert!(rpc.get_raw_mempool().expect("mempool").is_empty());
    let txid = rpc.send_raw_transaction(&tx).expect("send");
    assert_eq!(txid, tx.compute_txid());
    // Sending again is not an error.
    assert_eq!(rpc.send_raw_transaction(&tx).expect("again"), txid);
    assert_eq!(rpc.get_raw_mempool().expect("mempool"), vec![txid]);
    let verbose = rpc.get_raw_mempool_verbose().expect("verbose");
    assert_eq!(verbose[&txid].fees.base, Amount::from_sat(2_000));
    let entry = rpc.get_mempool_entry(&txid).expect("entry");
    assert_eq!(entry.vsize, tx.vsize() as u64);
    assert_eq!(entry.ancestor_count, 1);
    assert!(entry.bip125_replaceable);
    assert_eq!(rpc.get_raw_transaction(&txid, None).expect("raw"), tx);
    let info = rpc.get_raw_transaction_info(&txid, None).expect("verbose");
    assert_eq!(info.txid, txid);
    assert_eq!(info.confirmations, None);
    assert_eq!(info.vout[0].value, tx.output[0].value);
    assert_eq!(
        info.vout[0]
            .script_pub_key
            .address
            .clone()
            .map(|a| a.assume_checked()),
        Some(other.address.clone())
    );
    let funding = rpc
        .get_raw_transaction_info(&coin.0.txid, None)
        .expect("confirmed");
    assert_eq!(funding.confirmations, Some(1));
    assert_eq!(funding.blockhash, Some(devnet.tip().hash));
    let in_block = rpc
        .get_raw_transaction(&coin.0.txid, Some(&devnet.tip().hash))
        .expect("in block");
    assert_eq!(in_block.compute_txid(), coin.0.txid);
    let missing = Txid::from_str(&"22".repeat(32)).expect("txid");
    assert_eq!(
        code(
            rpc.get_raw_transaction(&missing, None)
                .expect_err("missing")
        ),
        -5
    );
    assert_eq!(
        code(rpc.get_mempool_entry(&missing).expect_err("missing")),
        -5
    );

    // gettxout: the funding output is spent in the mempool (null with mempool, present
    // without); the new output exists only with the mempool.
    assert!(rpc
        .get_tx_out(&coin.0.txid, coin.0.vout, Some(true))
        .expect("txout")
        .is_none());
    let out = rpc
        .get_tx_out(&coin.0.txid, coin.0.vout, Some(false))
        .expect("txout")
        .expect("unspent on chain");
    assert_eq!(out.value, coin.1);
    assert_eq!(out.confirmations, 1);
    assert!(!out.coinbase);
    let out = rpc
        .get_tx_out(&txid, 0, None)
        .expect("txout")
        .expect("mempool output");
    assert_eq!(out.confirmations, 0);

    // Rejections carry Core's codes.
    let conflict = key.pay(coin, &key.script, 2_000);
    let e = rpc
        .send_raw_transaction(&conflict)
        .expect_err("no higher fee");
    assert_eq!(code(e), -26);
    let orphan = key.pay(
        (OutPoint::new(missing, 0), Amount::from_sat(10_000)),
        &key.script,
        1_000,
    );
    assert_eq!(
        code(
            rpc.send_raw_transaction(&orphan)
                .expect_err("missing inputs")
        ),
        -25
    );
    let bad: Result<Value, _> = rpc.call("sendrawtransaction", &[json!("00ff")]);
    assert_eq!(code(bad.expect_err("undecodable")), -22);
    let rejected = rpc
        .test_mempool_accept(&[&conflict])
        .expect("testmempoolaccept");
    assert!(!rejected[0].allowed);
    assert!(rejected[0]
        .reject_reason
        .as_deref()
        .is_some_and(|r| r.starts_with("insufficient fee")));

    // generatetoaddress confirms it; scantxoutset sees the new output.
    let hashes = rpc.generate_to_address(1, &key.address).expect("generate");
    assert_eq!(hashes, vec![devnet.tip().hash]);
    assert!(rpc.get_raw_mempool().expect("mempool").is_empty());
    assert_eq!(
        code(rpc.send_raw_transaction(&tx).expect_err("confirmed")),
        -27
    );
    let scan = rpc
        .scan_tx_out_set_blocking(&[ScanTxOutRequest::Single(format!("addr({})", other.address))])
        .expect("scan");
    assert_eq!(scan.unspents.len(), 1);
    assert_eq!(scan.total_amount, tx.output[0].value);
    assert_eq!(scan.unspents[0].txid, txid);
    assert!(scan.unspents[0].descriptor.starts_with("addr("));
    let raw = format!("raw({})", other.script.to_hex_string());
    let scan: Value = rpc
        .call("scantxoutset", &[json!("start"), json!([{"desc": raw}])])
        .expect("scan raw");
    assert_eq!(scan["unspents"].as_array().map(Vec::len), Some(1));
    // With the checksum Core would compute, taken from the answer itself.
    let desc = scan["unspents"][0]["desc"]
        .as_str()
        .expect("desc")
        .to_string();
    let again: Value = rpc
        .call("scantxoutset", &[json!("start"), json!([desc])])
        .expect("scan with checksum");
    assert_eq!(again["total_amount"], scan["total_amount"]);
    let bad: Result<Value, _> = rpc.call(
        "scantxoutset",
        &[
            json!("start"),
            json!([format!("addr({})#aaaaaaaa", other.address)]),
        ],
    );
    assert_eq!(code(bad.expect_err("bad checksum")), -5);

    // invalidateblock puts the transaction back in the mempool.
    let tip = devnet.tip().hash;
    rpc.invalidate_block(&tip).expect("invalidate");
    assert_eq!(rpc.get_block_count().expect("count"), 102);
    assert_eq!(rpc.get_raw_mempool().expect("mempool"), vec![txid]);
    assert_eq!(rpc.get_block_info(&tip).expect("stale").confirmations, -1);
    assert_eq!(
        code(rpc.invalidate_block(&unknown).expect_err("unknown")),
        -5
    );

    // submitblock: a devnet template is accepted; a tampered one answers Core's reason.
    let mut block = devnet
        .block_template(&key.script, Vec::new(), true)
        .expect("template");
    let good = block.clone();
    block.header.merkle_root = bitcoin::hashes::Hash::all_zeros();
    kura_chain::devnet::consensus::solve(&mut block.header);
    let answer: Value = rpc
        .call("submitblock", &[json!(serialize_hex(&block))])
        .expect("submitblock");
    assert_eq!(answer, json!("bad-txnmrklroot"));
    rpc.submit_block(&good).expect("valid block");
    assert_eq!(rpc.get_best_block_hash().expect("best"), good.block_hash());
}

#[test]
fn devnet_extras() {
    let (_dir, devnet) = devnet();
    let server = DevnetRpcServer::start(devnet.clone(), 0).expect("start");
    let source = RpcSource::for_endpoint(server.endpoint()).expect("source");
    let key = Key::new(23);
    let txid: String = source
        .call(
            "devnet_send",
            &[json!(key.address.to_string()), json!("0.125")],
        )
        .expect("send");
    let txid = Txid::from_str(&txid).expect("txid");
    let bal: Value = source
        .call("devnet_balance", &[json!(key.address.to_string())])
        .expect("balance");
    assert_eq!(bal["confirmed_sat"], 0);
    assert_eq!(bal["unconfirmed_sat"], 12_500_000);
    let mined: Vec<String> = source.call("devnet_mine", &[json!(2)]).expect("mine");
    assert_eq!(mined.len(), 2);
    let bal: Value = source
        .call("devnet_balance", &[json!(key.address.to_string())])
        .expect("balance");
    assert_eq!(bal["confirmed_sat"], 12_500_000);
    let report: Value = source.call("devnet_reorg", &[json!(2)]).expect("reorg");
    assert_eq!(report["disconnected"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["returned_to_mempool"], json!([txid.to_string()]));
    assert_eq!(report["height"], 104);
    let err = source
        .call::<Value>("devnet_reorg", &[json!(1000)])
        .expect_err("too deep");
    assert!(matches!(err, ChainError::Rejected { code: -8, .. }));
    let err = source
        .call::<Value>("devnet_send", &[json!("notanaddress"), json!(1)])
        .expect_err("bad address");
    assert!(matches!(err, ChainError::Rejected { code: -5, .. }));
    let err = source
        .call::<Value>(
            "devnet_send",
            &[json!(key.address.to_string()), json!("1e9")],
        )
        .expect_err("too much");
    assert!(matches!(err, ChainError::Rejected { code: -3 | -6, .. }));
    let faucet: Value = source.call("devnet_faucet", &[]).expect("faucet");
    assert_eq!(faucet["address"], devnet.faucet_address().to_string());
}

#[test]
fn rpc_source_is_a_chain_source() {
    let (_dir, devnet) = devnet();
    let key = Key::new(24);
    let coin = fund(&devnet, &key, Amount::from_sat(400_000));
    let server = DevnetRpcServer::start(devnet.clone(), 0).expect("start");
    let ep = server.endpoint().clone();
    let source = RpcSource::new(&ep.url, RpcAuth::CookieFile(ep.cookie.clone())).expect("source");

    let tip = source.tip().expect("tip");
    assert_eq!(tip, devnet.tip());
    assert_eq!(source.block_hash(0).expect("hash"), devnet.block_hash(0));
    assert_eq!(source.block_hash(tip.height + 1).expect("above"), None);
    let block = source.block(&tip.hash).expect("block").expect("known");
    assert_eq!(Some(block), devnet.block(&tip.hash));
    let unknown = BlockHash::from_str(&"33".repeat(32)).expect("hash");
    assert_eq!(source.block(&unknown).expect("unknown"), None);

    let parent = key.pay(coin, &key.script, 1_000);
    let pid = source.broadcast(&parent).expect("broadcast");
    let child = key.pay(
        (OutPoint::new(pid, 0), parent.output[0].value),
        &key.script,
        1_000,
    );
    source.broadcast(&child).expect("child");
    assert_eq!(
        source.mempool_txs().expect("mempool"),
        vec![parent.clone(), child]
    );
    assert_eq!(
        source.get_tx(&pid).expect("get"),
        Some((parent.clone(), TxStatus::Mempool))
    );
    let (_, status) = source.get_tx(&coin.0.txid).expect("get").expect("known");
    assert_eq!(status, TxStatus::Confirmed(tip));
    let missing = Txid::from_str(&"44".repeat(32)).expect("txid");
    assert_eq!(source.get_tx(&missing).expect("missing"), None);
    let err = source
        .broadcast(&key.pay(coin, &Key::new(25).script, 1_000))
        .expect_err("double spend");
    assert!(matches!(err, ChainError::Rejected { code: -26, .. }));

    // After the node stops, calls fail as unavailable rather than panicking.
    server.stop();
    assert!(matches!(source.tip(), Err(ChainError::Unavailable(_))));
    let _: Transaction = deserialize_hex(&serialize_hex(&parent)).expect("round trip");
}
