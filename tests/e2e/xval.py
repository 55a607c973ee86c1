"""Independent validation of what kura derives, builds and signs.

Reads the JSON that crates/signer/tests/xval.rs writes and checks it with two Python
libraries that share no code with kura:

- embit (pure Python; its bundled libsecp256k1 bindings are turned off below, so the
  elliptic-curve arithmetic is embit's own): each descriptor's checksum, the first
  addresses and scripts derived from it for regtest, and the unsigned withdrawal PSBT
  (transaction, inputs, outputs, amounts, fee, witness scripts and BIP-32 key origins).
- python-bitcointx, with the libsecp256k1 that the coincurve wheel ships: every input
  of each signed transaction runs through VerifyScript with the witness flag set,
  against the output it spends (script and amount), and a changed amount must be
  rejected.

Usage: python tests/e2e/xval.py FILE.json

Prints one `ok NAME` or `FAIL NAME: why` line per check, then `xval: N passed, M
failed`; exits 1 when any check failed and 2 when a library cannot be used.
"""

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import sys

PASSED = 0
FAILED = 0


def check(name, ok, why=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"ok {name}" + (f" ({why})" if why else ""))
    else:
        FAILED += 1
        print(f"FAIL {name}: {why}")
    sys.stdout.flush()
    return ok


def unusable(what, error):
    print(f"FAIL {what}: {error}")
    print(
        "xval: the pinned Python environment is incomplete; run scripts/e2e-venv "
        "(embit, python-bitcointx and coincurve from PyPI)"
    )
    sys.exit(2)


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- embit, with its own pure-Python secp256k1 ---------------------------------

# embit prefers ctypes bindings to a libsecp256k1 it bundles and falls back to its
# pure-Python implementation when they cannot be imported; blocking the bindings makes
# the derivations independent of the C library kura itself uses.
sys.modules["embit.util.ctypes_secp256k1"] = None
try:
    from embit.descriptor import Descriptor
    from embit.descriptor.checksum import checksum as descriptor_checksum
    from embit.networks import NETWORKS
    from embit.psbt import PSBT
except Exception as e:  # any failure to import is a failed run, never a skip
    unusable("import embit", repr(e))
if "embit.util.py_secp256k1" not in sys.modules:
    unusable("embit pure-Python secp256k1", "embit.util.py_secp256k1 was not loaded")


# --- python-bitcointx, with coincurve's libsecp256k1 ---------------------------


def coincurve_libsecp256k1():
    """The path of the libsecp256k1 build inside the coincurve wheel (a CPython
    extension module that also exports the library's C functions), found without
    importing coincurve."""
    spec = importlib.util.find_spec("coincurve")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("coincurve is not installed")
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_libsecp256k1" + suffix)
            if os.path.isfile(path):
                return path
    raise RuntimeError(
        f"no _libsecp256k1 extension in {list(spec.submodule_search_locations)}"
    )


try:
    import bitcointx

    SECP256K1_PATH = coincurve_libsecp256k1()
    bitcointx.set_custom_secp256k1_path(SECP256K1_PATH)
    bitcointx.select_chain_params("bitcoin/regtest")
    from bitcointx.core import CTransaction, b2lx
    from bitcointx.core.script import CScript
    from bitcointx.core.scripteval import (
        SCRIPT_VERIFY_FLAGS_BY_NAME,
        SCRIPT_VERIFY_P2SH,
        SCRIPT_VERIFY_WITNESS,
        STANDARD_SCRIPT_VERIFY_FLAGS,
        UNHANDLED_SCRIPT_VERIFY_FLAGS,
        VerifyScript,
        VerifyScriptError,
    )
    from bitcointx.core.secp256k1 import get_secp256k1
    from bitcointx.wallet import CCoinAddress

    # Loads the library and defines the functions bitcointx calls; a library without
    # them fails here, not in the middle of a check.
    SECP256K1 = get_secp256k1()
except Exception as e:
    unusable("python-bitcointx with coincurve's libsecp256k1", repr(e))

FLAGS = set(STANDARD_SCRIPT_VERIFY_FLAGS - UNHANDLED_SCRIPT_VERIFY_FLAGS)
if SCRIPT_VERIFY_WITNESS not in FLAGS or SCRIPT_VERIFY_P2SH not in FLAGS:
    unusable("script flags", "bitcointx cannot check witnesses (P2SH, WITNESS unset)")
FLAG_NAMES = ",".join(
    sorted(n for n, f in SCRIPT_VERIFY_FLAGS_BY_NAME.items() if f in FLAGS)
)

REGTEST = NETWORKS["regtest"]


# --- embit: descriptors and addresses ------------------------------------------


def check_descriptor(entry):
    name, text = entry["name"], entry["descriptor"]
    body, _, given = text.partition("#")
    check(
        f"embit checksum of {name}",
        given != "" and descriptor_checksum(body) == given,
        f"kura #{given}, embit #{descriptor_checksum(body)}",
    )
    try:
        desc = Descriptor.from_string(text)
    except Exception as e:
        check(f"embit parses {name}", False, repr(e))
        return None
    if name == "cold":
        shape = (
            desc.wsh
            and not desc.sh
            and desc.is_basic_multisig
            and desc.is_sorted
            and len(desc.keys) == 3
            and desc.miniscript.args[0].num == 2
        )
        check(f"embit parses {name}", shape, "wsh(sortedmulti(2, 3 keys))")
    else:
        shape = desc.wpkh and not desc.sh and not desc.wsh and len(desc.keys) == 1
        check(f"embit parses {name}", shape, "wpkh(1 key)")
    wrong = []
    for a in entry["addresses"]:
        d = desc.derive(a["index"])
        address, script = d.address(REGTEST), d.script_pubkey().data.hex()
        if (address, script) != (a["address"], a["script_pubkey"]):
            wrong.append(
                f"index {a['index']}: kura {a['address']} {a['script_pubkey']}, "
                f"embit {address} {script}"
            )
    n = len(entry["addresses"])
    check(
        f"embit derives {n} {name} addresses",
        n > 0 and not wrong,
        "; ".join(wrong) if wrong else f"index 0 is {entry['addresses'][0]['address']}",
    )
    return desc


def origins(scope):
    """The BIP-32 key origins of a PSBT input or output, as comparable tuples."""
    return sorted(
        (pub.sec().hex(), der.fingerprint.hex(), tuple(der.derivation))
        for pub, der in scope.bip32_derivations.items()
    )


def expected_origins(derived):
    return sorted(
        (
            k.get_public_key().sec().hex(),
            k.origin.fingerprint.hex(),
            tuple(k.origin.derivation),
        )
        for k in derived.keys
    )


def owners(scope, wallets):
    return sorted(name for name, desc in wallets.items() if desc.owns(scope))


def check_psbt(doc, wallets):
    want = doc["psbt"]
    try:
        psbt = PSBT.from_string(want["base64"])
    except Exception as e:
        check("embit parses the psbt", False, repr(e))
        return
    tx = psbt.tx
    check(
        "embit parses the psbt",
        tx.txid().hex() == want["txid"]
        and tx.version == 2
        and tx.locktime == 0
        and all(i.sequence == 0xFFFFFFFD for i in tx.vin),
        f"txid {tx.txid().hex()}, version {tx.version}, lock time {tx.locktime}, "
        f"sequences {[hex(i.sequence) for i in tx.vin]}",
    )
    check(
        "embit psbt shape",
        (len(psbt.inputs), len(psbt.outputs))
        == (len(want["inputs"]), len(want["outputs"])),
        f"{len(psbt.inputs)} inputs, {len(psbt.outputs)} outputs; kura says "
        f"{len(want['inputs'])} and {len(want['outputs'])}",
    )
    for i, (scope, w) in enumerate(zip(psbt.inputs, want["inputs"])):
        name = f"embit psbt input {i} ({w['wallet']} index {w['index']})"
        derived = wallets[w["wallet"]].derive(w["index"])
        problems = []
        if (scope.vin.txid.hex(), scope.vin.vout) != (w["txid"], w["vout"]):
            problems.append(f"spends {scope.vin.txid.hex()}:{scope.vin.vout}")
        utxo = scope.witness_utxo
        if utxo is None:
            problems.append("no witness_utxo")
        else:
            if utxo.value != w["value_sat"]:
                problems.append(f"amount {utxo.value}, expected {w['value_sat']}")
            spk = utxo.script_pubkey.data.hex()
            if spk != w["script_pubkey"] or spk != derived.script_pubkey().data.hex():
                problems.append(f"script {spk}")
        ws = derived.witness_script()
        got_ws = scope.witness_script.data.hex() if scope.witness_script else None
        if got_ws != (ws.data.hex() if ws else None):
            problems.append(f"witness script {got_ws}")
        got, exp = origins(scope), expected_origins(derived)
        if got != exp:
            problems.append(f"key origins {got}, embit derives {exp}")
        own = owners(scope, wallets)
        if own != [w["wallet"]]:
            problems.append(f"owned by {own}")
        check(name, not problems, "; ".join(problems) or f"{len(got)} key origins")
    for o, (scope, w) in enumerate(zip(psbt.outputs, want["outputs"])):
        wallet = w.get("wallet")
        what = f"{wallet} index {w['index']}" if wallet else "payment"
        name = f"embit psbt output {o} ({what})"
        problems = []
        if scope.value != w["amount_sat"]:
            problems.append(f"amount {scope.value}, expected {w['amount_sat']}")
        if scope.script_pubkey.data.hex() != w["script_pubkey"]:
            problems.append(f"script {scope.script_pubkey.data.hex()}")
        got = origins(scope)
        if wallet:
            derived = wallets[wallet].derive(w["index"])
            if scope.script_pubkey.data.hex() != derived.script_pubkey().data.hex():
                problems.append("is not the script embit derives")
            if got != expected_origins(derived):
                problems.append(f"key origins {got}")
            if owners(scope, wallets) != [wallet]:
                problems.append(f"owned by {owners(scope, wallets)}")
        elif got or owners(scope, wallets):
            problems.append(f"a payment with key origins {got}")
        check(name, not problems, "; ".join(problems) or f"{scope.value} sat")
    in_total = sum(w["value_sat"] for w in want["inputs"])
    out_total = sum(w["amount_sat"] for w in want["outputs"])
    try:
        fee = psbt.fee()
    except Exception as e:
        fee = repr(e)
    check(
        "embit psbt fee",
        fee == want["fee_sat"] == in_total - out_total,
        f"embit {fee} sat, kura {want['fee_sat']} sat, inputs less outputs "
        f"{in_total - out_total} sat",
    )


# --- python-bitcointx: witnesses of signed transactions -------------------------


def verify(tx, i, script, amount):
    """None when input i's witness satisfies (script, amount), else why not."""
    try:
        VerifyScript(
            tx.vin[i].scriptSig,
            script,
            tx,
            i,
            flags=FLAGS,
            amount=amount,
            witness=tx.wit.vtxinwit[i].scriptWitness,
        )
        return None
    except VerifyScriptError as e:
        return f"{type(e).__name__}: {e}"
    except Exception as e:  # a bug or a malformed input is a failure too
        return f"{type(e).__name__}: {e!r}"


def check_signed(t, want, addresses):
    label = f"bitcointx tx {t}"
    try:
        tx = CTransaction.deserialize(bytes.fromhex(want["hex"]))
    except Exception as e:
        check(f"{label} deserializes", False, repr(e))
        return
    check(
        f"{label} deserializes",
        b2lx(tx.GetTxid()) == want["txid"]
        and len(tx.vin) == len(want["prevouts"])
        and tx.has_witness(),
        f"{want['name']}, txid {b2lx(tx.GetTxid())}, {len(tx.vin)} inputs",
    )
    for i, prev in enumerate(want["prevouts"]):
        if i >= len(tx.vin):
            break
        script = CScript(bytes.fromhex(prev["script_pubkey"]))
        name = f"{label} input {i} witness verifies"
        spends = (b2lx(tx.vin[i].prevout.hash), tx.vin[i].prevout.n)
        if spends != (prev["txid"], prev["vout"]):
            expected = f"{prev['txid']}:{prev['vout']}"
            check(name, False, f"spends {spends}, expected {expected}")
            continue
        if len(tx.vin[i].scriptSig) != 0:
            check(name, False, "has a scriptSig (not native SegWit)")
            continue
        why = verify(tx, i, script, prev["amount_sat"])
        stack = len(tx.wit.vtxinwit[i].scriptWitness.stack)
        check(
            name,
            why is None,
            why or f"{stack} witness items, {prev['amount_sat']} sat",
        )
        # The address bitcointx encodes for the spent script is the one kura derived.
        kura = addresses.get(prev["script_pubkey"])
        if kura is not None:
            ours = str(CCoinAddress.from_scriptPubKey(script))
            check(
                f"{label} input {i} address",
                ours == kura,
                f"bitcointx {ours}, kura {kura}",
            )
    # The check can fail: the signature commits to the amount spent (BIP-143).
    if tx.vin:
        prev = want["prevouts"][0]
        script = CScript(bytes.fromhex(prev["script_pubkey"]))
        why = verify(tx, 0, script, prev["amount_sat"] + 1)
        check(
            f"{label} rejects a changed amount",
            why is not None,
            why or "input 0 verified with its amount plus 1 sat",
        )
    in_total = sum(p["amount_sat"] for p in want["prevouts"])
    out_total = sum(o.nValue for o in tx.vout)
    fee, vsize = in_total - out_total, tx.get_virtual_size()
    check(
        f"{label} fee",
        fee == want["fee_sat"] and fee >= want["fee_rate_sat_vb"] * vsize,
        f"{fee} sat for {vsize} vB, kura says {want['fee_sat']} sat at "
        f"{want['fee_rate_sat_vb']} sat/vB",
    )


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    print(
        f"xval: embit {version('embit')} (pure Python secp256k1), python-bitcointx "
        f"{version('python-bitcointx')} with libsecp256k1 from coincurve "
        f"{version('coincurve')} (loaded from {SECP256K1.lib._name})"
    )
    print(f"xval: script verification flags {FLAG_NAMES}")
    check("network", doc.get("network") == "regtest", f"{doc.get('network')!r}")
    check("descriptors", len(doc["descriptors"]) > 0, f"{len(doc['descriptors'])}")
    wallets, addresses = {}, {}
    for entry in doc["descriptors"]:
        desc = check_descriptor(entry)
        if desc is not None:
            wallets[entry["name"]] = desc
        for a in entry["addresses"]:
            addresses[a["script_pubkey"]] = a["address"]
    if set(wallets) >= {w["wallet"] for w in doc["psbt"]["inputs"]}:
        check_psbt(doc, wallets)
    else:
        check("embit psbt", False, "a wallet of its inputs did not parse")
    check("signed transactions", len(doc["signed"]) > 0, f"{len(doc['signed'])}")
    for t, want in enumerate(doc["signed"]):
        check_signed(t, want, addresses)
    print(f"xval: {PASSED} passed, {FAILED} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
