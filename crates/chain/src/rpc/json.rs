//! Bitcoin Core's JSON shapes for blocks, headers, transactions and scripts, and output
//! descriptors with their checksums.

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::script::Instruction;
use bitcoin::{Address, Amount, Block, Network, Script, Transaction};
use serde_json::{json, Map, Value};

use crate::devnet::chain::Chain;

/// An amount as Core prints it: a JSON number of BTC.
pub(crate) fn btc(a: Amount) -> Value {
    json!(a.to_btc())
}

/// Core's `type` name for an output script.
pub(crate) fn script_type(s: &Script) -> &'static str {
    if s.is_p2pkh() {
        "pubkeyhash"
    } else if s.is_p2sh() {
        "scripthash"
    } else if s.is_p2wpkh() {
        "witness_v0_keyhash"
    } else if s.is_p2wsh() {
        "witness_v0_scripthash"
    } else if s.is_p2tr() {
        "witness_v1_taproot"
    } else if s.is_op_return() {
        "nulldata"
    } else if s.is_p2pk() {
        "pubkey"
    } else if s.is_multisig() {
        "multisig"
    } else if s.is_witness_program() {
        "witness_unknown"
    } else {
        "nonstandard"
    }
}

/// Decodes a minimally encoded script number of at most 4 bytes.
fn script_num(bytes: &[u8]) -> i64 {
    if bytes.is_empty() {
        return 0;
    }
    let mut v: i64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= i64::from(*b) << (8 * i);
    }
    let last = bytes[bytes.len() - 1];
    if last & 0x80 != 0 {
        let mask = !(0x80i64 << (8 * (bytes.len() - 1)));
        -(v & mask)
    } else {
        v
    }
}

/// Core's assembly text for a script (`ScriptToAsmStr` without signature decoding).
pub(crate) fn asm(s: &Script) -> String {
    let mut parts: Vec<String> = Vec::new();
    for ins in s.instructions() {
        match ins {
            Ok(Instruction::PushBytes(b)) => {
                let b = b.as_bytes();
                if b.len() <= 4 {
                    parts.push(script_num(b).to_string());
                } else {
                    parts.push(b.iter().map(|x| format!("{x:02x}")).collect());
                }
            }
            Ok(Instruction::Op(op)) => {
                let code = op.to_u8();
                let text = match code {
                    0x4f => "-1".to_string(),
                    0x51..=0x60 => (code - 0x50).to_string(),
                    0xb1 => "OP_CHECKLOCKTIMEVERIFY".to_string(),
                    0xb2 => "OP_CHECKSEQUENCEVERIFY".to_string(),
                    _ => {
                        let name = op.to_string();
                        if name.starts_with("OP_RETURN_") {
                            "OP_UNKNOWN".to_string()
                        } else {
                            name
                        }
                    }
                };
                parts.push(text);
            }
            Err(_) => {
                parts.push("[error]".to_string());
                break;
            }
        }
    }
    parts.join(" ")
}

/// The descriptor Core infers for an output script we hold no keys for.
pub(crate) fn infer_descriptor(s: &Script) -> String {
    let body = match Address::from_script(s, Network::Regtest) {
        Ok(a) => format!("addr({a})"),
        Err(_) => format!("raw({})", hex(s.as_bytes())),
    };
    add_checksum(&body)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Core's `scriptPubKey` object.
pub(crate) fn script_pubkey(s: &Script) -> Value {
    let mut m = Map::new();
    m.insert("asm".into(), json!(asm(s)));
    m.insert("desc".into(), json!(infer_descriptor(s)));
    m.insert("hex".into(), json!(hex(s.as_bytes())));
    if let Ok(a) = Address::from_script(s, Network::Regtest) {
        m.insert("address".into(), json!(a.to_string()));
    }
    m.insert("type".into(), json!(script_type(s)));
    Value::Object(m)
}

/// Core's `TxToUniv` (without the fee).
pub(crate) fn tx(tx: &Transaction) -> Map<String, Value> {
    let vin: Vec<Value> = tx
        .input
        .iter()
        .map(|i| {
            let mut m = Map::new();
            if tx.is_coinbase() {
                m.insert("coinbase".into(), json!(hex(i.script_sig.as_bytes())));
            } else {
                m.insert("txid".into(), json!(i.previous_output.txid.to_string()));
                m.insert("vout".into(), json!(i.previous_output.vout));
                m.insert(
                    "scriptSig".into(),
                    json!({"asm": asm(&i.script_sig), "hex": hex(i.script_sig.as_bytes())}),
                );
            }
            if !i.witness.is_empty() {
                let items: Vec<String> = i.witness.iter().map(hex).collect();
                m.insert("txinwitness".into(), json!(items));
            }
            m.insert("sequence".into(), json!(i.sequence.0));
            Value::Object(m)
        })
        .collect();
    let vout: Vec<Value> = tx
        .output
        .iter()
        .enumerate()
        .map(|(n, o)| {
            json!({
                "value": btc(o.value),
                "n": n,
                "scriptPubKey": script_pubkey(&o.script_pubkey),
            })
        })
        .collect();
    let mut m = Map::new();
    m.insert("txid".into(), json!(tx.compute_txid().to_string()));
    m.insert("hash".into(), json!(tx.compute_wtxid().to_string()));
    m.insert("version".into(), json!(tx.version.0));
    m.insert("size".into(), json!(tx.total_size()));
    m.insert("vsize".into(), json!(tx.vsize()));
    m.insert("weight".into(), json!(tx.weight().to_wu()));
    m.insert("locktime".into(), json!(tx.lock_time.to_consensus_u32()));
    m.insert("vin".into(), Value::Array(vin));
    m.insert("vout".into(), Value::Array(vout));
    m.insert("hex".into(), json!(serialize_hex(tx)));
    m
}

/// Core's header fields shared by `getblockheader` and `getblock`.
pub(crate) fn header(
    chain: &Chain,
    block: &Block,
    height: u32,
    active: bool,
) -> Map<String, Value> {
    let h = &block.header;
    let confirmations: i64 = if active {
        i64::from(chain.height()) - i64::from(height) + 1
    } else {
        -1
    };
    let mut m = Map::new();
    m.insert("hash".into(), json!(block.block_hash().to_string()));
    m.insert("confirmations".into(), json!(confirmations));
    m.insert("height".into(), json!(height));
    m.insert("version".into(), json!(h.version.to_consensus()));
    m.insert(
        "versionHex".into(),
        json!(format!("{:08x}", h.version.to_consensus())),
    );
    m.insert("merkleroot".into(), json!(h.merkle_root.to_string()));
    m.insert("time".into(), json!(h.time));
    let mtp = if active { chain.mtp_at(height) } else { h.time };
    m.insert("mediantime".into(), json!(mtp));
    m.insert("nonce".into(), json!(h.nonce));
    m.insert(
        "bits".into(),
        json!(format!("{:08x}", h.bits.to_consensus())),
    );
    m.insert("difficulty".into(), json!(h.difficulty_float()));
    // Cumulative work; a stale block's is computed, every regtest block adding the same.
    let work = if active { chain.work_at(height) } else { None }
        .or_else(|| {
            chain.work_at(0).map(|mut total| {
                for _ in 0..height {
                    total = total + h.work();
                }
                total
            })
        })
        .map(|w| hex(&w.to_be_bytes()))
        .unwrap_or_default();
    m.insert("chainwork".into(), json!(work));
    m.insert("nTx".into(), json!(block.txdata.len()));
    if height > 0 {
        m.insert(
            "previousblockhash".into(),
            json!(h.prev_blockhash.to_string()),
        );
    }
    if active {
        if let Some(next) = chain.hash_at(height + 1) {
            m.insert("nextblockhash".into(), json!(next.to_string()));
        }
    }
    m
}

const INPUT_CHARSET: &str = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
const CHECKSUM_CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn poly_mod(c: u64, val: u64) -> u64 {
    let c0 = c >> 35;
    let mut c = ((c & 0x7_ffff_ffff) << 5) ^ val;
    if c0 & 1 != 0 {
        c ^= 0xf5_dee5_1989;
    }
    if c0 & 2 != 0 {
        c ^= 0xa9_fdca_3312;
    }
    if c0 & 4 != 0 {
        c ^= 0x1b_ab10_e32d;
    }
    if c0 & 8 != 0 {
        c ^= 0x37_06b1_677a;
    }
    if c0 & 16 != 0 {
        c ^= 0x64_4d62_6ffd;
    }
    c
}

/// The 8-character descriptor checksum (BIP380), or `None` for characters outside the
/// descriptor alphabet.
pub(crate) fn descriptor_checksum(desc: &str) -> Option<String> {
    let mut c: u64 = 1;
    let mut cls: u64 = 0;
    let mut clscount = 0;
    for ch in desc.chars() {
        let pos = INPUT_CHARSET.find(ch)? as u64;
        c = poly_mod(c, pos & 31);
        cls = cls * 3 + (pos >> 5);
        clscount += 1;
        if clscount == 3 {
            c = poly_mod(c, cls);
            cls = 0;
            clscount = 0;
        }
    }
    if clscount > 0 {
        c = poly_mod(c, cls);
    }
    for _ in 0..8 {
        c = poly_mod(c, 0);
    }
    c ^= 1;
    Some(
        (0..8)
            .map(|j| CHECKSUM_CHARSET[((c >> (5 * (7 - j))) & 31) as usize] as char)
            .collect(),
    )
}

/// `desc#checksum`.
pub(crate) fn add_checksum(desc: &str) -> String {
    match descriptor_checksum(desc) {
        Some(c) => format!("{desc}#{c}"),
        None => desc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_checksum_matches_bip380() {
        assert_eq!(
            descriptor_checksum("raw(deadbeef)").as_deref(),
            Some("89f8spxm")
        );
    }

    #[test]
    fn asm_like_core() {
        let s = Script::from_bytes(&[
            0x00, 0x14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ]);
        assert_eq!(asm(s), "0 0102030405060708090a0b0c0d0e0f1011121314");
        let s = Script::from_bytes(&[0x51, 0x02, 0xff, 0x00, 0x01, 0x81, 0xb1]);
        assert_eq!(asm(s), "1 255 -1 OP_CHECKLOCKTIMEVERIFY");
    }
}
