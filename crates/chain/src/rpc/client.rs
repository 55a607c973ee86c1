//! [`RpcSource`]: the production [`ChainSource`], Bitcoin Core's JSON-RPC over HTTP.
//!
//! It is built on `bitcoincore-rpc` 0.19 (blocking, on `jsonrpc`'s minimal HTTP transport).
//! That crate is what `bdk_bitcoind_rpc`'s block emitter is written against, so using it
//! here means one RPC client (and one set of response types) for both: the custody code
//! can hand [`RpcSource::client`] to the emitter and talk to the node through the same
//! connection settings. The blocking style fits [`ChainSource`], whose callers are the
//! chain-watching tasks, not the async request path.

use std::path::PathBuf;

use bitcoin::{Block, BlockHash, Transaction, Txid};
use bitcoincore_rpc::jsonrpc;
use bitcoincore_rpc::{Auth, Client, RpcApi};

use crate::{BlockRef, ChainError, ChainSource, RpcEndpoint, TxStatus};

/// How to authenticate to Bitcoin Core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcAuth {
    /// A cookie file (`__cookie__:<password>`), read once by [`RpcSource::new`] (a node
    /// that restarts writes a new cookie: make a new source then).
    CookieFile(PathBuf),
    /// `rpcuser` and `rpcpassword`.
    UserPass(String, String),
}

/// A [`ChainSource`] on Bitcoin Core's JSON-RPC (see the module documentation).
#[derive(Debug)]
pub struct RpcSource {
    client: Client,
}

fn map_err(e: bitcoincore_rpc::Error) -> ChainError {
    match e {
        bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(r)) => ChainError::Rejected {
            code: r.code,
            message: r.message,
        },
        other => ChainError::Unavailable(other.to_string()),
    }
}

/// Core's "not found" (-5) and "out of range" (-8) errors mean `None`.
fn not_found(e: &bitcoincore_rpc::Error) -> bool {
    matches!(
        e,
        bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(r)) if r.code == -5 || r.code == -8
    )
}

impl RpcSource {
    /// A client for the node at `url` (e.g. `http://127.0.0.1:18443`).
    pub fn new(url: &str, auth: RpcAuth) -> Result<RpcSource, ChainError> {
        let auth = match auth {
            RpcAuth::CookieFile(p) => Auth::CookieFile(p),
            RpcAuth::UserPass(u, p) => Auth::UserPass(u, p),
        };
        let client = Client::new(url, auth).map_err(map_err)?;
        Ok(RpcSource { client })
    }

    /// A client for a devnet's RPC server, from its endpoint (`rpc.json`).
    pub fn for_endpoint(endpoint: &RpcEndpoint) -> Result<RpcSource, ChainError> {
        RpcSource::new(&endpoint.url, RpcAuth::CookieFile(endpoint.cookie.clone()))
    }

    /// The underlying client, e.g. for `bdk_bitcoind_rpc::Emitter`.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls any method with positional parameters (for the devnet's extra methods).
    pub fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: &[serde_json::Value],
    ) -> Result<T, ChainError> {
        self.client.call(method, params).map_err(map_err)
    }
}

impl ChainSource for RpcSource {
    fn tip(&self) -> Result<BlockRef, ChainError> {
        // One call, so height and hash belong together.
        let info = self.client.get_blockchain_info().map_err(map_err)?;
        Ok(BlockRef {
            height: u32::try_from(info.blocks)
                .map_err(|_| ChainError::Unavailable("height out of range".into()))?,
            hash: info.best_block_hash,
        })
    }

    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        match self.client.get_block_hash(u64::from(height)) {
            Ok(h) => Ok(Some(h)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError> {
        match self.client.get_block(hash) {
            Ok(b) => Ok(Some(b)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    fn mempool_txs(&self) -> Result<Vec<Transaction>, ChainError> {
        let ids = self.client.get_raw_mempool().map_err(map_err)?;
        let mut txs = Vec::with_capacity(ids.len());
        for id in ids {
            match self.client.get_raw_transaction(&id, None) {
                Ok(tx) => txs.push(tx),
                // Confirmed or evicted since the listing.
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        // Core lists the mempool in no particular order: put parents first.
        Ok(parents_first(txs))
    }

    fn get_tx(&self, txid: &Txid) -> Result<Option<(Transaction, TxStatus)>, ChainError> {
        let info = match self.client.get_raw_transaction_info(txid, None) {
            Ok(i) => i,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(map_err(e)),
        };
        let tx: Transaction = bitcoin::consensus::deserialize(&info.hex)
            .map_err(|e| ChainError::Unavailable(format!("undecodable transaction: {e}")))?;
        let status = match (info.blockhash, info.confirmations) {
            (Some(hash), Some(c)) if c > 0 => {
                let header = self.client.get_block_header_info(&hash).map_err(map_err)?;
                if header.confirmations <= 0 {
                    TxStatus::Mempool
                } else {
                    TxStatus::Confirmed(BlockRef {
                        height: u32::try_from(header.height)
                            .map_err(|_| ChainError::Unavailable("height out of range".into()))?,
                        hash,
                    })
                }
            }
            _ => TxStatus::Mempool,
        };
        Ok(Some((tx, status)))
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.client.send_raw_transaction(tx).map_err(map_err)
    }
}

/// Orders transactions so that each comes after every listed transaction it spends.
fn parents_first(txs: Vec<Transaction>) -> Vec<Transaction> {
    use std::collections::HashSet;
    let mut pending: Vec<(Txid, Transaction)> =
        txs.into_iter().map(|t| (t.compute_txid(), t)).collect();
    let all: HashSet<Txid> = pending.iter().map(|(id, _)| *id).collect();
    let mut placed: HashSet<Txid> = HashSet::new();
    let mut out = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for (id, tx) in pending {
            let ready = tx.input.iter().all(|i| {
                let p = i.previous_output.txid;
                p == id || !all.contains(&p) || placed.contains(&p)
            });
            if ready {
                placed.insert(id);
                out.push(tx);
            } else {
                rest.push((id, tx));
            }
        }
        if rest.len() == before {
            // A cycle cannot happen in a valid mempool; keep the rest as listed.
            out.extend(rest.into_iter().map(|(_, t)| t));
            break;
        }
        pending = rest;
    }
    out
}
