#!/usr/bin/env python3
"""Check proofs of kura's append-only audit log (an RFC 6962 / RFC 9162 Merkle tree).

    tlog_verify.py inclusion PROOF.json      a record is in the log at an index
    tlog_verify.py consistency PROOF.json    an older log is a prefix of a newer one
    tlog_verify.py checkpoint NOTE VERIFIER_KEY [PROOF.json]
                                             a signed checkpoint (C2SP) is genuine, and
                                             optionally a proof matches its size and root
    tlog_verify.py --self-test               known answers of the RFC 6962 reference tests

The Merkle checks use only the Python standard library. Ed25519 signatures need the
`cryptography` package; without it the checkpoint command says so and exits with 3,
having checked nothing.

JSON forms (hashes as 64 hex digits):
    inclusion:   {"leaf_index", "tree_size", "leaf_hash", "root_hash", "path": [...]}
    consistency: {"old_size", "new_size", "old_root", "new_root", "proof": [...]}

An inclusion proof written by `kura audit prove-inclusion --json` also carries the
journal record, {"record": {"seq", "payload", ...}}; then the leaf is recomputed from it,
SHA-256(0x00 || seq as 8 bytes big endian || payload bytes), and must be the proof's
leaf, with leaf_index = seq - 1. (The decoded "entry" shown next to the payload is for
reading; it is not compared with the payload here.)

Exit status: 0 verified, 1 rejected, 2 unreadable input, 3 signature check unavailable.
"""

import base64
import hashlib
import json
import sys


class Rejected(Exception):
    pass


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def verify_inclusion(leaf, index, size, path, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        raise Rejected("index %d is outside a tree of size %d" % (index, size))
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise Rejected("proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise Rejected("proof too short")
    if r != root:
        raise Rejected("the proof does not lead to the root")


def verify_consistency(old_size, new_size, proof, old_root, new_root):
    """RFC 9162 section 2.1.4.2."""
    if old_size > new_size:
        raise Rejected("old size is larger than new size")
    if old_size == new_size or old_size == 0:
        if proof:
            raise Rejected("expected an empty proof")
        if old_root != (EMPTY_ROOT if old_size == 0 else new_root):
            raise Rejected("roots differ")
        return
    if not proof:
        raise Rejected("empty proof")
    path = ([old_root] if old_size & (old_size - 1) == 0 else []) + list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Rejected("proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise Rejected("proof too short")
    if fr != old_root or sr != new_root:
        raise Rejected("the proof does not lead to the roots")


# ---- C2SP signed notes and checkpoints (Ed25519 needs `cryptography`) ----

def parse_verifier_key(vkey):
    name, key_id, key = vkey.split("+", 2)
    raw = base64.b64decode(key, validate=True)
    if not name or len(key_id) != 8 or len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    pub = raw[1:]
    if hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4] != bytes.fromhex(key_id):
        raise ValueError("key id does not match the key")
    return name, bytes.fromhex(key_id), pub


def open_note(note, vkey):
    """Returns the note's text if it carries a valid signature by vkey. Raises Rejected."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, key_id, pub = parse_verifier_key(vkey)
    if any(c < " " and c != "\n" for c in note) or not note.endswith("\n") or "\n\n" not in note:
        raise Rejected("malformed note")
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    ok = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 ") or " " not in line[2:]:
            raise Rejected("malformed signature line")
        who, b64 = line[2:].split(" ", 1)
        blob = base64.b64decode(b64, validate=True)
        if who != name or blob[:4] != key_id:
            continue  # another key's signature
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature:
            raise Rejected("bad signature") from None
        ok = True
    if not ok:
        raise Rejected("no signature by the known key")
    return text


def parse_checkpoint(text):
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[0] or not lines[1].isdigit() or lines[1] != str(int(lines[1])):
        raise Rejected("malformed checkpoint")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32 or any(not e for e in lines[3:]):
        raise Rejected("malformed checkpoint")
    return lines[0], int(lines[1]), root


# ---- command line ----

def _h(v):
    b = bytes.fromhex(v)
    if len(b) != 32:
        raise ValueError("expected 32 bytes of hex")
    return b


def _n(v):
    if type(v) is not int or not 0 <= v < 2**64:
        raise ValueError("expected an unsigned 64-bit integer")
    return v


def check_record(d):
    """The record carried by a `kura audit prove-inclusion` proof, if any, must hash to
    the proof's leaf."""
    rec = d.get("record")
    if rec is None:
        return ""
    seq = _n(rec["seq"])
    if seq != _n(d["leaf_index"]) + 1:
        raise Rejected("the record's seq %d is not leaf %d + 1" % (seq, d["leaf_index"]))
    data = seq.to_bytes(8, "big") + bytes.fromhex(rec["payload"])
    if leaf_hash(data) != _h(d["leaf_hash"]):
        raise Rejected("record %d does not hash to the proof's leaf" % seq)
    return "record %d hashes to the leaf; " % seq


def check_inclusion(d):
    checked = check_record(d)
    verify_inclusion(_h(d["leaf_hash"]), _n(d["leaf_index"]), _n(d["tree_size"]),
                     [_h(p) for p in d["path"]], _h(d["root_hash"]))
    return checked + "leaf %d is in the tree of size %d" % (d["leaf_index"], d["tree_size"])


def check_consistency(d):
    verify_consistency(_n(d["old_size"]), _n(d["new_size"]), [_h(p) for p in d["proof"]],
                       _h(d["old_root"]), _h(d["new_root"]))
    return "the tree of size %d is a prefix of the tree of size %d" % (d["old_size"], d["new_size"])


def self_test():
    leaves = [bytes.fromhex(x) for x in ["", "00", "10", "2021", "3031", "40414243",
                                          "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
    roots = [EMPTY_ROOT.hex(),
             "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
             "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
             "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
             "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
             "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
             "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
    r = [bytes.fromhex(x) for x in roots]
    p = [bytes.fromhex(x) for x in [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]]
    verify_inclusion(leaf_hash(leaves[0]), 0, 8, p, r[8])
    verify_consistency(1, 8, p, r[1], r[8])
    verify_consistency(6, 8, [bytes.fromhex(x) for x in [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]], r[6], r[8])
    verify_consistency(2, 5, [bytes.fromhex(x) for x in [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]], r[2], r[5])
    for bad in [lambda: verify_inclusion(leaf_hash(leaves[1]), 0, 8, p, r[8]),
                lambda: verify_inclusion(leaf_hash(leaves[0]), 0, 8, p[:2], r[8]),
                lambda: verify_consistency(1, 8, p, r[2], r[8]),
                lambda: verify_consistency(1, 7, p, r[1], r[7])]:
        try:
            bad()
        except Rejected:
            continue
        raise Rejected("self-test: a wrong proof verified")
    print("RFC 6962 known answers: ok")
    return 0


def main(argv):
    try:
        if argv == ["--self-test"]:
            return self_test()
        if len(argv) == 2 and argv[0] in ("inclusion", "consistency"):
            with open(argv[1], encoding="utf-8") as f:
                d = json.load(f)
            print("OK: " + (check_inclusion if argv[0] == "inclusion" else check_consistency)(d))
            return 0
        if len(argv) in (3, 4) and argv[0] == "checkpoint":
            try:
                import cryptography  # noqa: F401
            except ImportError:
                print("cannot check Ed25519 signatures: the Python package `cryptography` is not "
                      "installed (pip install cryptography); NOTHING WAS VERIFIED", file=sys.stderr)
                return 3
            with open(argv[1], encoding="utf-8") as f:
                origin, size, root = parse_checkpoint(open_note(f.read(), argv[2]))
            print("OK: checkpoint of %s: size %d, root %s" % (origin, size, root.hex()))
            if len(argv) == 4:
                with open(argv[3], encoding="utf-8") as f:
                    d = json.load(f)
                if "tree_size" in d:
                    if (_n(d["tree_size"]), _h(d["root_hash"])) != (size, root):
                        raise Rejected("the proof is not against this checkpoint")
                    print("OK: " + check_inclusion(d))
                else:
                    if (_n(d["new_size"]), _h(d["new_root"])) != (size, root):
                        raise Rejected("the proof does not end at this checkpoint")
                    print("OK: " + check_consistency(d))
            return 0
    except Rejected as e:
        print("REJECTED: %s" % e)
        return 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        print("unreadable input: %s" % e, file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
