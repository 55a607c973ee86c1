//! kura's chain sources: where the custody logic learns about blocks and transactions, and
//! where it sends the transactions it signs.
//!
//! * [`ChainSource`] is the small, blocking interface the (pure) custody logic is driven
//!   through: the tip, blocks by height and hash, the mempool, one transaction with its
//!   confirmation status, and broadcasting.
//! * [`RpcSource`] implements it over Bitcoin Core's JSON-RPC (a wallet-disabled node, read
//!   block by block). It is the production source.
//! * [`Devnet`] is a built-in regtest chain for demos, tests and incident drills. It
//!   implements [`ChainSource`] in process, and [`DevnetRpcServer`] serves the subset of
//!   Bitcoin Core's JSON-RPC that [`RpcSource`] and `bdk_bitcoind_rpc` use, on loopback, so
//!   tests drive the very client code path production uses against a real `bitcoind`.
//!
//! # Starting a devnet in process
//!
//! ```no_run
//! use kura_chain::{ChainSource, Devnet, DevnetOptions, DevnetRpcServer, RpcSource};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The chain lives in DIR/devnet (block file, faucet key); 101 blocks make the faucet's
//! // first coinbase spendable.
//! let devnet = Devnet::open_with("data/devnet".as_ref(), DevnetOptions { premine: 101 })?;
//! // Serve Core's JSON-RPC on 127.0.0.1 (0: any free port); writes data/devnet/.cookie
//! // and data/devnet/rpc.json, removed again when the server stops.
//! let server = DevnetRpcServer::start(devnet.clone(), 0)?;
//! // Optional: a block every 10 seconds until `miner` is dropped.
//! let miner = devnet.start_miner(std::time::Duration::from_secs(10));
//! // The custody side talks to it exactly as to bitcoind.
//! let source = RpcSource::for_endpoint(server.endpoint())?;
//! println!("tip {:?}", source.tip()?);
//! # drop(miner);
//! # Ok(())
//! # }
//! ```
//!
//! # What the devnet validates
//!
//! Every block the devnet connects (mined by itself, submitted, or replayed from its block
//! file at start) is checked for: proof of work against the fixed regtest target
//! (`bits` = `0x207fffff`), the merkle root (and duplicate transactions), the segwit
//! witness commitment (and no witness data without one), the BIP34 height in the coinbase,
//! coinbase script size, subsidy (50 BTC halving every 150 blocks) plus fees, timestamps
//! (greater than the median time past, at most two hours ahead of the clock), block version
//! (at least 4), block weight (at most 4,000,000), transaction finality by height and median
//! time past (BIP113), BIP68 relative lock times, coinbase maturity (100 blocks), money
//! ranges, inputs that exist and are unspent, and every input script with Bitcoin Core's
//! consensus code (`bitcoinconsensus` through [`bitcoin::Transaction::verify`]: P2SH, strict
//! DER, NULLDUMMY, CLTV, CSV and segwit v0).
//!
//! Not validated: signature-operation limits (blocks are capped by weight only), and
//! taproot (the consensus library predates it, so outputs with witness version 1 or higher
//! can be created but the devnet's mempool refuses to spend them rather than accept them
//! unchecked). The mempool applies only a few relay policies: a minimum relay feerate of
//! 1 sat/vB, a standard weight cap of 400,000, full replace-by-fee (BIP125 rules 3, 4, 5 and
//! 6, without the signalling rule), and no other standardness rules (dust, script
//! templates, version).

#![forbid(unsafe_code)]

pub mod devnet;
pub mod rpc;

/// The `bitcoin` crate this crate's types come from, for callers without their own
/// dependency on it.
pub use bitcoin;
pub use devnet::{Devnet, DevnetError, DevnetOptions, MinerHandle, ReorgReport, TxReject};
pub use rpc::client::{RpcAuth, RpcSource};
pub use rpc::server::{DevnetRpcServer, RpcEndpoint};

use bitcoin::{Block, BlockHash, Transaction, Txid};

/// A block on the active chain, by height and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Height on the active chain (genesis is 0).
    pub height: u32,
    /// The block's hash.
    pub hash: BlockHash,
}

/// Where a transaction is, as far as the chain source knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// In the mempool, not yet in a block of the active chain.
    Mempool,
    /// In a block of the active chain.
    Confirmed(BlockRef),
}

/// An error from a chain source.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The source refused the request, with Bitcoin Core's error code and message (for a
    /// rejected transaction: -25 missing or spent inputs, -26 rejected by the mempool, -27
    /// already in the chain).
    #[error("rejected ({code}): {message}")]
    Rejected {
        /// Bitcoin Core's JSON-RPC error code.
        code: i32,
        /// Bitcoin Core's message (for a transaction, the reject reason).
        message: String,
    },
    /// The source could not be reached or answered something that could not be understood.
    #[error("chain source unavailable: {0}")]
    Unavailable(String),
}

/// The chain as the custody logic sees it. Every call is blocking and independent; the tip
/// may move between two calls, so callers that walk the chain re-check
/// [`ChainSource::block_hash`] against what they saw (a reorg shows up as a different hash at
/// a height they already know).
pub trait ChainSource {
    /// The active chain's tip.
    fn tip(&self) -> Result<BlockRef, ChainError>;
    /// The hash of the active chain's block at `height`, or `None` above the tip.
    fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError>;
    /// The block with this hash (active chain or not), or `None` if the source does not
    /// know it.
    fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError>;
    /// Every transaction in the mempool, parents before children.
    fn mempool_txs(&self) -> Result<Vec<Transaction>, ChainError>;
    /// A transaction in the mempool or the active chain, with where it is.
    fn get_tx(&self, txid: &Txid) -> Result<Option<(Transaction, TxStatus)>, ChainError>;
    /// Submits a transaction to the mempool (and so to the network). Broadcasting a
    /// transaction already in the mempool succeeds and returns its txid.
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError>;
}
