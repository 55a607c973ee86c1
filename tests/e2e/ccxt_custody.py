#!/usr/bin/env python3
"""End-to-end custody suite: unmodified CCXT (ccxt==4.5.90, `ccxt.binance`) against a
`kura serve --chain devnet` node, with the chain driven by `kura devnet` commands.

deposit -> confirmations -> credit -> trade -> withdrawal -> confirmed -> settled:

  1. fetch_deposit_address: a regtest SegWit address, the same on every call;
  2. the devnet pays 1 BTC to it: fetch_deposits shows it pending, not credited;
  3. two blocks later it is credited once (fetch_balance, fetch_deposits status ok);
  4. the depositor sells 0.1 BTC to a second customer's resting bid;
  5. withdraw 0.3 BTC to an outside address: held at once (fetch_balance used),
     fetch_withdrawals shows it pending;
  6. the batcher pays it; one block later fetch_withdrawals shows it ok with its txid,
     and `kura devnet balance` shows the outside address received 0.3 BTC less the fee,
     exactly once.

Inputs (environment): KURA_E2E_SERVER_JSON (the node's server.json), KURA_E2E_DATA (its
data directory), KURA_E2E_KURA (the kura binary), KURA_E2E_A_KEY/_A_SECRET (the
depositor, with the withdraw permission), KURA_E2E_B_KEY/_B_SECRET (the buyer),
KURA_E2E_OUTSIDE (a regtest address nobody at the exchange controls).
"""

import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import ccxt

from ccxt_suite import CCXT_VERSION, REPORT, CheckFailed, check, check_eq, dec, make, print_http_logs

DEADLINE_S = 60


def kura(command, *args):
    out = subprocess.run(
        [os.environ["KURA_E2E_KURA"], command, "--data", os.environ["KURA_E2E_DATA"], *args],
        capture_output=True, text=True, timeout=60,
    )
    if out.returncode != 0:
        raise CheckFailed(f"kura {command} {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def devnet(*args):
    return kura("devnet", *args)


def wait_for(name, fn):
    """Poll `fn` until it returns a truthy value (or the deadline passes)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = fn()
        if value:
            REPORT.ok(name)
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out waiting for: {name}")
        time.sleep(0.05)


def confirmations_seen(ex, txid, n, required=2):
    """Wait until kura's custody task has followed the chain far enough that the
    deposit `txid` has `n` confirmations (kura's own view, from fetch_deposits)."""
    want = f"{n}/{required}"
    wait_for(f"kura sees the deposit at {want} confirmations", lambda: [
        d for d in ex.fetch_deposits("BTC") if d["txid"] == txid and d["info"].get("confirmTimes") == want])


def btc_balance(ex):
    b = ex.fetch_balance()["BTC"]
    return dec(b["free"]), dec(b["used"])


def run(rest):
    a = make(rest, "depositor", os.environ["KURA_E2E_A_KEY"], os.environ["KURA_E2E_A_SECRET"])
    b = make(rest, "buyer", os.environ["KURA_E2E_B_KEY"], os.environ["KURA_E2E_B_SECRET"])
    a.load_markets()
    b.load_markets()

    REPORT.label = "deposit"
    address = a.fetch_deposit_address("BTC")
    check("fetch_deposit_address gives a regtest SegWit address",
          str(address["address"]).startswith("bcrt1q"), "bcrt1q…", address["address"])
    check_eq("the address is stable", a.fetch_deposit_address("BTC")["address"], address["address"])
    txid = devnet("send", address["address"], "1").strip()
    pending = wait_for("the deposit shows as pending before it confirms", lambda: [
        d for d in a.fetch_deposits("BTC") if d["txid"] == txid and d["status"] == "pending"])
    check_eq("pending amount", dec(pending[0]["amount"]), Decimal("1"))
    check_eq("nothing credited from the mempool", btc_balance(a)[0], Decimal("0"))
    devnet("mine", "1")
    confirmations_seen(a, txid, 1)
    check_eq("one confirmation is not enough", btc_balance(a)[0], Decimal("0"))
    devnet("mine", "1")
    wait_for("credited at the second confirmation", lambda: btc_balance(a)[0] == Decimal("1"))
    ok = [d for d in a.fetch_deposits("BTC") if d["status"] == "ok"]
    check_eq("fetch_deposits lists it once, ok", [d["txid"] for d in ok], [txid])
    devnet("mine", "1")
    confirmations_seen(a, txid, 3)
    check_eq("never credited twice", btc_balance(a)[0], Decimal("1"))

    REPORT.label = "trade"
    bid = b.create_order("BTC/JPY", "limit", "buy", 0.1, 10_000_000)
    a.create_order("BTC/JPY", "market", "sell", 0.1)
    filled = b.fetch_order(bid["id"], "BTC/JPY")
    check_eq("the depositor's BTC traded", filled["status"], "closed")
    check_eq("0.9 BTC left", btc_balance(a)[0], Decimal("0.9"))

    REPORT.label = "withdraw"
    outside = os.environ["KURA_E2E_OUTSIDE"]
    w = a.withdraw("BTC", 0.3, outside)
    check("withdraw returns an id", bool(w.get("id")), "an id", w)
    free, used = btc_balance(a)
    check_eq("the amount is held at once", (free, used), (Decimal("0.6"), Decimal("0.3")))
    rows = a.fetch_withdrawals("BTC")
    check_eq("fetch_withdrawals lists it", [r["id"] for r in rows], [w["id"]])
    check_eq("pending until paid", rows[0]["status"], "pending")
    fee = dec(rows[0]["fee"]["cost"])
    check("the fee is shown", fee > 0, "> 0", fee)
    # The batcher signs and broadcasts it; then one block confirms it.
    wait_for("the withdrawal transaction is broadcast", lambda: [
        r for r in a.fetch_withdrawals("BTC") if r["txid"]])
    devnet("mine", "1")
    done = wait_for("settled at its first confirmation", lambda: [
        r for r in a.fetch_withdrawals("BTC") if r["status"] == "ok"])
    check("the settled withdrawal has its txid", len(str(done[0]["txid"])) == 64, "a txid", done[0]["txid"])
    check_eq("the held amount left the books", btc_balance(a), (Decimal("0.6"), Decimal("0")))
    balance = devnet("balance", outside).splitlines()[0]
    expected = (Decimal("0.3") - fee).quantize(Decimal("0.00000001"))
    check_eq("the outside address received it once", balance, f"{expected} BTC confirmed")
    devnet("mine", "2")
    confirmations_seen(a, txid, 6)
    coins = {c["coin"]: c for c in a.sapi_get_capital_config_getall()}
    check_eq("no halt: every spend of our coins was explained by a batch",
             coins["BTC"]["withdrawAllEnable"], True)
    check_eq("never paid twice", devnet("balance", outside).splitlines()[0], f"{expected} BTC confirmed")


def main():
    if ccxt.__version__ != CCXT_VERSION:
        print(f"FAIL  pinned to ccxt {CCXT_VERSION}, found {ccxt.__version__}", file=sys.stderr)
        return 2
    with open(os.environ["KURA_E2E_SERVER_JSON"]) as f:
        rest = json.load(f)["rest"].rstrip("/")
    print(f"ccxt {ccxt.__version__} custody suite against {rest}", flush=True)
    try:
        run(rest)
    except CheckFailed as e:
        print(f"FAIL  [{REPORT.label}] {e}", file=sys.stderr, flush=True)
        print_http_logs()
        return 1
    except Exception as e:  # noqa: BLE001 - an unexpected exception is a failure too
        print(f"FAIL  [{REPORT.label}] unexpected {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        print_http_logs()
        return 1
    print(f"PASS  {REPORT.passed} checks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
