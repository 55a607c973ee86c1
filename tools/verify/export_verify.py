#!/usr/bin/env python3
"""Check a forensic export bundle written by `kura export` (format kura-export/1).

    export_verify.py BUNDLE_DIR [--key 'NAME+KEYID+KEY'] [--no-signature]

Checks, with the Python standard library only:
  - every file listed in manifest.json has the SHA-256 and row count given there, and
    no file is missing or added;
  - every line of records.jsonl: the leaf hash is SHA-256(0x00 || seq as 8 bytes big
    endian || payload), and its RFC 9162 inclusion proof leads to the root of the
    checkpoint in the manifest; seqs strictly increase and lie within the checkpoint;
  - every table row (CSV and JSON lines) names in its `seq` column a record that is in
    records.jsonl, and rows are in seq order.
Then the checkpoint's Ed25519 signature, with the key given by --key (recommended: the
operator's key obtained independently of the bundle) or else the bundle's own key. That
needs the `cryptography` package, as in tlog_verify.py, whose code this program uses.

It does not decode the records' payloads or re-derive each row's cells from them; for
that, run `kura export verify BUNDLE_DIR --key ...`.

Exit status: 0 verified, 1 rejected, 2 unreadable input, 3 everything else verified but
the signature could not be checked (no `cryptography`; --no-signature accepts that
and exits 0 after saying so).
"""

import csv
import hashlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tlog_verify as tlog  # noqa: E402

FORMAT = "kura-export/1"


def checkpoint_text(note):
    """The checkpoint text of a signed note (before its signature lines), unverified."""
    if "\n\n" not in note:
        raise tlog.Rejected("malformed checkpoint note")
    return note[: note.rindex("\n\n") + 1]


def count_rows(name, data):
    if name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        return max(len(rows) - 1, 0), rows
    lines = data.decode("utf-8").splitlines()
    return len(lines), lines


def main(argv):
    args = list(argv)
    key = None
    no_signature = False
    if "--no-signature" in args:
        args.remove("--no-signature")
        no_signature = True
    if "--key" in args:
        i = args.index("--key")
        if i + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        key = args[i + 1]
        del args[i : i + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    bundle = args[0]
    problems = []
    try:
        with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format") != FORMAT:
            raise ValueError("manifest.json is not a %s manifest" % FORMAT)
        note = manifest["checkpoint"]
        origin, size, root = tlog.parse_checkpoint(checkpoint_text(note))
        if manifest["journal"]["checkpoint_size"] != size:
            problems.append("manifest.json: journal.checkpoint_size is not the checkpoint's size")

        if key is not None and manifest.get("verifier_key") != key:
            problems.append("manifest.json: verifier_key is not the key given with --key")

        # Files: hashes and row counts.
        listed = {f["name"]: f for f in manifest["files"]}
        contents = {}
        for name, f in sorted(listed.items()):
            if os.path.basename(name) != name:
                problems.append("manifest.json lists %r, which is not a file of the bundle" % name)
                continue
            try:
                with open(os.path.join(bundle, name), "rb") as fh:
                    data = fh.read()
            except OSError as e:
                problems.append("%s: cannot be read (%s)" % (name, e))
                continue
            if hashlib.sha256(data).hexdigest() != f["sha256"]:
                problems.append("%s: SHA-256 is not the manifest's: the file was changed" % name)
            try:
                n, rows = count_rows(name, data)
            except (UnicodeDecodeError, csv.Error) as e:
                problems.append("%s: unreadable (%s)" % (name, e))
                continue
            if n != f["rows"]:
                problems.append("%s: %d rows, the manifest says %d" % (name, n, f["rows"]))
            contents[name] = rows
        for name in sorted(os.listdir(bundle)):
            if name != "manifest.json" and name not in listed:
                problems.append("%s: not listed in the manifest" % name)

        # Records: leaf hashes and inclusion proofs.
        seqs = set()
        last = 0
        for i, line in enumerate(contents.get("records.jsonl", [])):
            where = "records.jsonl line %d" % (i + 1)
            try:
                r = json.loads(line)
                seq = tlog._n(r["seq"])
                if not 1 <= seq <= size:
                    raise tlog.Rejected("seq %d is outside the checkpoint (1..%d)" % (seq, size))
                if seq <= last:
                    raise tlog.Rejected("seq %d is not after seq %d: records reordered" % (seq, last))
                last = seq
                leaf = tlog.leaf_hash(seq.to_bytes(8, "big") + bytes.fromhex(r["payload"]))
                if leaf != tlog._h(r["leaf_hash"]):
                    raise tlog.Rejected("the payload does not hash to leaf_hash")
                tlog.verify_inclusion(leaf, seq - 1, size, [tlog._h(p) for p in r["proof"]], root)
                seqs.add(seq)
            except tlog.Rejected as e:
                problems.append("%s: %s" % (where, e))
            except (ValueError, KeyError, TypeError) as e:
                problems.append("%s: unreadable (%s)" % (where, e))
        if "records.jsonl" not in contents:
            problems.append("records.jsonl: missing from the manifest or unreadable")

        # Tables: each row's seq names an exported record, in order.
        for name, rows in sorted(contents.items()):
            if name == "records.jsonl":
                continue
            if name.endswith(".csv"):
                if not rows or rows[0][:2] != ["seq", "time"]:
                    problems.append("%s: the header does not start with seq,time" % name)
                    continue
                seq_texts = [row[0] if row else "" for row in rows[1:]]
            else:
                seq_texts = []
                for line in rows:
                    try:
                        seq_texts.append(json.loads(line).get("seq", ""))
                    except (ValueError, AttributeError):
                        seq_texts.append("")
            prev = 0
            for n, text in enumerate(seq_texts, start=1):
                if not text.isdigit() or int(text) not in seqs:
                    problems.append("%s row %d: seq %r is not an exported record" % (name, n, text))
                    break
                if int(text) < prev:
                    problems.append("%s row %d: seq %s comes after seq %d: rows out of order"
                                    % (name, n, text, prev))
                    break
                prev = int(text)

        for p in problems:
            print("REJECTED: %s" % p)
        if problems:
            return 1

        # The signature.
        vkey = key if key is not None else manifest["verifier_key"]
        try:
            import cryptography  # noqa: F401
        except ImportError:
            print("the records, proofs, hashes and row order verify, but the checkpoint's "
                  "Ed25519 signature was NOT checked: install the Python package "
                  "`cryptography`", file=sys.stderr)
            return 0 if no_signature else 3
        signed = tlog.parse_checkpoint(tlog.open_note(note, vkey))
        if signed != (origin, size, root):
            raise tlog.Rejected("the signed checkpoint is not the one parsed")
        print("OK: %d records proven in the log of %s at size %d (root %s), signed by %s; "
              "%d files match the manifest; every row names an exported record, in order"
              % (len(seqs), origin, size, root.hex(), vkey.split("+")[0], len(contents)))
        if key is None:
            print("note: checked with the key the bundle carries; pass --key with the "
                  "operator's independently published key (recommended)")
        return 0
    except tlog.Rejected as e:
        print("REJECTED: %s" % e)
        return 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        print("unreadable input: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
