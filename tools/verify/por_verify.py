#!/usr/bin/env python3
"""Check a kura por/v1 proof of liabilities. Python 3 standard library only.

    por_verify.py PROOF.json REPORT.json [--balance SATS] [--asset SYMBOL]
    por_verify.py --vectors

PROOF.json is the proof the exchange gave you: what GET /kura/v1/solvency/proof (or
`kura solvency proof`) returns, with one por/v1 proof per asset, or a single por/v1
proof. REPORT.json is the report it published (signed, and logged before proofs were
handed out): the epoch's report.json (or the "report" of GET /kura/v1/solvency, or the
whole answer), with one por/v1 report per asset, or a single por/v1 report. Every proof
in PROOF.json (only SYMBOL's with --asset) is checked against the report of the same
asset. The check shows that your balance is counted in the published total of customer
liabilities. Before trusting it, also check that the account id and login printed are
yours, that the balance is what you expect (or pass --balance, with --asset when the file
has several assets), and that REPORT.json is the one the exchange published.

Exit status: 0 verified, 1 proof rejected (or liabilities above the stated reserves),
2 unreadable input.
"""

import hashlib
import hmac
import json
import sys

MAX_SAT = 2_100_000_000_000_000  # 21 million BTC in satoshis
MAX_DEPTH = 32


class Rejected(Exception):
    pass


def H(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def u64(n):
    return n.to_bytes(8, "big")


def epoch_id(ledger_seq, block_height, block_hash):
    return H(b"por/v1/epoch", u64(ledger_seq), block_height.to_bytes(4, "big"), block_hash)


def user_key(por_secret, eid, account_id):  # only the exchange can compute this
    return hmac.new(por_secret, b"por/v1/user-key" + eid + u64(account_id), hashlib.sha256).digest()


def user_id(eid, account_id, login, k_u):
    return H(b"por/v1/uid", eid, u64(account_id), H(login.encode("utf-8")), k_u)


def pad_id(eid, j, pad_secret):  # only the exchange can compute this
    return H(b"por/v1/pad", eid, u64(j), pad_secret)


def leaf(uid, balance):
    return (H(b"\x00", uid, u64(balance)), balance)


def node(left, right):
    total = left[1] + right[1]
    if total > MAX_SAT:  # Python integers do not overflow; the cap covers it
        raise Rejected("a sum is above the bitcoin supply")
    return (H(b"\x01", left[0], u64(left[1]), right[0], u64(right[1])), total)


def verify(proof, eid, depth, root):
    """proof: dict as in PROOF.json (hashes as bytes); root: (hash, sum). Raises Rejected."""
    if not 0 <= depth <= MAX_DEPTH:
        raise Rejected("depth out of range")
    if len(proof["siblings"]) != depth:
        raise Rejected("expected %d siblings, got %d" % (depth, len(proof["siblings"])))
    if not 0 <= proof["index"] < 2**depth:
        raise Rejected("index out of range")
    if not 0 <= proof["balance"] <= MAX_SAT or not 0 <= root[1] <= MAX_SAT:
        raise Rejected("balance or total out of range")
    uid = user_id(eid, proof["account_id"], proof["login"], proof["user_key"])
    cur = leaf(uid, proof["balance"])
    for level, sib in enumerate(proof["siblings"]):
        if not 0 <= sib[1] <= MAX_SAT:
            raise Rejected("sibling sum out of range at level %d" % level)
        if (proof["index"] >> level) & 1 == 0:
            cur = node(cur, sib)
        else:
            cur = node(sib, cur)
    if cur != root:
        raise Rejected("the proof does not lead to the published root")


# ---- reading the JSON files ----

def _hash(v):
    b = bytes.fromhex(v)
    if len(b) != 32:
        raise ValueError("expected 32 bytes of hex")
    return b


def _int(v, bits=64):
    if type(v) is not int or not 0 <= v < 2**bits:
        raise ValueError("expected an unsigned %d-bit integer" % bits)
    return v


def _version(d):
    if d.get("version") != "por/v1":
        raise ValueError("not a por/v1 document")


def read_proof(d):
    _version(d)
    login = d["login"]
    if not isinstance(login, str):
        raise ValueError("login must be a string")
    login.encode("utf-8")  # raises ValueError on text that is not valid Unicode
    return {
        "account_id": _int(d["account_id"]),
        "login": login,
        "user_key": _hash(d["user_key"]),
        "balance": _int(d["balance"]),
        "index": _int(d["index"]),
        "siblings": [(_hash(s["hash"]), _int(s["sum"])) for s in d["siblings"]],
    }


def read_report(d):
    """Returns (epoch_id, depth, root, reserves or None); checks the derived fields."""
    _version(d)
    e = d["epoch"]
    eid = epoch_id(_int(e["ledger_seq"]), _int(e["block_height"], 32), _hash(e["block_hash"]))
    if _hash(d["epoch_id"]) != eid:
        raise ValueError("epoch_id does not match the epoch")
    root = (_hash(d["root"]["hash"]), _int(d["root"]["sum"]))
    message = "por/v1 %s %s %d" % (eid.hex(), root[0].hex(), root[1])
    if d["reserves_message"] != message:
        raise ValueError("reserves_message does not match")
    reserves = d.get("reserves_sat")
    return eid, _int(d["depth"], 32), root, (None if reserves is None else _int(reserves))


def proofs_of(d):
    """[(asset or None, proof)] from a proof bundle or a single por/v1 proof."""
    if d.get("format") == "kura-solvency-proof/v1":
        return [(p["asset"], read_proof(p["proof"])) for p in d["proofs"]]
    return [(None, read_proof(d))]


def reports_of(d):
    """[(asset or None, report)] from a kura solvency report or a single por/v1 report."""
    if "format" not in d and isinstance(d.get("report"), dict):
        d = d["report"]  # the answer of GET /kura/v1/solvency
    if d.get("format") == "kura-solvency/v1":
        return d.get("epoch"), [(a["asset"], read_report(a["por"])) for a in d["assets"]]
    return None, [(None, read_report(d))]


def pick_report(asset, reports, only):
    if len(reports) == 1 and reports[0][0] in (None, asset):
        return reports[0][1]
    name = asset or only
    if name is None:
        raise ValueError("the report has several assets: name one with --asset")
    for a, r in reports:
        if a == name:
            return r
    raise ValueError("the report has no %s tree" % name)


def check_files(proof_path, report_path, expect_balance=None, only=None):
    try:
        with open(proof_path, encoding="utf-8") as f:
            proof_doc = json.load(f)
        with open(report_path, encoding="utf-8") as f:
            report_epoch, reports = reports_of(json.load(f))
        proofs = [(a, p) for a, p in proofs_of(proof_doc) if only is None or a in (None, only)]
        if not proofs:
            raise ValueError("no proof%s in %s" % (" for " + only if only else "", proof_path))
        if proof_doc.get("format") == "kura-solvency-proof/v1" and report_epoch is not None \
                and proof_doc.get("epoch") != report_epoch:
            raise ValueError("the proofs are for epoch %s but the report is epoch %s"
                             % (proof_doc.get("epoch"), report_epoch))
        if expect_balance is not None and len(proofs) != 1:
            raise ValueError("--balance needs exactly one proof: name the asset with --asset")
        checks = [(a, p, pick_report(a, reports, only)) for a, p in proofs]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print("unreadable input: %s" % e, file=sys.stderr)
        return 2
    status = 0
    for asset, proof, (eid, depth, root, reserves) in checks:
        name = (asset + ": ") if asset else ""
        try:
            verify(proof, eid, depth, root)
            if expect_balance is not None and proof["balance"] != expect_balance:
                raise Rejected("the proof shows balance %d, not %d" % (proof["balance"], expect_balance))
        except Rejected as e:
            print("REJECTED: %s%s" % (name, e))
            status = 1
            continue
        unit = "sat" if asset in (None, "BTC") else "(%s minor units)" % asset
        print("OK: %saccount %d (%s), balance %d %s, is included in total liabilities of %d %s"
              % (name, proof["account_id"], proof["login"], proof["balance"], unit, root[1], unit))
        print("  epoch %s, reserves message: %s" % (eid.hex(), message_of(eid, root)))
        if reserves is None:
            print("  note: the report states no reserves; compare the total with the proof of reserves")
        elif root[1] > reserves:
            print("SHORTFALL: %sliabilities %d exceed the stated reserves %d by %d"
                  % (name, root[1], reserves, root[1] - reserves))
            status = 1
        else:
            print("  total liabilities <= stated reserves %d (the reserves proof itself is not checked here)" % reserves)
    return status


def message_of(eid, root):
    return "por/v1 %s %s %d" % (eid.hex(), root[0].hex(), root[1])


# ---- the test vectors of the por/v1 specification ----

def _expect(ok, what):
    if not ok:
        raise SystemExit("por/v1 test vectors: MISMATCH in " + what)


def self_check_vectors():
    eid = epoch_id(1000, 800000, bytes(32))
    _expect(eid.hex() == "058049db24a02966a27441e3175422fa0e2e774f19aac9e13a5677c854d99036", "eid.hex()")
    por_secret, pad_secret = b"\x11" * 32, b"\x22" * 32
    users = [(1, "alice", 150000000), (2, "bob", 25000000), (3, "carol", 7)]
    keys = {a: user_key(por_secret, eid, a) for a, _, _ in users}
    _expect(keys[1].hex() == "b0e6156c170cb8d76e9ca1c763aa1ff861c8118b6f77d393adc0cc49f9a48e70", "keys[1].hex()")
    # Build the whole D = 2 tree: three users and one padding slot, sorted by uid.
    slots = [(user_id(eid, a, login, keys[a]), bal, a) for a, login, bal in users]
    slots.append((pad_id(eid, 0, pad_secret), 0, None))
    slots.sort()
    leaves = [leaf(uid, bal) for uid, bal, _ in slots]
    index = {a: i for i, (_, _, a) in enumerate(slots) if a is not None}
    _expect((index[1], index[2], index[3]) == (2, 0, 1), "(index[1], index[2], index[3])")
    _expect(leaves[2][0].hex() == "4ad721fb34253b05de3b09e3b0d11259403c6913e34b06d6031f7b0f58465184", "leaves[2][0].hex()")
    _expect(leaves[0][0].hex() == "73f645448743276fe96109a907f20bd2807d395147442956a152d91e1ec73158", "leaves[0][0].hex()")
    _expect(leaves[1][0].hex() == "32f020cf38bcb56e202485ad132e6ef94d162bdf88b69f333e209083c20e0933", "leaves[1][0].hex()")
    left, right = node(leaves[0], leaves[1]), node(leaves[2], leaves[3])
    root = node(left, right)
    _expect(root[0].hex() == "604d63165f2c47c24fd6f7aacb447fb27136fdf049b260c132b3d5633a5c988a", "root[0].hex()")
    _expect(root[1] == 175000007, "root[1]")
    sibs = [(bytes.fromhex("81a9b9af23dcf25b99e40f3808be56475aa784929f1bf67cd3eacbb8a95b7ba2"), 0),
            (bytes.fromhex("ec970ae2ea52d21a5e853dc8f13e1ba7e54030bd9f7b74a5d292e616cb44ef62"), 25000007)]
    _expect([leaves[3], left] == sibs, "[leaves[3], left]")
    alice = {"account_id": 1, "login": "alice", "user_key": keys[1], "balance": 150000000,
             "index": 2, "siblings": sibs}
    verify(alice, eid, 2, root)
    for bad in [dict(alice, balance=149999999), dict(alice, index=3), dict(alice, siblings=sibs[:1]),
                dict(alice, siblings=[sibs[0], (sibs[1][0], 25000006)])]:
        try:
            verify(bad, eid, 2, root)
        except Rejected:
            continue
        raise SystemExit("por/v1 test vectors: a tampered proof verified")
    print("por/v1 test vectors: ok")
    return 0


def main(argv):
    if argv == ["--vectors"]:
        return self_check_vectors()
    expect, only, files = None, None, []
    i = 0
    while i < len(argv):
        if argv[i] == "--balance" and i + 1 < len(argv) and argv[i + 1].isdigit():
            expect, i = int(argv[i + 1]), i + 2
        elif argv[i] == "--asset" and i + 1 < len(argv):
            only, i = argv[i + 1], i + 2
        elif argv[i].startswith("--"):
            files = []
            break
        else:
            files.append(argv[i])
            i += 1
    if len(files) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    return check_files(files[0], files[1], expect, only)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
