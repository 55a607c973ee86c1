#!/usr/bin/env python3
"""End-to-end suite for the WebSocket streams: unmodified CCXT Pro (ccxt==4.5.90, class
`ccxt.pro.binance`) against a running kura server, with only the URLs pointed at it.

Two customers trade BTC/JPY through REST while CCXT Pro watches:
  - watch_order_book stays in sync (Binance's snapshot + diff recipe, which CCXT
    enforces with ChecksumError) while the second customer places and cancels about
    50 orders, and the watched book then equals fetch_order_book level for level;
  - watch_trades, watch_ohlcv('1m') and watch_ticker see the customers' trade;
  - watch_balance, watch_orders and watch_my_trades (user data over the WS-API,
    userDataStream.subscribe.signature) see the first customer's order go open ->
    closed, the fill with the same id and fee as fetch_my_trades, and the balance
    fetch_balance reports; then another order filled in two parts (open with filled
    and remaining after each, each fill in watch_my_trades) and its rest canceled;
  - a depth update id lost on its way into the client is detected (ChecksumError),
    and watching again resynchronises.

Every wait has a deadline. Each check prints one line; the first failure prints what
was expected, what came back and the last WebSocket frames, and exits 1.

Inputs (argument, else environment):
  --server-json PATH  KURA_E2E_SERVER_JSON  the server's server.json (rest and ws)
  --rest URL / --ws URL  KURA_E2E_REST / KURA_E2E_WS   instead of --server-json
  --a-key/--a-secret  KURA_E2E_A_KEY/_A_SECRET   HMAC key of the first customer
  --b-key/--b-secret  KURA_E2E_B_KEY/_B_SECRET   HMAC key of the second customer
"""

import argparse
import asyncio
import collections
import json
import os
import sys
import time
import traceback
from decimal import Decimal
from urllib.parse import urlsplit

try:
    import ccxt
    import ccxt.pro
except ImportError:  # pragma: no cover - environment problem, not a test failure
    sys.stderr.write(
        "ccxt is not installed for this python; run scripts/e2e-venv and use the "
        "python it prints\n"
    )
    sys.exit(2)

CCXT_VERSION = "4.5.90"

JPY = "BTC/JPY"
P = Decimal("10000000")  # JPY per BTC, the middle of the book
TRADE_PRICE = Decimal("10012000")  # the price of the watched trade
TRADE_QTY = Decimal("0.002")
STEP = Decimal("1000")

# How long one awaited event may take; generous, events normally arrive in ms.
WAIT = 15.0

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


PASSED = [0]
CLIENTS = []


def ok(name, detail=""):
    PASSED[0] += 1
    extra = f"  ({detail})" if detail else ""
    print(f"ok    {name}{extra}", flush=True)


def fail(name, expected, got):
    raise CheckFailed(f"{name}\n  expected: {expected}\n  got:      {got}")


def check(name, cond, expected="", got="", detail=""):
    if not cond:
        fail(name, expected, got)
    ok(name, detail)


def check_eq(name, got, expected, detail=""):
    if got != expected:
        fail(name, repr(expected), repr(got))
    ok(name, detail)


def dec(x):
    """A CCXT value as an exact Decimal: strings as written, floats by shortest repr."""
    if x is None:
        return None
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(str(x))


def short(s, n=300):
    s = str(s).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


# ------------------------------------------------------------------------ exchanges


class Recorded(ccxt.pro.binance):
    """`ccxt.pro.binance` unchanged, except that every incoming WebSocket frame is
    also kept (the last ones per connection) for the failure report and so the suite
    can tell when a SUBSCRIBE was acknowledged; and that the gap phase can make the
    client lose one depth update id on its way in (`skip_next_depth_id`)."""

    def __init__(self, config, name):
        super().__init__(config)
        self.suite_name = name
        self.frames = collections.defaultdict(lambda: collections.deque(maxlen=40))
        self.acks = 0
        self.skip_next_depth_id = False
        self.skipped = None

    def handle_message(self, client, message):
        if (self.skip_next_depth_id and isinstance(message, dict)
                and message.get("e") == "depthUpdate"):
            # As if the first update of this event had been lost in transit: the event
            # now starts one id later, so its U is no longer the previous u + 1.
            self.skip_next_depth_id = False
            message = dict(message, U=message["U"] + 1, u=max(message["u"], message["U"] + 1))
            self.skipped = message["U"] - 1
        self.frames[client.url].append(message)
        if isinstance(message, dict) and "result" in message and message.get("result") is None and "id" in message:
            self.acks += 1
        return super().handle_message(client, message)


def point_at_local(ex, rest, ws):
    """Every REST base to our host keeping the path; ws spot and margin
    to /ws (CCXT appends /<n>); the WS-API to /ws-api/v3."""
    for key, url in list(ex.urls["api"].items()):
        if isinstance(url, str):
            ex.urls["api"][key] = rest + urlsplit(url).path
    ex.urls["api"]["ws"]["spot"] = ws + "/ws"
    ex.urls["api"]["ws"]["margin"] = ws + "/ws"
    ex.urls["api"]["ws"]["ws-api"]["spot"] = ws + "/ws-api/v3"
    ex.exceptions["exact"].update(ex.exceptions["spot"]["exact"])
    return ex


def make(rest, ws, name, key=None, secret=None):
    config = {"enableRateLimit": True, "timeout": 20000, "options": dict(OPTIONS)}
    if key is not None:
        config["apiKey"] = key
        config["secret"] = secret
    ex = point_at_local(Recorded(config, name), rest, ws)
    CLIENTS.append(ex)
    return ex


def print_frames(out=sys.stderr):
    for ex in CLIENTS:
        for url, frames in ex.frames.items():
            print(f"\nlast frames of client {ex.suite_name} on {url}:", file=out)
            for frame in list(frames)[-8:]:
                print(f"  {short(json.dumps(frame), 600)}", file=out)


async def within(what, aw, seconds=WAIT):
    """Await with a deadline; a timeout is a failed check naming what was awaited."""
    try:
        return await asyncio.wait_for(aw, seconds)
    except asyncio.TimeoutError:
        fail(what, f"an answer within {seconds:.0f} s", "nothing (timed out)")


async def until(what, cond, seconds=WAIT, got=lambda: ""):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            fail(what, f"true within {seconds:.0f} s", f"still false: {got()}")
        await asyncio.sleep(0.02)


async def wait_acks(ex, n, what):
    await until(f"{what}: SUBSCRIBE acknowledged with {{'result': None, 'id': …}}", lambda: ex.acks >= n,
                got=lambda: f"{ex.acks} acks, want {n}")


async def wait_armed(ex, hashes, what):
    """The watch futures are registered on the user-data connection, so an event sent
    from now on resolves them."""
    client = ex.client(ex.urls["api"]["ws"]["ws-api"]["spot"])
    await until(f"{what}: watches registered", lambda: all(h in client.futures for h in hashes),
                got=lambda: sorted(client.futures))


# ----------------------------------------------------------------------- order book


def levels(side):
    return [(dec(p), dec(q)) for p, q in side]


class BookWatcher:
    """Calls watch_order_book in a loop, counting the updates; a ChecksumError (a gap
    in U/u or a snapshot CCXT could not line up) or any other error is kept."""

    def __init__(self, ex):
        self.ex = ex
        self.book = None
        self.updates = 0
        self.nonces = []
        self.error = None
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        while True:
            try:
                book = await self.ex.watch_order_book(JPY)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reported by the checks
                self.error = e
                return
            self.book = book
            self.updates += 1
            self.nonces.append(book["nonce"])

    def assert_healthy(self, what):
        if self.error is not None:
            fail(f"{what}: watch_order_book stays in sync", "no error",
                 f"{type(self.error).__module__}.{type(self.error).__name__}: {short(self.error, 600)}")
        if any(b <= a for a, b in zip(self.nonces, self.nonces[1:])):
            fail(f"{what}: watched nonces increase", "strictly increasing", self.nonces[-20:])

    async def compare(self, rest_client, what):
        """After the last update: fetch_order_book, then wait until the watched book has
        reached the same update id, then compare every level."""
        snap = await rest_client.fetch_order_book(JPY, 1000)
        nonce = snap["nonce"]

        def reached():
            return self.error is not None or (self.book is not None and self.book["nonce"] >= nonce)

        await until(f"{what}: the watched book reaches fetch_order_book's lastUpdateId {nonce}", reached,
                    got=lambda: f"watched nonce {self.book and self.book['nonce']}, {self.updates} updates")
        self.assert_healthy(what)
        check_eq(f"{what}: watched nonce equals REST lastUpdateId (no update since)", self.book["nonce"], nonce)
        bids, asks = levels(self.book["bids"]), levels(self.book["asks"])
        want_bids, want_asks = levels(snap["bids"]), levels(snap["asks"])
        check_eq(f"{what}: watched bids equal fetch_order_book level for level", bids, want_bids,
                 f"{len(bids)} levels")
        check_eq(f"{what}: watched asks equal fetch_order_book level for level", asks, want_asks,
                 f"{len(asks)} levels")
        return snap


# --------------------------------------------------------------------------- phases


async def cancel_everything(ex):
    if await ex.fetch_open_orders(JPY):
        await ex.cancel_all_orders(JPY)


async def book_phase(pub, b):
    watcher = BookWatcher(pub)
    await until("watch_order_book: first book (REST snapshot applied)", lambda: watcher.updates >= 1 or watcher.error,
                got=lambda: f"{watcher.updates} updates")
    watcher.assert_healthy("initial")
    ok("watch_order_book: subscribed and synced to the REST snapshot", f"nonce {watcher.book['nonce']}")
    start_nonce = watcher.book["nonce"]

    # About 50 REST commands from customer 2: resting buys below P and sells above,
    # some sharing a price level, a third of them cancelled again.
    ops = 0
    live = []
    k = 0
    while ops < 50:
        k += 1
        side = "buy" if k % 2 else "sell"
        offset = STEP * ((k + 1) // 2 if k % 5 else 1)  # every fifth order joins level 1
        price = P - offset if side == "buy" else P + offset
        amount = Decimal("0.001") + Decimal("0.00001") * k
        o = await b.create_order(JPY, "limit", side, float(amount), float(price))
        ops += 1
        live.append(o["id"])
        if k % 3 == 0:
            victim = live.pop(len(live) // 2)
            await b.cancel_order(victim, JPY)
            ops += 1
    watcher.assert_healthy("50 commands")
    await watcher.compare(b, f"after {ops} REST orders/cancels")
    check(f"watch_order_book followed the {ops} commands as many updates",
          watcher.book["nonce"] - start_nonce >= ops and watcher.updates > 1,
          f">= {ops} update ids", f"{watcher.book['nonce'] - start_nonce} update ids, {watcher.updates} returns",
          f"{watcher.updates} watch returns, nonce {start_nonce} -> {watcher.book['nonce']}")
    await cancel_everything(b)
    await watcher.compare(b, "after cancel_all_orders")
    check("the book is empty after cancel_all_orders",
          not watcher.book["bids"] and not watcher.book["asks"], "no levels",
          f"{levels(watcher.book['bids'])} {levels(watcher.book['asks'])}")
    return watcher


async def trade_phase(mkt, a, b, watcher):
    # Market streams first: each SUBSCRIBE acknowledged before the trade happens.
    acks = mkt.acks
    trades_t = asyncio.ensure_future(mkt.watch_trades(JPY))
    ohlcv_t = asyncio.ensure_future(mkt.watch_ohlcv(JPY, "1m"))
    ticker_t = asyncio.ensure_future(mkt.watch_ticker(JPY))
    await wait_acks(mkt, acks + 3, "watch_trades, watch_ohlcv, watch_ticker")
    for t in (trades_t, ohlcv_t, ticker_t):
        if t.done():
            t.result()  # an error surfaces here; a value is fine (a seeded candle or ticker)

    # User data: subscribe (userDataStream.subscribe.signature), then arm the watches.
    await within("customer1 authenticate (userDataStream.subscribe.signature)", a.authenticate())
    ok("userDataStream.subscribe.signature acknowledged", "authenticate() returned")
    bal_t = asyncio.ensure_future(a.watch_balance())
    ord_t = asyncio.ensure_future(a.watch_orders(JPY))
    mt_t = asyncio.ensure_future(a.watch_my_trades(JPY))
    await wait_armed(a, ["spot:balance", "orders:" + JPY, "myTrades:" + JPY], "watch_balance/orders/my_trades")

    # Customer 1's resting sell: watch_orders sees it open.
    created = await a.create_order(JPY, "limit", "sell", float(TRADE_QTY), float(TRADE_PRICE))
    oid = created["id"]
    orders = await within("watch_orders: the new order", ord_t)
    mine = [o for o in orders if o["id"] == oid]
    check("watch_orders sees customer1's order open", bool(mine) and mine[-1]["status"] == "open",
          f"order {oid} status open", [(o["id"], o["status"]) for o in orders],
          f"id {oid}, price {mine and mine[-1]['price']}, amount {mine and mine[-1]['amount']}")
    bal_open = await within("watch_balance: the hold of the new order", bal_t)
    check("watch_balance reports the hold (BTC used >= the order's quantity)",
          dec(bal_open.get("BTC", {}).get("used")) is not None and dec(bal_open["BTC"]["used"]) >= TRADE_QTY,
          f"BTC used >= {TRADE_QTY}", short(bal_open.get("BTC")))

    # Customer 2's resting orders on both sides, so the book the watcher compares after
    # the trade is not empty; the ask is above customer1's, which stays the best ask.
    for side, price, amount in (("buy", P - 5 * STEP, "0.003"), ("buy", P - 6 * STEP, "0.001"),
                                ("sell", TRADE_PRICE + 3 * STEP, "0.004")):
        await b.create_order(JPY, "limit", side, float(Decimal(amount)), float(price))

    # Re-arm, then customer 2 takes the whole order.
    ord_t = asyncio.ensure_future(a.watch_orders(JPY))
    bal_t = asyncio.ensure_future(a.watch_balance())
    await wait_armed(a, ["spot:balance", "orders:" + JPY, "myTrades:" + JPY], "re-armed watches")
    taker = await b.create_order(JPY, "market", "buy", float(TRADE_QTY))
    check_eq("customer2's market buy fills completely", (taker["status"], dec(taker["filled"])), ("closed", TRADE_QTY))

    # REST truth after the fill.
    rest_trades = [t for t in await a.fetch_my_trades(JPY) if str(t["order"]) == str(oid)]
    check_eq("fetch_my_trades: one fill of customer1's order", len(rest_trades), 1)
    fill = rest_trades[0]
    b_trades = [t for t in await b.fetch_my_trades(JPY) if str(t["order"]) == str(taker["id"])]
    check("fetch_my_trades: customer2 has the same fill", [str(t["id"]) for t in b_trades] == [str(fill["id"])],
          [str(fill["id"])], [str(t["id"]) for t in b_trades])

    # watch_orders: closed.
    deadline = time.monotonic() + WAIT
    seen = []
    while True:
        orders = await within("watch_orders: the fill", ord_t, max(0.1, deadline - time.monotonic()))
        seen += [(o["id"], o["status"], o["filled"]) for o in orders]
        done = [o for o in orders if o["id"] == oid and o["status"] == "closed"]
        if done:
            break
        ord_t = asyncio.ensure_future(a.watch_orders(JPY))
    o = done[-1]
    check("watch_orders sees customer1's order go open -> closed",
          dec(o["filled"]) == TRADE_QTY and dec(o["remaining"]) == 0,
          f"closed, filled {TRADE_QTY}, remaining 0", f"{o['status']} filled {o['filled']} remaining {o['remaining']}",
          f"updates {seen}")

    # watch_my_trades: same id, price, amount and fee as fetch_my_trades.
    wtrades = await within("watch_my_trades: the fill", mt_t)
    w = [t for t in wtrades if str(t["id"]) == str(fill["id"])]
    if not w:
        fail("watch_my_trades sees the fill with fetch_my_trades' id", fill["id"], [t["id"] for t in wtrades])
    w = w[-1]
    got = (str(w["id"]), str(w["order"]), dec(w["price"]), dec(w["amount"]), w["side"],
           dec((w.get("fee") or {}).get("cost")), (w.get("fee") or {}).get("currency"))
    want = (str(fill["id"]), str(oid), dec(fill["price"]), dec(fill["amount"]), fill["side"],
            dec(fill["fee"]["cost"]), fill["fee"]["currency"])
    check_eq("watch_my_trades: id, order, price, amount, side, fee equal fetch_my_trades", got, want,
             f"id {fill['id']}, fee {fill['fee']['cost']} {fill['fee']['currency']}")

    # watch_balance: after the fill, equal to fetch_balance.
    rest_bal = await a.fetch_balance()

    def view(bal):
        return {c: (dec(bal[c]["free"]), dec(bal[c]["used"]), dec(bal[c]["total"]))
                for c in ("BTC", "JPY") if c in bal}

    want_bal = view(rest_bal)
    deadline = time.monotonic() + WAIT
    history = []
    while True:
        bal = await within("watch_balance: the balance after the fill", bal_t, max(0.1, deadline - time.monotonic()))
        history.append(view(bal))
        if view(bal) == want_bal:
            break
        bal_t = asyncio.ensure_future(a.watch_balance())
    check_eq("watch_balance (customer1) after the fill equals fetch_balance (BTC, JPY free/used/total)",
             view(bal), want_bal, f"{len(history)} balance events; BTC total {want_bal['BTC'][2]}, JPY total {want_bal['JPY'][2]}")

    # Public trade.
    deadline = time.monotonic() + WAIT
    public = []
    while True:
        trades = await within("watch_trades: the trade", trades_t, max(0.1, deadline - time.monotonic()))
        public += trades
        hit = [t for t in trades if str(t["id"]) == str(fill["id"])]
        if hit:
            break
        trades_t = asyncio.ensure_future(mkt.watch_trades(JPY))
    t = hit[-1]
    check_eq("watch_trades sees the trade: id, price, amount equal fetch_my_trades",
             (str(t["id"]), dec(t["price"]), dec(t["amount"]), t["symbol"]),
             (str(fill["id"]), dec(fill["price"]), dec(fill["amount"]), JPY))

    # Kline: a 1m candle whose close is the last trade price.
    deadline = time.monotonic() + WAIT
    candles_seen = []
    while True:
        candles = await within("watch_ohlcv: a candle with the trade", ohlcv_t, max(0.1, deadline - time.monotonic()))
        candles_seen += candles
        if candles and dec(candles[-1][4]) == TRADE_PRICE:
            break
        ohlcv_t = asyncio.ensure_future(mkt.watch_ohlcv(JPY, "1m"))
    c = candles[-1]
    check("watch_ohlcv('1m'): the candle's close is the last trade price",
          dec(c[4]) == dec(fill["price"]) and c[0] % 60000 == 0 and dec(c[5]) >= TRADE_QTY,
          f"close {fill['price']}, minute-aligned, volume >= {TRADE_QTY}", c, f"candle {c}")

    # Ticker: last price.
    deadline = time.monotonic() + WAIT
    while True:
        tk = await within("watch_ticker: the last price", ticker_t, max(0.1, deadline - time.monotonic()))
        if dec(tk.get("last")) == TRADE_PRICE:
            break
        ticker_t = asyncio.ensure_future(mkt.watch_ticker(JPY))
    rest_tk = await a.fetch_ticker(JPY)
    check_eq("watch_ticker: last equals the trade price and fetch_ticker's last",
             (dec(tk["last"]), tk["symbol"]), (dec(rest_tk["last"]), JPY), f"last {tk['last']}")

    # And the book watcher is still in sync after the trade.
    snap = await watcher.compare(b, "after the trade")
    check_eq("after the trade: the book holds customer2's three resting orders",
             (levels(snap["bids"]), levels(snap["asks"])),
             ([(P - 5 * STEP, Decimal("0.003")), (P - 6 * STEP, Decimal("0.001"))],
              [(TRADE_PRICE + 3 * STEP, Decimal("0.004"))]))
    await cancel_everything(b)
    await watcher.compare(b, "after the last cancel")


async def order_update(a, fut, oid, cond, what):
    """Await the armed watch_orders future `fut`, re-arming it, until an update of
    order `oid` satisfies `cond`; returns that update and every update seen."""
    deadline = time.monotonic() + WAIT
    seen = []
    while True:
        orders = await within(what, fut, max(0.1, deadline - time.monotonic()))
        seen += [(o["id"], o["status"], o["filled"], o["remaining"]) for o in orders]
        hit = [o for o in orders if o["id"] == oid and cond(o)]
        if hit:
            return hit[-1], seen
        fut = asyncio.ensure_future(a.watch_orders(JPY))


async def arm_orders(a, with_trades=False):
    """watch_orders (and watch_my_trades) armed before the action they are to see."""
    ord_t = asyncio.ensure_future(a.watch_orders(JPY))
    mt_t = asyncio.ensure_future(a.watch_my_trades(JPY)) if with_trades else None
    hashes = ["orders:" + JPY] + (["myTrades:" + JPY] if with_trades else [])
    await wait_armed(a, hashes, "watch_orders armed")
    return ord_t, mt_t


async def partial_phase(a, b):
    """Partial fills: customer1's resting sell is taken a part at a time; watch_orders
    shows it open with what is filled and what remains, watch_my_trades each fill, and
    the cancel of the rest shows it canceled with its fills kept."""
    price = P + 2 * STEP
    whole, part = Decimal("0.004"), Decimal("0.001")
    ord_t, _ = await arm_orders(a)
    created = await a.create_order(JPY, "limit", "sell", float(whole), float(price))
    oid = created["id"]
    await order_update(a, ord_t, oid, lambda o: o["status"] == "open", "watch_orders: the new sell")
    fills = []
    for n in (1, 2):
        ord_t, mt_t = await arm_orders(a, with_trades=True)
        taken = await b.create_order(JPY, "limit", "buy", float(part), float(price))
        check_eq(f"partial fill {n}: customer2's buy fills completely",
                 (taken["status"], dec(taken["filled"])), ("closed", part))
        o, seen = await order_update(a, ord_t, oid, lambda o, n=n: dec(o["filled"]) == n * part,
                                     f"watch_orders: partial fill {n}")
        check_eq(f"watch_orders after partial fill {n}: open, filled and remaining",
                 (o["status"], dec(o["filled"]), dec(o["remaining"])),
                 ("open", n * part, whole - n * part), f"updates {seen}")
        trades = await within(f"watch_my_trades: partial fill {n}", mt_t)
        mine = [t for t in trades if str(t["order"]) == str(oid)]
        check(f"watch_my_trades sees partial fill {n} of the order",
              bool(mine) and dec(mine[-1]["amount"]) == part and dec(mine[-1]["price"]) == price,
              f"a fill of {part} at {price}", [(t["order"], t["amount"], t["price"]) for t in trades])
        fills.append(str(mine[-1]["id"]))
    check("the two partial fills are distinct trades", len(set(fills)) == 2, "two ids", fills)
    ord_t, _ = await arm_orders(a)
    await a.cancel_order(oid, JPY)
    o, seen = await order_update(a, ord_t, oid, lambda o: o["status"] == "canceled",
                                 "watch_orders: the cancel of the rest")
    check_eq("watch_orders after the cancel: canceled with its fills kept",
             (dec(o["filled"]), dec(o["remaining"])), (2 * part, whole - 2 * part), f"updates {seen}")
    rest = await a.fetch_order(oid, JPY)
    check_eq("fetch_order agrees: canceled, filled 2 parts",
             (rest["status"], dec(rest["filled"])), ("canceled", 2 * part))


async def gap_phase(args, b):
    """A depth update id lost on the way in is detected: CCXT rejects the watched book
    with ChecksumError (Binance's rule: each event's U is the previous event's u + 1),
    and watching again resynchronises to the REST snapshot."""
    gap = make(args.rest, args.ws, "gap-book")
    await gap.load_markets()
    watcher = BookWatcher(gap)
    await until("gap phase: first book", lambda: watcher.updates >= 1 or watcher.error,
                got=lambda: f"{watcher.updates} updates")
    watcher.assert_healthy("gap phase, before the gap")
    gap.skip_next_depth_id = True
    o = await b.create_order(JPY, "limit", "buy", 0.001, float(P - 7 * STEP))
    await until("gap phase: the client notices the lost update id", lambda: watcher.error is not None,
                got=lambda: f"{watcher.updates} updates, nonce {watcher.book and watcher.book['nonce']}, "
                            f"skipped id {gap.skipped}")
    check("a lost depth update id is detected (ChecksumError)",
          isinstance(watcher.error, ccxt.ChecksumError), "ChecksumError",
          f"{type(watcher.error).__name__}: {short(watcher.error)}", f"update id {gap.skipped} skipped")
    # Watching again starts over from a REST snapshot and follows the stream.
    watcher = BookWatcher(gap)
    await b.cancel_order(o["id"], JPY)
    await watcher.compare(b, "gap phase: after resubscribing")
    ok("watch_order_book resynchronises after the gap", f"nonce {watcher.book['nonce']}")
    watcher.task.cancel()


async def run(args):
    a = make(args.rest, args.ws, "customer1", args.a_key, args.a_secret)
    b = make(args.rest, args.ws, "customer2", args.b_key, args.b_secret)
    pub = make(args.rest, args.ws, "public-book")
    mkt = make(args.rest, args.ws, "public-streams")
    try:
        for ex in (a, b, pub, mkt):
            await ex.load_markets()
        for ex in (a, b):
            await cancel_everything(ex)
        ok("load_markets (4 clients), no open orders", ", ".join(sorted(a.markets)))
        watcher = await book_phase(pub, b)
        await trade_phase(mkt, a, b, watcher)
        watcher.task.cancel()
        await partial_phase(a, b)
        await gap_phase(args, b)
    finally:
        for ex in CLIENTS:
            try:
                await asyncio.wait_for(ex.close(), 10)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def parse_args(argv):
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-json", default=env("KURA_E2E_SERVER_JSON"))
    p.add_argument("--rest", default=env("KURA_E2E_REST"))
    p.add_argument("--ws", default=env("KURA_E2E_WS"))
    p.add_argument("--a-key", default=env("KURA_E2E_A_KEY"))
    p.add_argument("--a-secret", default=env("KURA_E2E_A_SECRET"))
    p.add_argument("--b-key", default=env("KURA_E2E_B_KEY"))
    p.add_argument("--b-secret", default=env("KURA_E2E_B_SECRET"))
    args = p.parse_args(argv)
    if args.server_json:
        with open(args.server_json) as f:
            info = json.load(f)
        args.rest = args.rest or info["rest"]
        args.ws = args.ws or info["ws"]
    if not args.rest or not args.ws:
        p.error("--server-json, or --rest and --ws (or KURA_E2E_*), are required")
    args.rest, args.ws = args.rest.rstrip("/"), args.ws.rstrip("/")
    for name in ("a_key", "a_secret", "b_key", "b_secret"):
        if not getattr(args, name):
            p.error(f"--{name.replace('_', '-')} (or KURA_E2E_{name.upper()}) is required")
    return args


def main(argv):
    args = parse_args(argv)
    if ccxt.__version__ != CCXT_VERSION:
        print(f"FAIL  this suite is pinned to ccxt {CCXT_VERSION}, found {ccxt.__version__}; "
              f"run scripts/e2e-venv", file=sys.stderr)
        return 2
    print(f"ccxt.pro {ccxt.__version__} against {args.rest} and {args.ws}", flush=True)
    started = time.monotonic()
    try:
        asyncio.run(run(args))
    except CheckFailed as e:
        print(f"FAIL  {e}", file=sys.stderr, flush=True)
        print_frames()
        return 1
    except Exception as e:  # noqa: BLE001 - an unexpected exception is a failure too
        print(f"FAIL  unexpected {type(e).__module__}.{type(e).__name__}: {short(e, 800)}", file=sys.stderr, flush=True)
        traceback.print_exc()
        print_frames()
        return 1
    print(f"PASS  {PASSED[0]} checks in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
