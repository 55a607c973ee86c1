#!/usr/bin/env python3
"""Check a proof of reserves (BIP-127 transaction) written by `kura reserves prove` /
`kura cold finalize`.

    reserves_verify.py TX_FILE (--message TEXT | --message-file FILE)
        (--rpc-url URL (--rpc-cookie FILE | --rpc-user U --rpc-password P) | --coins reserves.json)
        [--liabilities SATS] [--no-signatures]
    reserves_verify.py --self-test

TX_FILE holds the raw transaction in hex. Checks, with the Python standard library only:
  - input 0 spends the commitment: its txid bytes (as serialized) are
    SHA-256("Proof-of-Reserves: " || message, UTF-8) and its index is 0, so no block can
    ever hold the transaction; its scriptSig and witness are empty;
  - every other input (a coin) appears once; there is exactly one output;
  - every signature in the coins' witnesses ends in the SIGHASH_ALL byte (0x01), or is a
    64-byte Schnorr signature (SIGHASH_DEFAULT), so each one commits to input 0;
  - the coins' amounts: with --rpc-url, from a Bitcoin Core node (gettxout, mempool
    ignored): every coin unspent at its tip, with the script it pays; with --coins, as
    stated in reserves.json (a claim of the exchange, not a check of the chain);
  - the one output is worth exactly their sum, at most 21 million BTC;
  - with --liabilities, that the total covers them.
Then every input's script and signatures, which needs python-bitcointx (with a
libsecp256k1: the coincurve wheel's or the system's). Without it that part is not done:
the program says so and exits with status 3 (--no-signatures accepts that: status 0).

Exit status: 0 verified, 1 rejected, 2 unreadable input, 3 all verified but signatures.
"""

import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

PREFIX = b"Proof-of-Reserves: "
MAX_SAT = 21_000_000 * 100_000_000


class Rejected(Exception):
    pass


class Unreadable(Exception):
    pass


def commitment(message):
    """The txid bytes of the commitment outpoint, in serialized order."""
    return hashlib.sha256(PREFIX + message.encode("utf-8")).digest()


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise Unreadable("the transaction ends too early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, n):
        return int.from_bytes(self.take(n), "little")

    def varint(self):
        first = self.int(1)
        return {0xFD: lambda: self.int(2), 0xFE: lambda: self.int(4), 0xFF: lambda: self.int(8)}.get(
            first, lambda: first
        )()

    def bytes(self):
        return self.take(self.varint())


def parse_tx(raw):
    """version, [(txid bytes, vout, scriptSig, sequence)], [(value, script)], [witness], lock time."""
    r = Reader(raw)
    version = r.int(4)
    count = r.varint()
    segwit = count == 0
    if segwit:
        if r.int(1) != 1:
            raise Unreadable("bad segwit flag")
        count = r.varint()
    inputs = [(r.take(32), r.int(4), r.bytes(), r.int(4)) for _ in range(count)]
    outputs = [(r.int(8), r.bytes()) for _ in range(r.varint())]
    witnesses = [[r.bytes() for _ in range(r.varint())] for _ in inputs] if segwit else [[] for _ in inputs]
    lock_time = r.int(4)
    if r.pos != len(raw):
        raise Unreadable("bytes after the transaction")
    return version, inputs, outputs, witnesses, lock_time


def outpoint_text(txid, vout):
    return f"{txid[::-1].hex()}:{vout}"


def is_der_signature(item):
    return len(item) >= 9 and item[0] == 0x30 and item[1] == len(item) - 3


def check_sighash_bytes(i, script, witness):
    """Every signature in the witness commits to every input (ALL / DEFAULT)."""
    sigs = []
    if len(script) == 22 and script[:2] == b"\x00\x14":  # P2WPKH: [sig, pubkey]
        sigs = witness[:1]
    elif len(script) == 34 and script[:2] == b"\x00\x20":  # P2WSH: [..., witness script]
        sigs = [w for w in witness[:-1] if is_der_signature(w)]
    elif len(script) == 34 and script[:2] == b"\x51\x20":  # P2TR key path: [sig]
        if len(witness) == 1:
            if len(witness[0]) == 65 and witness[0][-1] != 0x01:
                raise Rejected(f"input {i}: taproot signature hash type {witness[0][-1]:#04x}, not ALL")
            return 1
        raise Rejected(f"input {i}: taproot script paths are not checked by this program")
    else:
        raise Rejected(f"input {i}: not a segwit v0 or taproot key-path coin ({script.hex()})")
    if not sigs:
        raise Rejected(f"input {i}: no signature")
    for s in sigs:
        if not is_der_signature(s):
            raise Rejected(f"input {i}: not a DER signature")
        if s[-1] != 0x01:
            raise Rejected(f"input {i}: signature hash type {s[-1]:#04x}, not ALL")
    return len(sigs)


def rpc_client(url, cookie, user, password):
    if cookie:
        with open(cookie, encoding="utf-8") as f:
            user, password = f.read().strip().split(":", 1)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(method, params):
        body = json.dumps({"jsonrpc": "1.0", "id": "reserves", "method": method, "params": params})
        req = urllib.request.Request(
            url,
            data=body.encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read() or b"{}")
        if answer.get("error"):
            raise Unreadable(f"{method}: {answer['error']}")
        return answer.get("result")

    return call


def coins_from_chain(call, inputs):
    coins, tips = {}, set()
    for txid, vout, _, _ in inputs[1:]:
        op = outpoint_text(txid, vout)
        out = call("gettxout", [txid[::-1].hex(), vout, False])
        if out is None:
            raise Rejected(f"{op} is not an unspent coin at the node's tip (spent, or never existed)")
        tips.add(out["bestblock"])
        sat = round(out["value"] * 100_000_000)
        coins[op] = (sat, bytes.fromhex(out["scriptPubKey"]["hex"]))
    if len(tips) > 1:
        raise Unreadable("the node's tip moved while the coins were looked up; run again")
    return coins, tips.pop() if tips else None


def coins_from_summary(path):
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    if summary.get("format") != "kura-reserves/1":
        raise Unreadable(f"{path} is not a kura-reserves/1 summary")
    return {c["outpoint"]: (int(c["value_sat"]), bytes.fromhex(c["script_pubkey"])) for c in summary["coins"]}


def signature_checker():
    """A function (tx bytes, input, script, amount, spent outputs) -> None or why not, or
    None when python-bitcointx is not usable."""
    try:
        import importlib.machinery
        import importlib.util

        import bitcointx

        spec = importlib.util.find_spec("coincurve")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(folder, "_libsecp256k1" + suffix)
                if os.path.isfile(path):
                    bitcointx.set_custom_secp256k1_path(path)
        from bitcointx.core import CTransaction
        from bitcointx.core.script import CScript
        from bitcointx.core.scripteval import (
            SCRIPT_VERIFY_P2SH,
            SCRIPT_VERIFY_WITNESS,
            STANDARD_SCRIPT_VERIFY_FLAGS,
            UNHANDLED_SCRIPT_VERIFY_FLAGS,
            VerifyScript,
        )
        from bitcointx.core.secp256k1 import get_secp256k1

        get_secp256k1()
    except Exception:
        return None
    flags = set(STANDARD_SCRIPT_VERIFY_FLAGS - UNHANDLED_SCRIPT_VERIFY_FLAGS)
    if SCRIPT_VERIFY_WITNESS not in flags or SCRIPT_VERIFY_P2SH not in flags:
        return None

    def check(raw, i, script, amount):
        tx = CTransaction.deserialize(raw)
        try:
            VerifyScript(
                tx.vin[i].scriptSig,
                CScript(script),
                tx,
                i,
                flags=flags,
                amount=amount,
                witness=tx.wit.vtxinwit[i].scriptWitness,
            )
            return None
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    return check


def verify(raw, message, coins):
    """The total, after every check but the signatures' (see the module docstring)."""
    _, inputs, outputs, witnesses, _ = parse_tx(raw)
    if not inputs:
        raise Rejected("no inputs")
    txid, vout, script_sig, _ = inputs[0]
    if txid != commitment(message) or vout != 0:
        raise Rejected(
            f"wrong commitment: input 0 spends {outpoint_text(txid, vout)}, the message commits to "
            f"{outpoint_text(commitment(message), 0)}"
        )
    if script_sig or witnesses[0]:
        raise Rejected("the commitment input carries a scriptSig or witness")
    if len(inputs) < 2:
        raise Rejected("no coins")
    seen = set()
    for txid, vout, _, _ in inputs:
        if (txid, vout) in seen:
            raise Rejected(f"{outpoint_text(txid, vout)} is spent twice")
        seen.add((txid, vout))
    if len(outputs) != 1:
        raise Rejected(f"{len(outputs)} outputs; a proof of reserves has exactly one")
    total, spent = 0, []
    for i, (txid, vout, _, _) in enumerate(inputs[1:], start=1):
        op = outpoint_text(txid, vout)
        if op not in coins:
            raise Rejected(f"input {i} spends {op}, whose amount is not known")
        sat, script = coins[op]
        check_sighash_bytes(i, script, witnesses[i])
        total += sat
        spent.append((i, op, script, sat))
    if total > MAX_SAT:
        raise Rejected("the coins add up to more than 21 million BTC")
    if outputs[0][0] != total:
        raise Rejected(f"the output is {outputs[0][0]} sat, the coins add up to {total} sat")
    return total, spent


def self_test():
    expected = "30896246cd560f641d84e2ddcd9ee0f8fd74e4547be75aa7d6464f75dd372dff"
    assert commitment("Some Message").hex() == expected, "BIP-127 example commitment"
    print(f"self-test: SHA-256('Proof-of-Reserves: Some Message') = {expected}: ok")
    return 0


def main(argv):
    args = list(argv)
    if args == ["--self-test"]:
        return self_test()
    opts = {}
    flags = {"--no-signatures"}
    positional = []
    while args:
        a = args.pop(0)
        if a in flags:
            opts[a] = True
        elif a.startswith("--"):
            if not args:
                raise Unreadable(f"{a} needs a value")
            opts[a] = args.pop(0)
        else:
            positional.append(a)
    if len(positional) != 1:
        raise Unreadable(__doc__.split("\n\n")[1])
    if "--message" in opts:
        message = opts["--message"]
    elif "--message-file" in opts:
        with open(opts["--message-file"], encoding="utf-8") as f:
            message = f.read()
        message = message[:-2] if message.endswith("\r\n") else message[:-1] if message.endswith("\n") else message
    else:
        raise Unreadable("give --message TEXT or --message-file FILE")
    with open(positional[0], encoding="ascii") as f:
        try:
            raw = bytes.fromhex(f.read().strip())
        except ValueError:
            raise Unreadable(f"{positional[0]} is not hex")
    tip = None
    _, inputs, _, _, _ = parse_tx(raw)
    if "--rpc-url" in opts:
        call = rpc_client(opts["--rpc-url"], opts.get("--rpc-cookie"), opts.get("--rpc-user"), opts.get("--rpc-password"))
        coins, tip = coins_from_chain(call, inputs)
        source = f"unspent at the node's tip {tip}"
    elif "--coins" in opts:
        coins = coins_from_summary(opts["--coins"])
        source = f"as stated in {opts['--coins']} (not checked against a chain)"
    else:
        raise Unreadable("give --rpc-url (a Bitcoin Core node) or --coins reserves.json")
    total, spent = verify(raw, message, coins)
    print(f"commitment: ok (input 0 spends SHA-256('Proof-of-Reserves: ' + message) = {commitment(message).hex()}:0)")
    print(f"coins: {len(spent)}, amounts {source}")
    print(f"total: {total} sat ({total / 100_000_000:.8f} BTC); the one output is exactly that")
    if "--liabilities" in opts:
        owed = int(opts["--liabilities"])
        if total < owed:
            raise Rejected(f"SHORTFALL: the reserves ({total} sat) are short of the liabilities ({owed} sat) by {owed - total} sat")
        print(f"liabilities: {owed} sat, covered (surplus {total - owed} sat)")
    check = signature_checker()
    if check is None:
        print("signatures: NOT checked (python-bitcointx with a libsecp256k1 is not available); only their hash-type bytes were")
        return 0 if opts.get("--no-signatures") else 3
    taproot = 0
    for i, op, script, sat in spent:
        if script[:2] == b"\x51\x20":
            taproot += 1  # python-bitcointx has no taproot rules
            continue
        why = check(raw, i, script, sat)
        if why:
            raise Rejected(f"input {i} ({op}): {why}")
    if taproot:
        print(f"signatures: {len(spent) - taproot} inputs verified by python-bitcointx; {taproot} taproot inputs NOT checked")
        return 0 if opts.get("--no-signatures") else 3
    print("signatures: every input's script verified by python-bitcointx")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Rejected as e:
        print(f"REJECTED: {e}")
        sys.exit(1)
    except (Unreadable, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"unreadable input: {e}", file=sys.stderr)
        sys.exit(2)
