#!/usr/bin/env python3
"""End-to-end suite: unmodified CCXT (ccxt==4.5.90, class `ccxt.binance`) against a
running kura server, with only the URLs pointed at it.

Two customers trade against each other on BTC/JPY and BTC/USD, so every unified call a
trading bot makes is exercised on real fills. Each check prints one line; the first
failure prints what was expected, what came back and the last HTTP exchanges, and
exits 1.

Every amount is compared as `decimal.Decimal`, never as a float: exact values come from
the raw Binance fields (`info`), and CCXT's unified floats are only compared through
their shortest repr. Balances after fills must equal, to the minor unit, the balances
before plus what `fetch_my_trades` reports (quantities, quote quantities, commissions).

Modes:
  full    (default) both CCXT configurations (with options, URLs only), the error
          mapping, and an Ed25519 key when one is given.
  seed    leaves open orders, fills and balances behind and writes them to --state,
          for a restart test.
  verify  after a restart: the open orders, balances, orders and trades in --state are
          all still there, then trading still works.

Inputs (argument, else environment):
  --rest URL          KURA_E2E_REST         REST base, e.g. http://127.0.0.1:8080
  --server-json PATH  KURA_E2E_SERVER_JSON  alternatively, the server's server.json
  --a-key/--a-secret  KURA_E2E_A_KEY/_A_SECRET   HMAC key of the first customer
  --b-key/--b-secret  KURA_E2E_B_KEY/_B_SECRET   HMAC key of the second customer
  --ed-key/--ed-secret-file  KURA_E2E_ED_KEY/_ED_SECRET_FILE   Ed25519 key (PEM file)
                      of the first customer (optional; the check is skipped loudly
                      when absent)
  --credits BTC=2,JPY=50000000,USD=100000   KURA_E2E_CREDITS   if given, both
                      customers must start with exactly these balances
  --state PATH        KURA_E2E_STATE        seed/verify state file
  --keep-going        report every failing check, not only the first (diagnosis)
"""

import argparse
import json
import os
import sys
import time
import traceback
from decimal import ROUND_CEILING, Decimal
from urllib.parse import urlsplit

try:
    import ccxt
except ImportError:  # pragma: no cover - environment problem, not a test failure
    sys.stderr.write(
        "ccxt is not installed for this python; run scripts/e2e-venv and use the "
        "python it prints\n"
    )
    sys.exit(2)

CCXT_VERSION = "4.5.90"

# Market layout the server creates on a fresh data directory.
JPY = "BTC/JPY"
USD = "BTC/USD"
MARKETS = {
    JPY: {"id": "BTCJPY", "tick": Decimal("1"), "lot": Decimal("0.00001"), "min_notional": Decimal("100")},
    USD: {"id": "BTCUSD", "tick": Decimal("0.01"), "lot": Decimal("0.00001"), "min_notional": Decimal("5")},
}
MINOR_UNIT = {"BTC": Decimal("0.00000001"), "JPY": Decimal("1"), "USD": Decimal("0.01")}
ASSETS = ("BTC", "JPY", "USD")
FEE_RATE = Decimal("0.001")  # maker and taker, charged in the quote asset

# Prices are multiples of 100 000 JPY and 1 000 USD, so every fill's notional is an
# exact number of minor units (no rounding between buyer and seller to account for).
P = Decimal("10000000")  # JPY per BTC
P_USD = Decimal("30000")  # USD per BTC

OPTIONS = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
    "fetchOpenOrders": {"warnWithoutSymbol": False},
}


# --------------------------------------------------------------------------- output


class CheckFailed(Exception):
    pass


class Report:
    def __init__(self):
        self.passed = 0
        self.label = ""

    def ok(self, name, detail=""):
        self.passed += 1
        extra = f"  ({detail})" if detail else ""
        print(f"ok    [{self.label}] {name}{extra}", flush=True)

    def note(self, text):
        print(f"note  [{self.label}] {text}", flush=True)


REPORT = Report()
CLIENTS = []  # every exchange instance, for the failure report


KEEP_GOING = []  # with --keep-going: the failures so far (diagnosis only)


def fail(name, expected, got):
    message = f"{name}\n  expected: {expected}\n  got:      {got}"
    if KEEP_GOING:
        KEEP_GOING.append(message)
        print(f"FAIL  [{REPORT.label}] {message}", flush=True)
        print_http_logs(sys.stdout)
        return
    raise CheckFailed(message)


def check(name, cond, expected="", got="", detail=""):
    if not cond:
        return fail(name, expected, got)
    REPORT.ok(name, detail)


def check_eq(name, got, expected, detail=""):
    if got != expected:
        return fail(name, repr(expected), repr(got))
    REPORT.ok(name, detail)


def dec(x):
    """A CCXT value as an exact Decimal: strings as written, floats by shortest repr."""
    if x is None:
        return None
    if isinstance(x, Decimal):
        return x
    if isinstance(x, bool):
        raise TypeError(f"not a number: {x!r}")
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(str(x))


def ceil_to(x, unit):
    return (x / unit).to_integral_value(rounding=ROUND_CEILING) * unit


def expect_error(name, cls, fn):
    """The check is the exception class CCXT raises."""
    try:
        result = fn()
    except cls as e:
        REPORT.ok(name, f"{type(e).__name__}: {short(str(e))}")
        return e
    except Exception as e:  # noqa: BLE001 - the wrong class is the failure
        return fail(name, f"ccxt.{cls.__name__}", f"{type(e).__module__}.{type(e).__name__}: {short(str(e), 400)}")
    return fail(name, f"ccxt.{cls.__name__}", f"no exception; returned {short(repr(result), 400)}")


def short(s, n=160):
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


# ------------------------------------------------------------------------ exchanges


class HttpLog:
    """Keeps the last HTTP exchanges of one client through CCXT's public
    `on_rest_response` hook, for the failure report."""

    def __init__(self, name):
        self.name = name
        self.entries = []

    def hook(self, code, reason, url, method, response_headers, response_body, request_headers, request_body):
        self.entries.append((method, url, request_body, code, response_body))
        del self.entries[:-12]
        return response_body.strip()


def point_at_local(ex, rest):
    """Research §1.4: every REST base to our host, keeping the path; then the
    spot-only error table, which CCXT applies only to binance.com URLs."""
    for key, url in list(ex.urls["api"].items()):
        if isinstance(url, str):
            ex.urls["api"][key] = rest + urlsplit(url).path
    ex.exceptions["exact"].update(ex.exceptions["spot"]["exact"])
    return ex


def make(rest, name, key=None, secret=None, configured=True, options=None):
    config = {"enableRateLimit": True, "timeout": 20000}
    if key is not None:
        config["apiKey"] = key
        config["secret"] = secret
    opts = dict(OPTIONS) if configured else {}
    opts.update(options or {})
    if opts:
        config["options"] = opts
    ex = point_at_local(ccxt.binance(config), rest)
    log = HttpLog(name)
    ex.on_rest_response = log.hook
    ex.http_log = log
    CLIENTS.append(ex)
    return ex


def print_http_logs(out=sys.stderr):
    for ex in CLIENTS[-4:]:
        log = ex.http_log
        if not log.entries:
            continue
        print(f"\nlast requests of client {log.name}:", file=out)
        for method, url, body, code, resp in log.entries[-3:]:
            print(f"  {method} {url}", file=out)
            if body:
                print(f"    body: {body}", file=out)
            print(f"    -> {code} {short(resp or '', 600)}", file=out)


# ------------------------------------------------------------------- raw helpers


def raw_balances(ex):
    """{asset: (free, locked)} as exact Decimals from the raw /api/v3/account answer,
    after checking the unified view agrees with it."""
    bal = ex.fetch_balance()
    rows = bal["info"].get("balances")
    if not isinstance(rows, list):
        fail("fetch_balance: info.balances is a list", "list", repr(bal["info"])[:300])
    out = {}
    for row in rows:
        out[row["asset"]] = (Decimal(row["free"]), Decimal(row["locked"]))
    for asset, (free, locked) in out.items():
        if asset in bal:
            if dec(bal[asset]["free"]) != free or dec(bal[asset]["used"]) != locked or dec(bal[asset]["total"]) != free + locked:
                fail(
                    f"fetch_balance unified {asset} equals the raw balance",
                    f"free={free} used={locked} total={free + locked}",
                    f"free={bal[asset]['free']} used={bal[asset]['used']} total={bal[asset]['total']}",
                )
    for asset in ASSETS:
        out.setdefault(asset, (Decimal(0), Decimal(0)))
    return out


def my_trades(ex, symbol):
    trades = ex.fetch_my_trades(symbol, None, 1000)
    return {str(t["id"]): t for t in trades}


class Ledger:
    """Expected balances of one customer: a snapshot, then every new fill applied from
    the raw myTrades fields (qty, quoteQty, commission, commissionAsset, isBuyer)."""

    def __init__(self, ex, who):
        self.ex = ex
        self.who = who
        self.start = raw_balances(ex)
        self.seen = {s: set(my_trades(ex, s)) for s in MARKETS}

    def new_trades(self):
        out = []
        for s in MARKETS:
            for tid, t in my_trades(self.ex, s).items():
                if tid not in self.seen[s]:
                    out.append(t)
        return out

    def expected_totals(self, trades):
        total = {a: free + locked for a, (free, locked) in self.start.items()}
        for t in trades:
            info = t["info"]
            base, quote = t["symbol"].split("/")
            qty = Decimal(info["qty"])
            quote_qty = Decimal(info["quoteQty"])
            commission = Decimal(info["commission"])
            buyer = info["isBuyer"] in (True, "true")
            total[base] += qty if buyer else -qty
            total[quote] += -quote_qty if buyer else quote_qty
            total[info["commissionAsset"]] -= commission
        return total

    def verify(self, label, open_locked=None):
        """Balances now equal the snapshot plus the new fills; nothing is held unless
        `open_locked` says so ({asset: amount held by still-open orders})."""
        trades = self.new_trades()
        self.check_trades(trades)
        expected = self.expected_totals(trades)
        now = raw_balances(self.ex)
        for asset in ASSETS:
            free, locked = now[asset]
            want_locked = (open_locked or {}).get(asset, Decimal(0))
            if free + locked != expected[asset] or locked != want_locked:
                fail(
                    f"{label}: {self.who} {asset} balance equals credits + fills - fees",
                    f"total={expected[asset]} locked={want_locked} "
                    f"(start {self.start[asset][0] + self.start[asset][1]}, {len(trades)} new fills)",
                    f"free={free} locked={locked} total={free + locked}",
                )
        REPORT.ok(
            f"{label}: {self.who} balances equal start + fills - fees to the minor unit",
            ", ".join(f"{a}={now[a][0] + now[a][1]}" for a in ASSETS),
        )
        return trades

    def check_trades(self, trades):
        """Each fill is exact (quoteQty = price x qty), fees are in the quote asset and
        each order's fees are 0.1% of its notional rounded up to the minor unit."""
        per_order = {}
        for t in trades:
            info = t["info"]
            base, quote = t["symbol"].split("/")
            price, qty, quote_qty = Decimal(info["price"]), Decimal(info["qty"]), Decimal(info["quoteQty"])
            if price * qty != quote_qty:
                fail(f"myTrades {t['id']}: quoteQty = price x qty", price * qty, quote_qty)
            if info["commissionAsset"] != quote:
                fail(f"myTrades {t['id']}: commission is charged in the quote asset", quote, info["commissionAsset"])
            if dec(t["amount"]) != qty or dec(t["price"]) != price or dec(t["cost"]) != quote_qty:
                fail(
                    f"myTrades {t['id']}: unified amount/price/cost equal the raw fields",
                    f"{qty} {price} {quote_qty}",
                    f"{t['amount']} {t['price']} {t['cost']}",
                )
            fee = t.get("fee") or {}
            if fee.get("currency") != quote or dec(fee.get("cost")) != Decimal(info["commission"]):
                fail(f"myTrades {t['id']}: unified fee", f"{info['commission']} {quote}", repr(fee))
            want_side = "buy" if info["isBuyer"] in (True, "true") else "sell"
            if t["side"] != want_side:
                fail(f"myTrades {t['id']}: side", want_side, t["side"])
            agg = per_order.setdefault((t["symbol"], str(t["order"])), [Decimal(0), Decimal(0), quote])
            agg[0] += quote_qty
            agg[1] += Decimal(info["commission"])
        for (symbol, order), (notional, commission, quote) in per_order.items():
            want = ceil_to(notional * FEE_RATE, MINOR_UNIT[quote])
            if commission != want:
                fail(
                    f"order {order} on {symbol}: fees are 0.1% of the notional, rounded up",
                    f"{want} {quote} (notional {notional})",
                    f"{commission} {quote}",
                )
        if trades:
            REPORT.ok(f"{self.who}: {len(trades)} fills exact, fees 0.1% in the quote asset")


def cancel_everything(ex):
    for s in MARKETS:
        if ex.fetch_open_orders(s):
            ex.cancel_all_orders(s)


def check_order(name, order, **want):
    """Compare unified order fields; Decimal for numbers."""
    for field, expected in want.items():
        got = order.get(field)
        if isinstance(expected, Decimal):
            got = dec(got)
        if got != expected:
            return fail(f"{name}: {field}", repr(expected), f"{got!r} (order {short(repr(order.get('info')), 500)})")
    REPORT.ok(name, ", ".join(f"{k}={v}" for k, v in want.items()))


# --------------------------------------------------------------------------- phases


def public_phase(ex, configured):
    markets = ex.load_markets()
    for symbol, spec in MARKETS.items():
        m = markets.get(symbol)
        if m is None:
            fail(f"load_markets has {symbol}", symbol, sorted(markets))
        if (
            m["id"] != spec["id"]
            or m["spot"] is not True
            or m["active"] is not True
            or dec(m["precision"]["amount"]) != spec["lot"]
            or dec(m["precision"]["price"]) != spec["tick"]
            or dec(m["limits"]["amount"]["min"]) != spec["lot"]
            or dec((m["limits"]["cost"] or {}).get("min")) != spec["min_notional"]
        ):
            fail(
                f"load_markets {symbol}",
                f"id {spec['id']}, spot, active, amount step {spec['lot']}, tick {spec['tick']}, min notional {spec['min_notional']}",
                f"id {m['id']} spot {m['spot']} active {m['active']} precision {m['precision']} limits {m['limits']}",
            )
        REPORT.ok(f"load_markets {symbol}", f"tick {spec['tick']}, lot {spec['lot']}, min notional {spec['min_notional']}")
    t = ex.fetch_time()
    now = int(time.time() * 1000)
    check("fetch_time is the server clock (within 60 s)", isinstance(t, int) and abs(t - now) < 60000, now, t)


def trading_phase(a, b, tag, configured):
    """Customer 1 (a) sells, customer 2 (b) buys and then sells into a's bid; every
    unified order call on real fills."""
    for ex in (a, b):
        cancel_everything(ex)
    la, lb = Ledger(a, "customer1"), Ledger(b, "customer2")

    # Resting limit sell, and its hold.
    o1 = a.create_order(JPY, "limit", "sell", 0.01, float(P))
    check_order("create_order limit sell (GTC) rests", o1, status="open", type="limit", side="sell",
                price=P, amount=Decimal("0.01"), filled=Decimal(0), remaining=Decimal("0.01"))
    check("create_order returns an id and CCXT's clientOrderId", bool(o1["id"]) and bool(o1["clientOrderId"]),
          "non-empty id, clientOrderId", f"{o1['id']!r} {o1['clientOrderId']!r}")
    free, locked = raw_balances(a)["BTC"]
    check_eq("limit sell holds its quantity (BTC locked)", locked, la.start["BTC"][1] + Decimal("0.01"))

    # Post-only that rests, and one that would take.
    p2 = P + 100000
    o2 = a.create_order(JPY, "limit", "sell", 0.005, float(p2), {"postOnly": True})
    check_order("create_order post-only (LIMIT_MAKER) rests", o2, status="open", type="limit",
                postOnly=True, price=p2, amount=Decimal("0.005"))
    expect_error("post-only that would take -> OrderImmediatelyFillable", ccxt.OrderImmediatelyFillable,
                 lambda: b.create_order(JPY, "limit", "buy", 0.001, float(P), {"postOnly": True}))

    ob = b.fetch_order_book(JPY)
    asks = [(dec(p), dec(q)) for p, q in ob["asks"][:2]]
    check_eq("fetch_order_book: the two asks, best first", asks, [(P, Decimal("0.01")), (p2, Decimal("0.005"))])
    check("fetch_order_book: no bid at or above the best ask", all(dec(p) < P for p, _ in ob["bids"]),
          f"bids below {P}", ob["bids"][:3])
    check("fetch_order_book: nonce is lastUpdateId", isinstance(ob["nonce"], int), "an integer", ob["nonce"])
    ob5 = b.fetch_order_book(JPY, 5)
    check("fetch_order_book(limit=5) returns at most 5 levels a side",
          len(ob5["asks"]) <= 5 and len(ob5["bids"]) <= 5, "<= 5", (len(ob5["asks"]), len(ob5["bids"])))

    # IOC with our clientOrderId, fully filled.
    cid = f"e2e-{tag}-ioc-{int(time.time() * 1000) % 10**9}"
    o3 = b.create_order(JPY, "limit", "buy", 0.004, float(P), {"timeInForce": "IOC", "clientOrderId": cid})
    check_order("create_order IOC with clientOrderId fills", o3, status="closed", clientOrderId=cid,
                timeInForce="IOC", filled=Decimal("0.004"), remaining=Decimal(0), cost=Decimal("40000"),
                average=P)
    fee3 = o3.get("fee") or {}
    check("IOC fill: fee 0.1% in JPY from FULL fills",
          fee3.get("currency") == "JPY" and dec(fee3.get("cost")) == Decimal("40"),
          "40 JPY", repr(fee3))

    # IOC larger than the level: the rest expires.
    o4 = b.create_order(JPY, "limit", "buy", 0.02, float(P), {"timeInForce": "IOC"})
    check_order("create_order IOC partly filled, rest expires", o4, status="expired",
                filled=Decimal("0.006"), remaining=Decimal("0.014"), cost=Decimal("60000"))

    # Market buy by amount.
    o5 = b.create_order(JPY, "market", "buy", 0.002)
    check_order("create_order market buy by amount", o5, status="closed", type="market",
                filled=Decimal("0.002"), cost=Decimal("20200"), average=p2)

    # Market buy by cost (quoteOrderQty).
    budget = Decimal("10100")
    o6 = b.create_market_buy_order_with_cost(JPY, float(budget))
    f6 = dec(o6["filled"])
    check("create_market_buy_order_with_cost fills within the budget",
          o6["status"] == "closed" and Decimal(0) < f6 <= Decimal("0.001") and dec(o6["cost"]) == f6 * p2
          and dec(o6["cost"]) <= budget,
          f"closed, 0 < filled <= 0.001 at {p2}, cost <= {budget}",
          f"status {o6['status']} filled {o6['filled']} cost {o6['cost']}")
    check_eq("quoteOrderQty echoed as origQuoteOrderQty",
             Decimal(o6["info"].get("origQuoteOrderQty", "0")), budget)

    # Customer 2 bids; customer 1 sells into it at market.
    p7 = P - 100000
    o7 = b.create_order(JPY, "limit", "buy", 0.003, float(p7))
    check_order("create_order limit buy rests", o7, status="open", side="buy", price=p7)
    o8 = a.create_order(JPY, "market", "sell", 0.001)
    check_order("create_order market sell by amount", o8, status="closed", side="sell",
                filled=Decimal("0.001"), cost=Decimal("9900"), average=p7)

    # Queries.
    q1 = a.fetch_order(o1["id"], JPY)
    check_order("fetch_order by id", q1, id=o1["id"], status="closed", filled=Decimal("0.01"),
                cost=Decimal("100000"), price=P)
    q3 = b.fetch_order(None, JPY, {"clientOrderId": cid})
    check_order("fetch_order by clientOrderId", q3, id=o3["id"], clientOrderId=cid, status="closed",
                filled=Decimal("0.004"))

    open_a = a.fetch_open_orders(JPY)
    o2_filled = Decimal("0.002") + f6
    check_eq("fetch_open_orders (customer1): the post-only remainder",
             [(o["id"], dec(o["filled"]), o["status"]) for o in open_a], [(o2["id"], o2_filled, "open")])
    open_b = b.fetch_open_orders(JPY)
    check_eq("fetch_open_orders (customer2): the partly filled bid",
             [(o["id"], dec(o["filled"]), dec(o["remaining"])) for o in open_b],
             [(o7["id"], Decimal("0.001"), Decimal("0.002"))])
    if configured:
        all_open = a.fetch_open_orders()
        check_eq("fetch_open_orders without a symbol", [(o["id"], o["symbol"]) for o in all_open], [(o2["id"], JPY)])

    mine = {o["id"]: o for o in b.fetch_orders(JPY, None, 1000)}
    want = {o3["id"]: "closed", o4["id"]: "expired", o5["id"]: "closed", o6["id"]: "closed", o7["id"]: "open"}
    check_eq("fetch_orders: every order of this phase with its status",
             {i: mine[i]["status"] if i in mine else None for i in want}, want)
    check_eq("fetch_orders: filled quantities",
             [dec(mine[i]["filled"]) for i in (o3["id"], o4["id"], o5["id"])],
             [Decimal("0.004"), Decimal("0.006"), Decimal("0.002")])
    closed = b.fetch_closed_orders(JPY, None, 1000)
    closed_ids = {o["id"] for o in closed}
    check("fetch_closed_orders: the filled orders, not the open or expired ones",
          {o3["id"], o5["id"], o6["id"]} <= closed_ids and o7["id"] not in closed_ids and o4["id"] not in closed_ids
          and all(o["status"] == "closed" for o in closed),
          f"{o3['id']}, {o5['id']}, {o6['id']} present; {o7['id']}, {o4['id']} absent",
          sorted((o["id"], o["status"]) for o in closed)[-8:])

    # Cancels.
    c2 = a.cancel_order(o2["id"], JPY)
    check_order("cancel_order", c2, id=o2["id"], status="canceled")
    check_order("fetch_order after cancel keeps the fills", a.fetch_order(o2["id"], JPY),
                status="canceled", filled=o2_filled)
    expect_error("cancel_order of a canceled order -> OrderNotFound", ccxt.OrderNotFound,
                 lambda: a.cancel_order(o2["id"], JPY))
    o9 = b.create_order(JPY, "limit", "buy", 0.001, float(P - 200000))
    cancelled = b.cancel_all_orders(JPY)
    check_eq("cancel_all_orders cancels both open bids",
             sorted((o["id"], o["status"]) for o in cancelled),
             sorted([(o7["id"], "canceled"), (o9["id"], "canceled")]))
    check_eq("fetch_open_orders after cancel_all_orders", b.fetch_open_orders(JPY), [])

    # A two-decimal quote asset.
    u1 = a.create_order(USD, "limit", "sell", 0.01, float(P_USD))
    u2 = b.create_order(USD, "market", "buy", 0.004)
    check_order("BTC/USD market buy", u2, status="closed", filled=Decimal("0.004"), cost=Decimal("120"),
                average=P_USD)
    fee_u2 = u2.get("fee") or {}
    check("BTC/USD fee 0.12 USD", fee_u2.get("currency") == "USD" and dec(fee_u2.get("cost")) == Decimal("0.12"),
          "0.12 USD", repr(fee_u2))
    a.cancel_order(u1["id"], USD)

    # Market data after the fills.
    trades = b.fetch_trades(JPY)
    last = trades[-1] if trades else None
    check("fetch_trades: newest is the market sell at the bid",
          last is not None and dec(last["price"]) == p7 and dec(last["amount"]) == Decimal("0.001")
          and last["side"] == "sell",
          f"price {p7} amount 0.001 side sell",
          None if last is None else (last["price"], last["amount"], last["side"]))
    prev = trades[-2] if len(trades) > 1 else None
    check("fetch_trades: before it, the buy by cost",
          prev is not None and dec(prev["price"]) == p2 and dec(prev["amount"]) == f6 and prev["side"] == "buy",
          f"price {p2} amount {f6} side buy",
          None if prev is None else (prev["price"], prev["amount"], prev["side"]))
    ts = [t["timestamp"] for t in trades]
    check("fetch_trades: oldest first", ts == sorted(ts), "ascending timestamps", ts[-5:])

    candles = b.fetch_ohlcv(JPY, "1m")
    check("fetch_ohlcv 1m: candles", len(candles) >= 1, ">= 1 candle", len(candles))
    ok_shape = all(
        c[0] % 60000 == 0 and dec(c[3]) <= min(dec(c[1]), dec(c[4])) and max(dec(c[1]), dec(c[4])) <= dec(c[2])
        and dec(c[5]) >= 0
        for c in candles
    )
    check("fetch_ohlcv: minute-aligned, low <= open/close <= high", ok_shape, "well-formed rows", candles[-3:])
    check("fetch_ohlcv: ascending open times", [c[0] for c in candles] == sorted({c[0] for c in candles}),
          "strictly ascending", [c[0] for c in candles][-5:])
    check("fetch_ohlcv: last candle closes at the last trade",
          dec(candles[-1][4]) == p7 and dec(candles[-1][5]) > 0, f"close {p7}, volume > 0", candles[-1])

    tk = b.fetch_ticker(JPY)
    check("fetch_ticker: last trade, 24h range covers the fills",
          tk["symbol"] == JPY and dec(tk["last"]) == p7 and dec(tk["high"]) >= p2 and dec(tk["low"]) <= p7
          and dec(tk["baseVolume"]) >= Decimal("0.013") + f6,
          f"symbol {JPY}, last {p7}, high >= {p2}, low <= {p7}, baseVolume >= {Decimal('0.013') + f6}",
          {k: tk.get(k) for k in ("symbol", "last", "high", "low", "baseVolume")})
    tks = b.fetch_tickers()
    check("fetch_tickers: every market", {JPY, USD} <= set(tks), f"{JPY}, {USD}", sorted(tks))
    check_eq("fetch_tickers([BTC/JPY]): just that market", sorted(b.fetch_tickers([JPY])), [JPY])

    # The books are empty of our orders; the balances are what the fills imply.
    for ex in (a, b):
        cancel_everything(ex)
    ta = la.verify("after trading")
    tb = lb.verify("after trading")
    check_eq("both sides saw the same number of fills", len(ta), len(tb))
    makers = {str(t["order"]) for t in ta if t["takerOrMaker"] == "maker"}
    check("customer1's resting orders filled as maker, its market sell as taker",
          {str(o1["id"]), str(o2["id"])} <= makers
          and all(t["takerOrMaker"] == "taker" for t in ta if str(t["order"]) == str(o8["id"])),
          "maker for o1/o2, taker for o8", [(t["order"], t["takerOrMaker"]) for t in ta])


def error_phase(rest, a, b, keys, configured):
    """The exception class is the assertion (research §3.3)."""
    cancel_everything(a)
    cancel_everything(b)
    la, lb = Ledger(a, "customer1"), Ledger(b, "customer2")
    btc_free = la.start["BTC"][0]
    market = a.market(JPY)
    too_much = btc_free + 1
    max_qty = dec(market["limits"]["amount"]["max"])
    check("InsufficientFunds case fits LOT_SIZE maxQty", max_qty is None or too_much <= max_qty,
          f"{too_much} <= maxQty", max_qty)
    expect_error("sell more BTC than the balance -> InsufficientFunds", ccxt.InsufficientFunds,
                 lambda: a.create_order(JPY, "limit", "sell", float(too_much), float(P)))
    jpy_free = lb.start["JPY"][0]
    qty = (jpy_free / P).quantize(Decimal("0.00001")) + 1
    expect_error("buy for more JPY than the balance -> InsufficientFunds", ccxt.InsufficientFunds,
                 lambda: b.create_order(JPY, "limit", "buy", float(qty), float(P)))

    expect_error("cancel_order unknown id -> OrderNotFound", ccxt.OrderNotFound,
                 lambda: a.cancel_order("987654321", JPY))
    expect_error("fetch_order unknown id -> OrderNotFound", ccxt.OrderNotFound,
                 lambda: a.fetch_order("987654321", JPY))
    expect_error("fetch_order unknown clientOrderId -> OrderNotFound", ccxt.OrderNotFound,
                 lambda: a.fetch_order(None, JPY, {"clientOrderId": "e2e-no-such-order"}))
    theirs = a.create_order(JPY, "limit", "sell", 0.001, float(P + 500000))
    expect_error("cancel_order of another customer's order -> OrderNotFound", ccxt.OrderNotFound,
                 lambda: b.cancel_order(theirs["id"], JPY))
    expect_error("fetch_order of another customer's order -> OrderNotFound", ccxt.OrderNotFound,
                 lambda: b.fetch_order(theirs["id"], JPY))
    check_order("the other customer's order is untouched", a.fetch_order(theirs["id"], JPY), status="open")
    a.cancel_order(theirs["id"], JPY)

    expect_error("GET /api/v3/depth?symbol=NOPE -> BadSymbol", ccxt.BadSymbol,
                 lambda: b.publicGetDepth({"symbol": "NOPE"}))
    expect_error("POST /api/v3/order symbol=NOPE -> BadSymbol", ccxt.BadSymbol,
                 lambda: a.privatePostOrder({"symbol": "NOPE", "side": "SELL", "type": "LIMIT",
                                             "timeInForce": "GTC", "quantity": "0.001", "price": str(P)}))
    expect_error("GET /api/v3/openOrders symbol=NOPE -> BadSymbol", ccxt.BadSymbol,
                 lambda: a.privateGetOpenOrders({"symbol": "NOPE"}))

    def raw_order(symbol_id, quantity, price):
        return lambda: a.privatePostOrder({"symbol": symbol_id, "side": "SELL", "type": "LIMIT",
                                           "timeInForce": "GTC", "quantity": quantity, "price": price})

    expect_error("quantity below LOT_SIZE minQty (0.000001) -> InvalidOrder", ccxt.InvalidOrder,
                 raw_order("BTCJPY", "0.000001", str(P)))
    expect_error("quantity off the LOT_SIZE step (0.000015) -> InvalidOrder", ccxt.InvalidOrder,
                 raw_order("BTCJPY", "0.000015", str(P)))
    max_price = dec(market["limits"]["price"]["max"])
    check("PRICE_FILTER maxPrice is advertised", max_price is not None, "a maxPrice", market["limits"]["price"])
    expect_error("price above PRICE_FILTER maxPrice -> InvalidOrder", ccxt.InvalidOrder,
                 raw_order("BTCJPY", "0.001", str(max_price + 1)))
    # Both markets' ticks are their quote asset's minor unit, so a price off the tick
    # has more decimals than the asset (quotePrecision 0 and 2): Binance answers that
    # with -1111 "Parameter 'price' has too much precision.", which CCXT maps to
    # BadRequest, before any filter.
    expect_error("price finer than JPY's precision (10000000.5) -> BadRequest (-1111)", ccxt.BadRequest,
                 raw_order("BTCJPY", "0.001", "10000000.5"))
    expect_error("price finer than USD's precision (30000.005) -> BadRequest (-1111)", ccxt.BadRequest,
                 raw_order("BTCUSD", "0.001", "30000.005"))
    expect_error("notional below 100 JPY -> BadRequest (Filter failure: NOTIONAL)", ccxt.BadRequest,
                 raw_order("BTCJPY", "0.00001", "1000000"))

    expect_error("wrong secret -> AuthenticationError", ccxt.AuthenticationError,
                 lambda: make(rest, "wrong-secret", keys["a_key"], "0" * 64, configured).fetch_balance())
    expect_error("unknown API key -> AuthenticationError", ccxt.AuthenticationError,
                 lambda: make(rest, "unknown-key", "A" * 64, keys["a_secret"], configured).fetch_balance())
    expect_error("timestamp 120 s old -> InvalidNonce", ccxt.InvalidNonce,
                 lambda: make(rest, "old-ts", keys["a_key"], keys["a_secret"], configured,
                              {"timeDifference": 120000}).fetch_balance())
    expect_error("timestamp 120 s ahead -> InvalidNonce", ccxt.InvalidNonce,
                 lambda: make(rest, "future-ts", keys["a_key"], keys["a_secret"], configured,
                              {"timeDifference": -120000}).fetch_balance())

    la.verify("after rejected requests")
    lb.verify("after rejected requests")


def ed25519_phase(rest, keys):
    # CCXT signs with Ed25519 only for a secret containing "PRIVATE KEY" of at most 120
    # characters; a longer one is taken for RSA. That is the RFC 8410 PKCS#8 v1 form
    # (48 DER bytes: version 0, no public key), as `openssl genpkey -algorithm ed25519`
    # writes it.
    secret = keys["ed_secret"]
    check("Ed25519 secret is a PKCS#8 v1 PEM CCXT signs with (<= 120 characters)",
          "-----BEGIN PRIVATE KEY-----" in secret and len(secret) <= 120,
          "-----BEGIN PRIVATE KEY----- ... of <= 120 characters (DER 302e020100300506032b657004220420 + 32-byte seed)",
          f"{len(secret)} characters: {secret!r}")
    ed = make(rest, "customer1-ed25519", keys["ed_key"], keys["ed_secret"], True)
    b = make(rest, "customer2", keys["b_key"], keys["b_secret"], True)
    ed.load_markets()
    b.load_markets()
    cancel_everything(ed)
    cancel_everything(b)
    le, lb = Ledger(ed, "customer1 (Ed25519 key)"), Ledger(b, "customer2")
    o = ed.create_order(JPY, "limit", "sell", 0.002, float(P + 300000))
    check_order("Ed25519: create_order limit sell rests", o, status="open")
    check_order("Ed25519: fetch_order", ed.fetch_order(o["id"], JPY), id=o["id"], status="open")
    m = b.create_order(JPY, "market", "buy", 0.001)
    check_order("Ed25519 customer's order fills", m, filled=Decimal("0.001"), average=P + 300000)
    check_order("Ed25519: cancel_order", ed.cancel_order(o["id"], JPY), status="canceled",
                filled=Decimal("0.001"))
    le.verify("Ed25519")
    lb.verify("Ed25519")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    expect_error("Ed25519 signature by another key -> AuthenticationError", ccxt.AuthenticationError,
                 lambda: make(rest, "ed25519-wrong", keys["ed_key"], other, True).fetch_balance())


def run_full(rest, keys, credits):
    for configured, label in ((True, "options"), (False, "urls-only")):
        REPORT.label = label
        a = make(rest, f"customer1/{label}", keys["a_key"], keys["a_secret"], configured)
        b = make(rest, f"customer2/{label}", keys["b_key"], keys["b_secret"], configured)
        public = make(rest, f"public/{label}", configured=configured)
        public_phase(public, configured)
        a.load_markets()
        b.load_markets()
        paths = [urlsplit(e[1]).path for e in a.http_log.entries]
        if configured:
            check_eq("signed load_markets with the options: only exchangeInfo", paths, ["/api/v3/exchangeInfo"])
        else:
            check("signed load_markets, URLs only: served the wallet and futures stubs",
                  "/sapi/v1/capital/config/getall" in paths and "/fapi/v1/exchangeInfo" in paths,
                  "capital/config/getall, margin/allPairs, fapi/dapi exchangeInfo answered", paths)
        if credits is not None and configured:
            for ex, who in ((a, "customer1"), (b, "customer2")):
                bal = raw_balances(ex)
                check_eq(f"{who} starts with the credited balances",
                         {k: bal[k][0] + bal[k][1] for k in credits}, credits)
        trading_phase(a, b, "o" if configured else "u", configured)
        error_phase(rest, a, b, keys, configured)
    REPORT.label = "ed25519"
    if keys.get("ed_key"):
        ed25519_phase(rest, keys)
    else:
        REPORT.note("no Ed25519 key given (--ed-key/--ed-secret-file): Ed25519 signing NOT checked")


# --------------------------------------------------------------- restart support


def order_view(o):
    return {"status": o["status"], "filled": str(dec(o["filled"])), "amount": str(dec(o["amount"]))}


def snapshot_state(a, b):
    state = {}
    for ex, who in ((a, "customer1"), (b, "customer2")):
        bal = raw_balances(ex)
        state[who] = {
            "balances": {k: [str(v[0]), str(v[1])] for k, v in bal.items() if k in ASSETS},
            "open": {s: sorted(o["id"] for o in ex.fetch_open_orders(s)) for s in MARKETS},
            "orders": {s: {o["id"]: order_view(o) for o in ex.fetch_orders(s, None, 1000)} for s in MARKETS},
            "trades": {s: sorted(my_trades(ex, s)) for s in MARKETS},
        }
    return state


def run_seed(rest, keys, state_path):
    REPORT.label = "seed"
    a = make(rest, "customer1", keys["a_key"], keys["a_secret"], True)
    b = make(rest, "customer2", keys["b_key"], keys["b_secret"], True)
    a.load_markets()
    b.load_markets()
    o1 = a.create_order(JPY, "limit", "sell", 0.01, float(P))
    b.create_order(JPY, "market", "buy", 0.004)
    a.create_order(JPY, "limit", "sell", 0.002, float(P + 100000), {"postOnly": True})
    b.create_order(JPY, "limit", "buy", 0.003, float(P - 100000))
    b.create_order(USD, "limit", "buy", 0.001, float(P_USD - 1000))
    check_order("seed: a partly filled resting order", a.fetch_order(o1["id"], JPY),
                status="open", filled=Decimal("0.004"))
    state = snapshot_state(a, b)
    # The very last acknowledged command before the kill: it must survive too.
    last = a.create_order(JPY, "limit", "sell", 0.001, float(P + 200000))
    state["customer1"]["open"][JPY] = sorted(state["customer1"]["open"][JPY] + [last["id"]])
    state["customer1"]["orders"][JPY][last["id"]] = order_view(last)
    bal = dict(state["customer1"]["balances"])
    free, locked = (Decimal(x) for x in bal["BTC"])
    bal["BTC"] = [str(free - Decimal("0.001")), str(locked + Decimal("0.001"))]
    state["customer1"]["balances"] = bal
    with open(state_path + ".tmp", "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(state_path + ".tmp", state_path)
    REPORT.ok("seed: state written", state_path)


def run_verify(rest, keys, state_path):
    REPORT.label = "after restart"
    with open(state_path) as f:
        before = json.load(f)
    a = make(rest, "customer1", keys["a_key"], keys["a_secret"], True)
    b = make(rest, "customer2", keys["b_key"], keys["b_secret"], True)
    a.load_markets()
    b.load_markets()
    now = snapshot_state(a, b)
    for who in ("customer1", "customer2"):
        was, got = before[who], now[who]
        check_eq(f"{who}: balances survived (free, locked)",
                 {k: [str(Decimal(x)) for x in v] for k, v in got["balances"].items()},
                 {k: [str(Decimal(x)) for x in v] for k, v in was["balances"].items()})
        check_eq(f"{who}: open orders survived", got["open"], was["open"])
        for s in MARKETS:
            check_eq(f"{who}: fetch_orders {s} (read model) has every order with its state",
                     {i: got["orders"][s].get(i) for i in was["orders"][s]}, was["orders"][s])
            check_eq(f"{who}: fetch_my_trades {s} (read model) has every fill and no other",
                     got["trades"][s], was["trades"][s])
    # The node trades after recovery, and the ledger still adds up.
    la, lb = Ledger(a, "customer1"), Ledger(b, "customer2")
    m = b.create_order(JPY, "market", "buy", 0.002)
    check_order("after restart: a market buy fills against the recovered book", m, status="closed",
                filled=Decimal("0.002"), average=P)
    for ex in (a, b):
        cancel_everything(ex)
    la.verify("after restart")
    lb.verify("after restart")


# ------------------------------------------------------------------------- main


def parse_args(argv):
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("full", "seed", "verify"), default=env("KURA_E2E_MODE", "full"))
    p.add_argument("--rest", default=env("KURA_E2E_REST"))
    p.add_argument("--server-json", default=env("KURA_E2E_SERVER_JSON"))
    p.add_argument("--a-key", default=env("KURA_E2E_A_KEY"))
    p.add_argument("--a-secret", default=env("KURA_E2E_A_SECRET"))
    p.add_argument("--b-key", default=env("KURA_E2E_B_KEY"))
    p.add_argument("--b-secret", default=env("KURA_E2E_B_SECRET"))
    p.add_argument("--ed-key", default=env("KURA_E2E_ED_KEY"))
    p.add_argument("--ed-secret-file", default=env("KURA_E2E_ED_SECRET_FILE"))
    p.add_argument("--credits", default=env("KURA_E2E_CREDITS"))
    p.add_argument("--state", default=env("KURA_E2E_STATE"))
    p.add_argument("--keep-going", action="store_true",
                   help="diagnosis: report every failing check instead of stopping at the first")
    args = p.parse_args(argv)
    if not args.rest and args.server_json:
        with open(args.server_json) as f:
            args.rest = json.load(f)["rest"]
    if not args.rest:
        p.error("--rest or --server-json (or KURA_E2E_REST / KURA_E2E_SERVER_JSON) is required")
    args.rest = args.rest.rstrip("/")
    for name in ("a_key", "a_secret", "b_key", "b_secret"):
        if not getattr(args, name):
            p.error(f"--{name.replace('_', '-')} (or KURA_E2E_{name.upper()}) is required")
    if args.mode in ("seed", "verify") and not args.state:
        p.error("--state is required for seed and verify")
    if bool(args.ed_key) != bool(args.ed_secret_file):
        p.error("--ed-key and --ed-secret-file go together")
    return args


def main(argv):
    args = parse_args(argv)
    if ccxt.__version__ != CCXT_VERSION:
        print(f"FAIL  this suite is pinned to ccxt {CCXT_VERSION}, found {ccxt.__version__}; "
              f"run scripts/e2e-venv", file=sys.stderr)
        return 2
    keys = {"a_key": args.a_key, "a_secret": args.a_secret, "b_key": args.b_key, "b_secret": args.b_secret}
    if args.ed_key:
        with open(args.ed_secret_file) as f:
            keys["ed_key"], keys["ed_secret"] = args.ed_key, f.read()
    credits = None
    if args.credits:
        credits = {k: Decimal(v) for k, v in (kv.split("=", 1) for kv in args.credits.split(","))}
    if args.keep_going:
        KEEP_GOING.append(None)
    print(f"ccxt {ccxt.__version__} against {args.rest} (mode {args.mode})", flush=True)
    try:
        if args.mode == "full":
            run_full(args.rest, keys, credits)
        elif args.mode == "seed":
            run_seed(args.rest, keys, args.state)
        else:
            run_verify(args.rest, keys, args.state)
    except CheckFailed as e:
        print(f"FAIL  [{REPORT.label}] {e}", file=sys.stderr, flush=True)
        print_http_logs()
        return 1
    except Exception as e:  # noqa: BLE001 - an unexpected exception is a failure too
        print(f"FAIL  [{REPORT.label}] unexpected {type(e).__module__}.{type(e).__name__}: {short(str(e), 800)}",
              file=sys.stderr, flush=True)
        traceback.print_exc()
        print_http_logs()
        return 1
    failures = [f for f in KEEP_GOING if f is not None]
    if failures:
        print(f"FAILED  {len(failures)} checks failed, {REPORT.passed} passed", file=sys.stderr, flush=True)
        return 1
    print(f"PASS  {REPORT.passed} checks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
