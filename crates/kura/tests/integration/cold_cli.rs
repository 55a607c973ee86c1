//! `kura cold sign | finalize`, the real binary on files: a 2-of-3 cold wallet on the
//! devnet refills the hot wallet with two separate signatures; a PSBT paying anything
//! that is not ours is refused with nothing written; bad files are clear errors.

use kura_chain::bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv, Xpub};
use kura_chain::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use kura_chain::bitcoin::hashes::Hash;
use kura_chain::bitcoin::psbt::Psbt;
use kura_chain::bitcoin::secp256k1::Secp256k1;
use kura_chain::bitcoin::{Amount, Network, OutPoint, ScriptBuf, Transaction, Txid};
use kura_chain::{Devnet, DevnetOptions, DevnetRpcServer, TxStatus};
use kura_custody::psbt::{build_psbt, describe_output, ChangeTarget, Payment, SpendableCoin};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;

const NET: Network = Network::Regtest;
/// The cold wallet's three holders.
const COLD: [u8; 3] = [31, 32, 33];
const HOT: u8 = 34;
const DEPOSIT: u8 = 35;
const STRANGER: u8 = 99;

fn master(seed: u8) -> Xpriv {
    Xpriv::new_master(NET, &[seed; 32]).expect("master key")
}

/// `[fingerprint/path]tpub…` of seed `seed` at `path`.
fn account(seed: u8, path: &str) -> String {
    let secp = Secp256k1::new();
    let m = master(seed);
    let path = DerivationPath::from_str(path).expect("path");
    let xpub = Xpub::from_priv(&secp, &m.derive_priv(&secp, &path).expect("derive"));
    let origin = path.to_string();
    let origin = origin.trim_start_matches("m/");
    format!("[{}/{origin}]{xpub}", m.fingerprint(&secp))
}

fn hot() -> String {
    format!("wpkh({}/0/*)", account(HOT, "m/84'/1'/1'"))
}

fn deposit() -> String {
    format!("wpkh({}/0/*)", account(DEPOSIT, "m/84'/1'/0'"))
}

/// 2-of-3 on BIP-48 P2WSH paths.
fn cold() -> String {
    let keys: Vec<String> = COLD
        .iter()
        .map(|s| format!("{}/0/*", account(*s, "m/48'/1'/0'/2'")))
        .collect();
    format!("wsh(sortedmulti(2,{}))", keys.join(","))
}

fn foreign() -> String {
    format!("wpkh({}/0/*)", account(STRANGER, "m/84'/1'/0'"))
}

fn script(descriptor: &str, index: u32) -> ScriptBuf {
    kura_custody::derive(descriptor, index, NET)
        .expect("derive")
        .0
}

fn address(descriptor: &str, index: u32) -> String {
    kura_custody::derive(descriptor, index, NET)
        .expect("derive")
        .1
        .to_string()
}

/// A coin that exists only in a PSBT (signing never looks at a chain).
fn fake_coin(n: u8, value_sat: u64, descriptor: &str, index: u32) -> SpendableCoin {
    SpendableCoin {
        outpoint: OutPoint::new(Txid::from_byte_array([n; 32]), 0),
        value_sat,
        descriptor: descriptor.to_owned(),
        index,
    }
}

/// Pay `value_sat` to `descriptor` at `index` from the faucet and confirm it.
fn fund(devnet: &Devnet, descriptor: &str, index: u32, value_sat: u64) -> SpendableCoin {
    let (spk, to) = kura_custody::derive(descriptor, index, NET).expect("derive");
    let txid = devnet
        .send(&to, Amount::from_sat(value_sat))
        .expect("faucet");
    devnet.mine(1).expect("mine");
    let (tx, _) = devnet.tx(&txid).expect("funding tx");
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == spk)
        .expect("funded output");
    SpendableCoin {
        outpoint: OutPoint::new(txid, vout as u32),
        value_sat,
        descriptor: descriptor.to_owned(),
        index,
    }
}

/// Refill the hot wallet (index 40) with 150,000 sat from `coins`, change back to cold
/// index 90, plus `extra`.
fn refill(coins: &[SpendableCoin], extra: Option<Payment>) -> Psbt {
    let mut payments = vec![Payment {
        script_pubkey: script(&hot(), 40),
        amount_sat: 150_000,
    }];
    payments.extend(extra);
    let change = ChangeTarget {
        descriptor: cold(),
        index: 90,
    };
    let mut built = build_psbt(coins, &payments, &change, 2, NET).expect("build");
    let target = ChangeTarget {
        descriptor: hot(),
        index: 40,
    };
    describe_output(&mut built.psbt, 0, &target, NET).expect("describe");
    built.psbt
}

/// The files a signer has: the PSBT, each holder's key, our descriptors (as a list and
/// as the JSON `kura custody status --json` prints).
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(dir: &Path, psbt: &Psbt) -> Files {
        let f = Files {
            dir: dir.to_path_buf(),
        };
        std::fs::write(f.psbt(), format!("{psbt}\n")).expect("write psbt");
        for (i, seed) in COLD.iter().enumerate() {
            std::fs::write(f.key(i), format!("{}\n", master(*seed))).expect("write key");
        }
        std::fs::write(
            f.list(),
            format!("# our wallets\n{}\n\n{}\n{}\n", hot(), deposit(), cold()),
        )
        .expect("write list");
        let status = serde_json::json!({
            "asset": "BTC",
            "wallets": [
                {"id": 0, "role": "hot", "descriptor": hot()},
                {"id": 1, "role": "deposit", "descriptor": deposit()},
                {"id": 2, "role": "cold", "descriptor": cold()},
            ],
            "descriptors": [hot(), deposit(), cold()],
        });
        std::fs::write(f.json(), status.to_string()).expect("write json");
        f
    }
    fn psbt(&self) -> PathBuf {
        self.dir.join("refill.psbt")
    }
    fn key(&self, holder: usize) -> PathBuf {
        self.dir.join(format!("holder-{holder}.key"))
    }
    fn list(&self) -> PathBuf {
        self.dir.join("ours.txt")
    }
    fn json(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    fn signed(&self, n: u32) -> PathBuf {
        self.dir.join(format!("refill.signed-{n}.psbt"))
    }
    /// Every file in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn kura(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kura"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KURA_DATA")
        .env_remove("KURA_RPC_PASSWORD")
        .output()
        .expect("run kura")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = kura(args);
    assert!(
        out.status.success(),
        "kura {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must fail with a clear error (never a panic); its stderr.
fn fails(args: &[&str]) -> String {
    let out = kura(args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kura {args:?} should fail cleanly:\nstdout:\n{}\nstderr:\n{stderr}",
        text(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    stderr
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn sign_args<'a>(psbt: &'a Path, key: &'a Path, ours: &'a Path) -> Vec<&'a str> {
    vec![
        "cold",
        "sign",
        "--psbt",
        p(psbt),
        "--key",
        p(key),
        "--descriptors",
        p(ours),
        "--network",
        "regtest",
    ]
}

fn read_signed(path: &Path) -> Psbt {
    let text = std::fs::read_to_string(path).expect("signed copy");
    Psbt::from_str(text.trim()).expect("a PSBT")
}

fn confirmed(devnet: &Devnet, txid: &Txid) -> bool {
    matches!(devnet.tx(txid), Some((_, TxStatus::Confirmed(_))))
}

/// The devnet in `dir/devnet`, with the two cold coins of a refill.
fn funded_devnet(dir: &Path) -> (Devnet, Vec<SpendableCoin>) {
    let devnet =
        Devnet::open_with(&dir.join("devnet"), DevnetOptions { premine: 110 }).expect("devnet");
    let coins = vec![
        fund(&devnet, &cold(), 0, 120_000),
        fund(&devnet, &cold(), 1, 100_000),
    ];
    (devnet, coins)
}

#[test]
fn two_holders_sign_separate_copies_and_the_refill_confirms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (devnet, coins) = funded_devnet(dir.path());
    let psbt = refill(&coins, None);
    let f = Files::new(dir.path(), &psbt);

    // The first holder: the summary comes before the signing.
    let first = ok(&sign_args(&f.psbt(), &f.key(0), &f.list()));
    let txid = psbt.unsigned_tx.compute_txid().to_string();
    let hot_line = format!(
        "#0 {}  0.00150000 BTC  pays wallet #0 index 40",
        address(&hot(), 40)
    );
    for expected in [
        format!("transaction {txid}"),
        format!(
            "{}  0.00120000 BTC  from wallet #2 index 0",
            coins[0].outpoint
        ),
        format!(
            "{}  0.00100000 BTC  from wallet #2 index 1",
            coins[1].outpoint
        ),
        hot_line.clone(),
        format!("#1 {}", address(&cold(), 90)),
        "pays wallet #2 index 90".into(),
        "added 2 signatures".into(),
        format!("wrote {}", p(&f.signed(1))),
    ] {
        assert!(first.contains(&expected), "{expected:?} not in\n{first}");
    }
    assert!(!first.contains("NOT OURS"), "{first}");
    let fee_line = first
        .lines()
        .find(|l| l.starts_with("fee: "))
        .expect("a fee line");
    let out_total: u64 = psbt
        .unsigned_tx
        .output
        .iter()
        .map(|o| o.value.to_sat())
        .sum();
    assert!(
        fee_line.contains(&format!("({} sat)", 220_000 - out_total)),
        "{fee_line}"
    );
    let fee_at = first.find("fee: ").expect("fee");
    let added_at = first.find("added 2 signatures").expect("added");
    assert!(
        fee_at < added_at,
        "the summary comes before signing:\n{first}"
    );
    let one = read_signed(&f.signed(1));
    assert_eq!(one.unsigned_tx, psbt.unsigned_tx);
    assert!(one.inputs.iter().all(|i| i.partial_sigs.len() == 1));
    // The input file is left as it was.
    assert_eq!(
        std::fs::read_to_string(f.psbt()).expect("psbt").trim(),
        psbt.to_string()
    );

    // One copy alone does not finalize.
    let stderr = fails(&["cold", "finalize", "--psbt", p(&f.signed(1))]);
    assert!(stderr.contains("cannot finalize"), "{stderr}");

    // The third holder signs the original, with the list as status JSON (roles shown);
    // the first free name is taken.
    let third = ok(&sign_args(&f.psbt(), &f.key(2), &f.json()));
    assert!(third.contains("pays hot #0 index 40"), "{third}");
    assert!(third.contains("from cold #2 index 0"), "{third}");
    assert!(
        third.contains(&format!("wrote {}", p(&f.signed(2)))),
        "{third}"
    );
    let two = read_signed(&f.signed(2));
    assert!(two.inputs.iter().all(|i| i.partial_sigs.len() == 1));
    assert_ne!(
        one.inputs[0].partial_sigs.keys().collect::<Vec<_>>(),
        two.inputs[0].partial_sigs.keys().collect::<Vec<_>>()
    );

    // Combined, the copies finalize to a transaction the devnet accepts and mines.
    let finalized = ok(&[
        "cold",
        "finalize",
        "--psbt",
        p(&f.signed(1)),
        "--psbt",
        p(&f.signed(2)),
    ]);
    let mut lines = finalized.lines();
    assert_eq!(
        lines.next(),
        Some(format!("txid {txid}").as_str()),
        "{finalized}"
    );
    let hex = finalized.lines().last().expect("hex line");
    let tx: Transaction = deserialize_hex(hex).expect("raw transaction");
    assert_eq!(tx.compute_txid().to_string(), txid);
    assert!(
        finalized.contains(&format!("({} sat,", 220_000 - out_total)),
        "{finalized}"
    );
    let accepted = devnet.submit_tx(&tx).expect("the devnet accepts it");
    assert_eq!(accepted.to_string(), txid);
    devnet.mine(1).expect("mine");
    assert!(confirmed(&devnet, &accepted));
    let received = devnet.utxos_for(&script(&hot(), 40));
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].1.value.to_sat(), 150_000);

    // --out names the copy, and an existing file is never overwritten.
    let out = dir.path().join("mine.psbt");
    let (psbt_file, key, list) = (f.psbt(), f.key(1), f.list());
    let mut args = sign_args(&psbt_file, &key, &list);
    args.extend(["--out", p(&out)]);
    let second = ok(&args);
    assert!(second.contains(&format!("wrote {}", p(&out))), "{second}");
    let written = std::fs::read(&out).expect("out");
    let stderr = fails(&args);
    assert!(stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read(&out).expect("out"), written);
}

#[test]
fn finalize_broadcasts_to_the_devnet_of_a_data_directory() {
    let data = tempfile::tempdir().expect("tempdir");
    let (devnet, coins) = funded_devnet(data.path());
    let server = DevnetRpcServer::start(devnet.clone(), 0).expect("rpc server");
    let files = tempfile::tempdir().expect("tempdir");
    let psbt = refill(&coins, None);
    let f = Files::new(files.path(), &psbt);
    ok(&sign_args(&f.psbt(), &f.key(1), &f.list()));
    ok(&sign_args(&f.psbt(), &f.key(2), &f.list()));
    let hex_file = files.path().join("refill.tx");
    let printed = ok(&[
        "cold",
        "finalize",
        "--psbt",
        p(&f.signed(1)),
        "--psbt",
        p(&f.signed(2)),
        "--out",
        p(&hex_file),
        "--broadcast",
        "--data",
        p(data.path()),
    ]);
    let txid = psbt.unsigned_tx.compute_txid();
    assert!(
        printed.contains(&format!("broadcast: the chain accepted {txid}")),
        "{printed}"
    );
    assert!(devnet.mempool_txids().contains(&txid));
    let (tx, _) = devnet.tx(&txid).expect("in the mempool");
    assert_eq!(
        std::fs::read_to_string(&hex_file).expect("hex file").trim(),
        serialize_hex(&tx)
    );
    devnet.mine(1).expect("mine");
    assert!(confirmed(&devnet, &txid));
    server.stop();

    // Without a running devnet there is nothing to broadcast to.
    let empty = tempfile::tempdir().expect("tempdir");
    let stderr = fails(&[
        "cold",
        "finalize",
        "--psbt",
        p(&f.signed(1)),
        "--psbt",
        p(&f.signed(2)),
        "--broadcast",
        "--data",
        p(empty.path()),
    ]);
    assert!(stderr.contains("no running devnet"), "{stderr}");
}

#[test]
fn refuses_a_psbt_paying_a_foreign_address_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coins = vec![fake_coin(1, 500_000, &cold(), 0)];
    let stranger = Payment {
        script_pubkey: script(&foreign(), 3),
        amount_sat: 20_000,
    };
    let psbt = refill(&coins, Some(stranger));
    let f = Files::new(dir.path(), &psbt);
    let before = f.listing();
    let out = dir.path().join("never.psbt");
    let (psbt_file, key, list) = (f.psbt(), f.key(0), f.list());
    let mut args = sign_args(&psbt_file, &key, &list);
    args.extend(["--out", p(&out)]);
    let result = kura(&args);
    assert_eq!(result.status.code(), Some(1));
    let stdout = text(&result.stdout);
    let stderr = text(&result.stderr);
    // The summary shows the stranger's output before the refusal.
    let stranger_line = format!("#1 {}  0.00020000 BTC  NOT OURS", address(&foreign(), 3));
    assert!(stdout.contains(&stranger_line), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "refused: output #1 pays 0.00020000 BTC to {}, which is not one of our wallets",
            address(&foreign(), 3)
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stdout.contains("added"), "{stdout}");
    assert_eq!(f.listing(), before, "nothing was written");
    assert!(!out.exists());

    // A PSBT spending a coin that is not ours is refused too.
    let theirs = vec![fake_coin(2, 500_000, &foreign(), 0)];
    std::fs::write(f.psbt(), refill(&theirs, None).to_string()).expect("write");
    let stderr = fails(&sign_args(&f.psbt(), &f.key(0), &f.list()));
    assert!(stderr.contains("refused: input"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(f.listing(), before);

    // A key that is not one of the cold keys adds nothing, and nothing is written.
    std::fs::write(f.psbt(), refill(&coins, None).to_string()).expect("write");
    std::fs::write(f.key(0), master(STRANGER).to_string()).expect("write key");
    let stderr = fails(&sign_args(&f.psbt(), &f.key(0), &f.list()));
    assert!(stderr.contains("none of the keys"), "{stderr}");
    assert_eq!(f.listing(), before);
}

#[test]
fn bad_files_are_clear_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coins = vec![fake_coin(1, 500_000, &cold(), 0)];
    let psbt = refill(&coins, None);
    let f = Files::new(dir.path(), &psbt);
    let d = dir.path();
    let write = |name: &str, body: &[u8]| {
        let path = d.join(name);
        std::fs::write(&path, body).expect("write");
        path
    };
    let check = |args: &[&str], path: &Path, what: &str| {
        let stderr = fails(args);
        assert!(stderr.contains(p(path)), "{path:?} not named in {stderr}");
        assert!(stderr.contains(what), "{what:?} not in {stderr}");
    };
    let before = f.listing();

    // PSBTs.
    let garbage = write("garbage.psbt", b"hello, this is not a psbt\n");
    check(
        &sign_args(&garbage, &f.key(0), &f.list()),
        &garbage,
        "not a valid base64 PSBT",
    );
    let empty = write("empty.psbt", b"");
    check(&sign_args(&empty, &f.key(0), &f.list()), &empty, "is empty");
    let binary = write("binary.psbt", b"psbt\xff\x00\x01\x02garbage");
    check(
        &sign_args(&binary, &f.key(0), &f.list()),
        &binary,
        "not a valid PSBT",
    );
    let missing = d.join("missing.psbt");
    check(
        &sign_args(&missing, &f.key(0), &f.list()),
        &missing,
        "cannot read the PSBT",
    );

    // Keys: the key's text never appears in an error.
    let bad_key = write("words.key", b"correct horse battery staple\n");
    check(
        &sign_args(&f.psbt(), &bad_key, &f.list()),
        &bad_key,
        "exactly one extended private key",
    );
    let mut damaged = master(COLD[0]).to_string();
    let last = damaged.pop().expect("char");
    damaged.push(if last == 'A' { 'B' } else { 'A' });
    let damaged_key = write("damaged.key", damaged.as_bytes());
    let stderr = fails(&sign_args(&f.psbt(), &damaged_key, &f.list()));
    assert!(stderr.contains(p(&damaged_key)), "{stderr}");
    assert!(
        stderr.contains("does not hold an extended private key"),
        "{stderr}"
    );
    assert!(!stderr.contains(&damaged), "the key text leaked: {stderr}");
    let public = Xpub::from_priv(&Secp256k1::new(), &master(COLD[0])).to_string();
    let public_key = write("public.key", public.as_bytes());
    check(
        &sign_args(&f.psbt(), &public_key, &f.list()),
        &public_key,
        "holds a public key",
    );
    let mainnet = Xpriv::new_master(Network::Bitcoin, &[COLD[0]; 32]).expect("master");
    let mainnet_key = write("mainnet.key", mainnet.to_string().as_bytes());
    check(
        &sign_args(&f.psbt(), &mainnet_key, &f.list()),
        &mainnet_key,
        "mainnet key",
    );
    let child = master(COLD[0])
        .derive_priv(
            &Secp256k1::new(),
            &[ChildNumber::from_hardened_idx(48).expect("index")],
        )
        .expect("child");
    let child_key = write("child.key", child.to_string().as_bytes());
    check(
        &sign_args(&f.psbt(), &child_key, &f.list()),
        &child_key,
        "depth 1",
    );
    let missing_key = d.join("missing.key");
    check(
        &sign_args(&f.psbt(), &missing_key, &f.list()),
        &missing_key,
        "cannot read the key file",
    );

    // Descriptor lists.
    let bad_list = write("bad.txt", format!("{}\nwpkh(nonsense)\n", hot()).as_bytes());
    check(
        &sign_args(&f.psbt(), &f.key(0), &bad_list),
        &bad_list,
        "nonsense",
    );
    let empty_list = write("empty.txt", b"# nothing here\n\n");
    check(
        &sign_args(&f.psbt(), &f.key(0), &empty_list),
        &empty_list,
        "names no descriptor",
    );
    let bad_json = write("bad.json", br#"{"descriptors": 3}"#);
    check(
        &sign_args(&f.psbt(), &f.key(0), &bad_json),
        &bad_json,
        "without a \"descriptors\" array",
    );
    let broken_json = write("broken.json", br#"{"descriptors": ["#);
    check(
        &sign_args(&f.psbt(), &f.key(0), &broken_json),
        &broken_json,
        "not valid JSON",
    );
    let mainnet_list = write(
        "mainnet.txt",
        {
            let secp = Secp256k1::new();
            let xpub = Xpub::from_priv(&secp, &mainnet);
            format!("wpkh({xpub}/0/*)\n")
        }
        .as_bytes(),
    );
    check(
        &sign_args(&f.psbt(), &f.key(0), &mainnet_list),
        &mainnet_list,
        "not for regtest",
    );

    // Finalize: garbage, and copies of different transactions.
    check(
        &["cold", "finalize", "--psbt", p(&garbage)],
        &garbage,
        "not a valid base64 PSBT",
    );
    let other = write(
        "other.psbt",
        refill(&[fake_coin(9, 400_000, &cold(), 1)], None)
            .to_string()
            .as_bytes(),
    );
    check(
        &[
            "cold",
            "finalize",
            "--psbt",
            p(&f.psbt()),
            "--psbt",
            p(&other),
        ],
        &other,
        "different transaction",
    );

    // None of it wrote anything but the test's own files.
    let written: Vec<String> = f
        .listing()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(
        written,
        [
            "bad.json",
            "bad.txt",
            "binary.psbt",
            "broken.json",
            "child.key",
            "damaged.key",
            "empty.psbt",
            "empty.txt",
            "garbage.psbt",
            "mainnet.key",
            "mainnet.txt",
            "other.psbt",
            "public.key",
            "words.key",
        ]
    );
}
