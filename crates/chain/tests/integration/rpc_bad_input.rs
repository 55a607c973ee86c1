//! The devnet's JSON-RPC server answers every malformed request with a JSON-RPC error
//! object (never a panic, a hang or a non-JSON body), and keeps serving afterwards.

use crate::common;

use common::{base64, devnet, http_post};
use kura_chain::DevnetRpcServer;
use serde_json::{json, Value};

const METHODS: &[&str] = &[
    "getblockchaininfo",
    "getnetworkinfo",
    "getblockcount",
    "getbestblockhash",
    "getblockhash",
    "getblock",
    "getblockheader",
    "getrawmempool",
    "getrawtransaction",
    "sendrawtransaction",
    "testmempoolaccept",
    "getmempoolentry",
    "gettxout",
    "scantxoutset",
    "generatetoaddress",
    "invalidateblock",
    "submitblock",
    "devnet_send",
    "devnet_mine",
    "devnet_reorg",
    "devnet_balance",
    "devnet_faucet",
];

#[test]
fn malformed_parameters_get_error_objects() {
    let (_dir, devnet) = devnet();
    let server = DevnetRpcServer::start(devnet.clone(), 0).expect("start");
    let ep = server.endpoint().clone();
    let cookie = std::fs::read_to_string(&ep.cookie).expect("cookie");
    let auth = format!("Basic {}", base64(cookie.as_bytes()));
    let weird: Vec<Value> = vec![
        json!([]),
        json!([null]),
        json!([-1]),
        json!([1e300]),
        json!(["zz"]),
        json!(["00".repeat(32)]),
        json!([true, true, true, true]),
        json!([{"a": 1}]),
        json!([[1, 2, 3]]),
        json!(["start", ["addr(zz)", {"desc": 5}, "raw(0g)", "pkh(x)#0"]]),
        json!(["ff", "ff"]),
        json!([i64::MAX, "bcrt1q"]),
        json!(["é".repeat(40)]),
        json!([0, "0", [0]]),
    ];
    let height = devnet.tip().height;
    for method in METHODS {
        for params in &weird {
            let body = json!({"jsonrpc": "1.0", "id": "t", "method": method, "params": params});
            let (status, text) = http_post(&ep.url, Some(&auth), &body.to_string());
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {params}: not JSON ({e}): {text}"));
            assert_eq!(v["id"], "t", "{method} {params}");
            if status == 200 {
                assert!(v["error"].is_null(), "{method} {params}: {text}");
            } else {
                assert_eq!(status, 500, "{method} {params}: {text}");
                assert!(v["error"]["code"].is_i64(), "{method} {params}: {text}");
                assert!(
                    v["error"]["message"].is_string(),
                    "{method} {params}: {text}"
                );
            }
        }
    }
    // Requests that are not JSON-RPC calls at all.
    for body in ["", "[]", "[1]", "42", "{\"method\": 5}", "{\"params\": []}"] {
        let (_, text) = http_post(&ep.url, Some(&auth), body);
        let _: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{body}: not JSON ({e}): {text}"));
    }
    // Still serving, and only the calls that were valid mined anything (devnet_mine with
    // [] or [null] mines one block each; [0...] mines none).
    let (status, text) = http_post(
        &ep.url,
        Some(&auth),
        r#"{"id":1,"method":"getblockcount","params":[]}"#,
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert!(v["result"].as_u64().expect("height") >= u64::from(height));
    // getblock with verbosity 2 carries whole transactions.
    let hash = devnet.tip().hash.to_string();
    let (_, text) = http_post(
        &ep.url,
        Some(&auth),
        &json!({"id": 2, "method": "getblock", "params": [hash, 2]}).to_string(),
    );
    let v: Value = serde_json::from_str(&text).expect("json");
    assert!(
        v["result"]["tx"][0]["vin"][0]["coinbase"].is_string(),
        "{text}"
    );
}
