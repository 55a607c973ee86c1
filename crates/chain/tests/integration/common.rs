//! Helpers shared by the integration tests: a test key that signs P2WPKH spends, funding
//! from the faucet, and a raw HTTP client for the JSON-RPC server.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Witness,
};
use kura_chain::{Devnet, DevnetOptions, TxStatus};

pub struct Key {
    secp: Secp256k1<All>,
    sk: SecretKey,
    pk: CompressedPublicKey,
    pub address: Address,
    pub script: ScriptBuf,
}

impl Key {
    pub fn new(seed: u8) -> Key {
        let secp = Secp256k1::new();
        let sk = SecretKey::from_slice(&[seed.max(1); 32]).expect("valid key");
        let pk = CompressedPublicKey(sk.public_key(&secp));
        let address = Address::p2wpkh(&pk, Network::Regtest);
        let script = address.script_pubkey();
        Key {
            secp,
            sk,
            pk,
            address,
            script,
        }
    }

    /// A signed version-2 transaction spending P2WPKH outputs of this key.
    pub fn spend(&self, inputs: &[(OutPoint, Amount)], outputs: Vec<TxOut>) -> Transaction {
        self.spend_locked(
            inputs,
            outputs,
            Sequence::ENABLE_RBF_NO_LOCKTIME,
            absolute::LockTime::ZERO,
        )
    }

    /// Like [`Key::spend`] with every input's sequence and the lock time given.
    pub fn spend_locked(
        &self,
        inputs: &[(OutPoint, Amount)],
        outputs: Vec<TxOut>,
        sequence: Sequence,
        lock_time: absolute::LockTime,
    ) -> Transaction {
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time,
            input: inputs
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        let mut witnesses = Vec::new();
        {
            let mut cache = SighashCache::new(&tx);
            for (i, (_, value)) in inputs.iter().enumerate() {
                let h = cache
                    .p2wpkh_signature_hash(i, &self.script, *value, EcdsaSighashType::All)
                    .expect("sighash");
                let sig = bitcoin::ecdsa::Signature {
                    signature: self.secp.sign_ecdsa(&Message::from(h), &self.sk),
                    sighash_type: EcdsaSighashType::All,
                };
                witnesses.push(Witness::p2wpkh(&sig, &self.pk.0));
            }
        }
        for (input, w) in tx.input.iter_mut().zip(witnesses) {
            input.witness = w;
        }
        tx
    }

    /// Pays `value` minus `fee` from `input` to `to`.
    pub fn pay(&self, input: (OutPoint, Amount), to: &ScriptBuf, fee: u64) -> Transaction {
        self.spend(
            &[input],
            vec![TxOut {
                value: input.1 - Amount::from_sat(fee),
                script_pubkey: to.clone(),
            }],
        )
    }
}

/// A devnet in a fresh temporary directory, premined so the faucet can spend.
pub fn devnet() -> (tempfile::TempDir, Devnet) {
    let dir = tempfile::tempdir().expect("tempdir");
    let devnet = Devnet::open_with(dir.path(), DevnetOptions { premine: 101 }).expect("open");
    (dir, devnet)
}

/// Sends `amount` from the faucet to `key`, mines it, and returns the confirmed outpoint.
pub fn fund(devnet: &Devnet, key: &Key, amount: Amount) -> (OutPoint, Amount) {
    let txid = devnet.send(&key.address, amount).expect("faucet send");
    devnet.mine(1).expect("mine");
    let (tx, status) = devnet.tx(&txid).expect("tx known");
    assert!(matches!(status, TxStatus::Confirmed(_)));
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == key.script)
        .expect("output to key");
    (OutPoint::new(txid, vout as u32), amount)
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// POSTs `body` to `url` (http://127.0.0.1:PORT) with an optional `Authorization` header;
/// returns the status code and body.
pub fn http_post(url: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status: u16 = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}
