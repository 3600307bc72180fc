"""The live-stream marketplace, simulated: pure, deterministic, no Kafka.

A discrete-event simulation over event time. Sellers go live (shows last
20-90 minutes, about ``shows`` run at once); viewers arrive at a rate set by the
seller's popularity and leave after a few minutes, some hopping between shows;
chat follows the audience, with bursts when an auction heats up; auctions run
back to back with soft close, so bidding wars extend them; the winner orders a
few seconds to two minutes later, and viewers also buy fixed-price items.

Users come as returning viewers, old accounts seen for the first time in the run,
or brand-new sign-ups. A user's first profile version (``users.profile``) is
emitted at the moment the user first appears, before any of their events, with
``updated_at`` equal to that moment; later versions (verification, risk tier,
country) have strictly increasing ``updated_at``.

Fraud rings arrive at ``fraud_rings_per_hour``: 3-8 accounts created minutes
apart, each joining a few shows, bidding in bursts of 5-15 bids one to four
seconds apart, buying several items in a row, and paying every order with a
new payment method, often shipping abroad. Their ids are in
:attr:`Marketplace.fraud_user_ids`.

>>> market = Marketplace(seed=1, start_ms=1_700_000_000_000, shows=5)
>>> first = next(market.events())
>>> first.subject, first.time_ms >= 1_700_000_000_000
('users.profile', True)
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.generator.entities import (
    COUNTRIES,
    DAY,
    DEVICES,
    FRAUD_COUNTRIES,
    HOUR,
    MINUTE,
    UUID_CLEAR,
    UUID_SET,
    Auction,
    Event,
    MarketParams,
    Show,
    User,
    increment,
)
from pipelines.topics import BID_PLACED, CHAT_MESSAGE, ORDER_PLACED, USER_PROFILE, VIEWER_JOINED


class Marketplace:
    """The simulation. Iterate :meth:`events` for events in event-time order.

    Args:
        seed: seeds every random choice and every id.
        start_ms: event time of the first instant.
        shows: mean number of concurrent live shows.
        fraud_rings_per_hour: rate of fraud rings (0 disables fraud).
        params: finer rates and sizes.
    """

    def __init__(self, seed: int, start_ms: int, shows: float = 20.0,
                 fraud_rings_per_hour: float = 4.0, params: MarketParams | None = None) -> None:
        self.p = params or MarketParams()
        self.r = random.Random(f"livefeat-model:{seed}")
        self._ids = random.Random(f"livefeat-ids:{seed}")
        self.start_ms = start_ms
        self.shows_target = shows
        self.fraud_rate = fraud_rings_per_hour
        self.users: dict[str, User] = {}
        self.fraud_user_ids: set[str] = set()
        self._heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._out: list[Event] = []
        self._recent: deque[str] = deque(maxlen=5_000)
        self._live: list[Show] = []
        self._counters = {"u": 0, "show": 0, "auc": 0, "ord": 0}
        self._seller_live = [False] * self.p.sellers
        self._seller_pop = [self.r.lognormvariate(0.0, 0.75) for _ in range(self.p.sellers)]
        self._country_names = [c for c, _ in COUNTRIES]
        self._country_weights = [w for _, w in COUNTRIES]
        mean_show_ms = sum(self.p.show_minutes) / 2 * MINUTE
        self._show_gap_ms = mean_show_ms / shows
        for _ in range(max(1, round(shows))):
            # Shows already live when the run starts, with their remaining time.
            self._push(start_ms, self._start_show, self.r.uniform(0.1, 1.0))
        if not self.p.steady:  # steady: a show that ends is replaced at once instead
            self._push(start_ms + self._exp(self._show_gap_ms), self._spawn_show)
        if fraud_rings_per_hour > 0:
            self._push(start_ms + self._exp(HOUR / fraud_rings_per_hour), self._fraud_ring)

    # ----------------------------------------------------------------- engine
    def events(self, until_ms: int | None = None) -> Iterator[Event]:
        """Events in event-time order (ties in causal order), up to ``until_ms`` (exclusive)."""
        heap, out = self._heap, self._out
        while heap:
            t, _, fn, args = heapq.heappop(heap)
            if until_ms is not None and t >= until_ms:
                return
            fn(t, *args)
            if out:
                yield from out
                out.clear()

    @property
    def live_shows(self) -> int:
        """Number of shows on air at the current point of the simulation."""
        return len(self._live)

    def is_fraud(self, user_id: str) -> bool:
        """True when ``user_id`` belongs to a fraud ring."""
        return user_id in self.fraud_user_ids

    def _push(self, t: int, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def _exp(self, mean_ms: float) -> int:
        return 1 + int(self.r.expovariate(1.0 / mean_ms))

    def _uniform_ms(self, low_s: float, high_s: float) -> int:
        return int(self.r.uniform(low_s, high_s) * 1000)

    def _next_id(self, prefix: str, width: int) -> str:
        self._counters[prefix] += 1
        return f"{prefix}-{self._counters[prefix]:0{width}d}"

    def _event_id(self) -> str:
        # A version-4 UUID drawn from the id stream (same text as uuid.UUID(..., version=4)).
        bits = (self._ids.getrandbits(128) & UUID_CLEAR) | UUID_SET
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _payment_method(self) -> str:
        return f"pm-{self._ids.getrandbits(48):012x}"

    def _emit(self, subject: str, t: int, key: str, record: dict[str, Any]) -> None:
        self._out.append(Event(subject, t, key, record))

    def _base(self, t: int, show: Show, user_id: str) -> dict[str, Any]:
        return {"event_id": self._event_id(), "event_time": t, "stream_id": show.id,
                "seller_id": show.seller_id, "user_id": user_id}

    # ------------------------------------------------------------------ users
    def _country(self) -> str:
        return self.r.choices(self._country_names, self._country_weights)[0]

    def _new_user(self, t: int, *, old: bool, fraud: bool = False) -> User:
        r = self.r
        uid = self._next_id("u", 8)
        if fraud:
            user = User(uid, t, r.choice(FRAUD_COUNTRIES), False,
                         "LOW" if r.random() < 0.7 else "MEDIUM",
                         "WEB" if r.random() < 0.6 else "ANDROID", [], fraud=True)
        elif old:
            age = min(int(r.expovariate(1 / 400) * DAY) + 7 * DAY, 8 * 365 * DAY)
            tier = r.random()
            user = User(uid, t - age, self._country(), r.random() < 0.85,
                         "LOW" if tier < 0.85 else "MEDIUM" if tier < 0.97 else "HIGH",
                         r.choices(DEVICES, (45, 35, 20))[0],
                         [self._payment_method()
                          for _ in range(r.choices((1, 2, 3), (70, 25, 5))[0])])
            if r.random() < 0.03:
                self._push(t + self._uniform_ms(60, 7200), self._profile_update, user, "random")
        else:
            user = User(uid, t - r.randrange(10 * MINUTE), self._country(), False,
                         "LOW" if r.random() < 0.9 else "MEDIUM",
                         r.choices(DEVICES, (45, 35, 20))[0],
                         [self._payment_method() for _ in range(r.choices((1, 2), (85, 15))[0])])
            if r.random() < 0.6:
                self._push(t + self._exp(20 * MINUTE), self._profile_update, user, "verify")
        self.users[uid] = user
        return user

    def _pick_viewer(self, t: int) -> User:
        u = self.r.random()
        if u < self.p.new_account_share:
            return self._new_user(t, old=False)
        if u < self.p.new_account_share + self.p.returning_share and self._recent:
            return self.users[self._recent[self.r.randrange(len(self._recent))]]
        return self._new_user(t, old=True)

    def _emit_profile(self, t: int, user: User) -> None:
        user.profile_ms = t
        self._emit(USER_PROFILE, t, user.id, {
            "user_id": user.id, "updated_at": t, "account_created_at": user.created_ms,
            "country": user.country, "is_verified": user.verified, "risk_tier": user.risk,
        })

    def _profile_update(self, t: int, user: User, change: str) -> None:
        if user.profile_ms < 0:
            return
        if t <= user.profile_ms:  # keep updated_at strictly increasing per user
            self._push(user.profile_ms + 1, self._profile_update, user, change)
            return
        if change == "verify":
            user.verified = True
        elif change == "risk_high":
            user.risk = "HIGH"
        elif self.r.random() < 0.5:
            user.risk = self.r.choice([x for x in ("LOW", "MEDIUM", "HIGH") if x != user.risk])
        elif not user.verified:
            user.verified = True
        else:
            user.country = self._country()
        self._emit_profile(t, user)

    def _join(self, t: int, show: Show, user: User, stay_ms: int) -> None:
        if user.profile_ms < 0:
            self._emit_profile(t, user)
        rec = self._base(t, show, user.id)
        rec["device"] = user.device
        self._emit(VIEWER_JOINED, t, show.id, rec)
        show.add(user.id)
        user.shows.append(show)
        self._push(t + stay_ms, self._leave, show, user)

    def _leave(self, t: int, show: Show, user: User) -> None:
        show.remove(user.id)
        if show in user.shows:
            user.shows.remove(show)
        if not user.fraud:
            self._recent.append(user.id)

    # ------------------------------------------------------------------ shows
    def _spawn_show(self, t: int) -> None:
        self._start_show(t, 1.0)
        self._push(t + self._exp(self._show_gap_ms), self._spawn_show)

    def _start_show(self, t: int, remaining_share: float) -> None:
        r = self.r
        idle = [i for i in range(self.p.sellers) if not self._seller_live[i]]
        if not idle:
            return
        index = r.choice(idle)
        self._seller_live[index] = True
        popularity = 1.0 if self.p.steady else self._seller_pop[index]
        show = Show(self._next_id("show", 6), f"seller-{index + 1:04d}", index, popularity, t)
        self._live.append(show)
        length = self._uniform_ms(*(m * 60 for m in self.p.show_minutes))
        self._push(t + max(MINUTE, int(length * remaining_share)), self._end_show, show)
        self._push(t + self._exp(2_000), self._arrival, show)
        self._push(t + self._exp(5_000), self._chat, show)
        self._push(t + self._uniform_ms(20, 60), self._auction_start, show)
        self._push(t + self._exp(60_000), self._buy_now, show)

    def _end_show(self, t: int, show: Show) -> None:
        show.live = False
        self._live.remove(show)
        self._seller_live[show.seller_index] = False
        if show.auction is not None:
            self._auction_close(t, show, show.auction, final=True)
        if self.p.steady:
            self._start_show(t, 1.0)

    def _arrival(self, t: int, show: Show) -> None:
        if not show.live:
            return
        user = self._pick_viewer(t)
        if user.id not in show.where:
            self._join(t, show, user, self._exp(self.p.viewer_stay_s * 1000))
        # A show draws a crowd in its first two minutes (followers get notified).
        warm = 3.0 if t - show.started_ms < 2 * MINUTE and not self.p.steady else 1.0
        rate = self.p.viewer_arrivals_per_min * show.popularity * warm
        self._push(t + self._exp(MINUTE / max(rate, 0.05)), self._arrival, show)

    def _chat(self, t: int, show: Show) -> None:
        if not show.live:
            return
        n = len(show.viewers)
        if n == 0:
            self._push(t + 5_000, self._chat, show)
            return
        r = self.r
        user = self.users[show.viewers[r.randrange(n)]]
        if not user.fraud or r.random() < 0.2:
            rec = self._base(t, show, user.id)
            rec["message_length"] = min(500, max(1, int(r.lognormvariate(3.0, 0.8))))
            rec["flagged"] = r.random() < (0.2 if user.fraud else 0.015)
            self._emit(CHAT_MESSAGE, t, show.id, rec)
        if r.random() < 0.003:  # a moment that sets the chat off
            show.burst_until = t + self._uniform_ms(10, 30)
        burst = 4.0 if t < show.burst_until and not self.p.steady else 1.0
        rate_per_ms = n * self.p.chat_per_viewer_per_min * burst / MINUTE
        self._push(t + self._exp(1.0 / rate_per_ms), self._chat, show)

    def _buy_now(self, t: int, show: Show) -> None:
        if not show.live:
            return
        r = self.r
        n = len(show.viewers)
        if n:
            user = self.users[show.viewers[r.randrange(n)]]
            if not user.fraud:
                # Fixed prices end in .99; auction prices never do.
                price = max(2, int(r.lognormvariate(math.log(25), 0.7))) * 100 + 99
                self._order(t, show, user, price)
        rate = self.p.buy_now_per_min * min(3.0, n / 60 + 0.2)
        self._push(t + self._exp(MINUTE / rate), self._buy_now, show)

    def _order(self, t: int, show: Show, user: User, amount: int) -> None:
        r = self.r
        if user.fraud:
            payment = self._payment_method()
            user.payment_methods.append(payment)
            country = r.choice(FRAUD_COUNTRIES) if r.random() < 0.5 else user.country
        else:
            payment = r.choice(user.payment_methods)
            country = user.country if r.random() < 0.98 else self._country()
        rec = self._base(t, show, user.id)
        rec.update(order_id=self._next_id("ord", 9), amount_cents=amount, currency="USD",
                   payment_method_id=payment, shipping_country=country)
        self._emit(ORDER_PLACED, t, show.id, rec)

    # --------------------------------------------------------------- auctions
    def _auction_start(self, t: int, show: Show) -> None:
        if not show.live:
            return
        n = len(show.viewers)
        if n == 0:
            self._push(t + 10_000, self._auction_start, show)
            return
        r = self.r
        start = max(1, int(r.lognormvariate(math.log(10), 0.8))) * 100
        k = min(n, 2 + int(r.expovariate(1 / (2.0 + n / 30))))
        bidders = {uid: int(start * r.lognormvariate(0.9, 0.6))
                   for uid in r.sample(show.viewers, k) if not self.users[uid].fraud}
        auction = Auction(self._next_id("auc", 8), start,
                           t + self._uniform_ms(*self.p.auction_length_s), bidders)
        show.auction = auction
        show.burst_until = max(show.burst_until, t + 10_000)
        self._push(t + self._exp(3_000), self._bid, show, auction)
        self._push(auction.ends_ms, self._auction_close, show, auction)

    def _place_bid(self, t: int, show: Show, auction: Auction, user_id: str, amount: int) -> None:
        rec = self._base(t, show, user_id)
        rec.update(auction_id=auction.id, amount_cents=amount, currency="USD")
        self._emit(BID_PLACED, t, show.id, rec)
        auction.price, auction.leader = amount, user_id
        if auction.ends_ms - t < 5_000 and auction.extensions < 8:  # soft close
            auction.ends_ms += 10_000
            auction.extensions += 1
        if auction.ends_ms - t < 15_000:  # a bidding war sets the chat off
            show.burst_until = max(show.burst_until, t + 15_000)

    def _next_price(self, auction: Auction) -> int:
        return auction.start_price if auction.leader is None else (
            auction.price + increment(auction.price))

    def _bid(self, t: int, show: Show, auction: Auction) -> None:
        if auction.done:
            return
        r = self.r
        price = self._next_price(auction)
        willing = [u for u, cap in auction.bidders.items()
                   if u != auction.leader and cap >= price and u in show.where]
        if not willing:
            auction.chain_active = False
            return
        user_id = willing[r.randrange(len(willing))]
        if r.random() < 0.1:  # a jump bid, when the bidder's limit allows it
            jump = price + increment(price) * r.randint(1, 3)
            if jump <= auction.bidders[user_id]:
                price = jump
        self._place_bid(t, show, auction, user_id, price)
        closing = auction.ends_ms - t < 15_000
        self._push(t + self._exp(1_200 if closing else 4_000), self._bid, show, auction)

    def _auction_close(self, t: int, show: Show, auction: Auction, final: bool = False) -> None:
        if auction.done:
            return
        if t < auction.ends_ms and not final:
            self._push(auction.ends_ms, self._auction_close, show, auction)
            return
        auction.done = True
        show.auction = None
        if auction.leader is not None:
            winner = self.users[auction.leader]
            if winner.fraud or self.r.random() < 0.97:
                self._push(t + self._uniform_ms(3, 120), self._order, show, winner, auction.price)
        if show.live:
            self._push(t + self._uniform_ms(*self.p.auction_gap_s), self._auction_start, show)

    # ------------------------------------------------------------------ fraud
    def _fraud_ring(self, t: int) -> None:
        for _ in range(self.r.randint(3, 8)):
            self._push(t + self.r.randrange(5 * MINUTE), self._fraud_signup)
        self._push(t + self._exp(HOUR / self.fraud_rate), self._fraud_ring)

    def _fraud_signup(self, t: int) -> None:
        r = self.r
        user = self._new_user(t, old=False, fraud=True)
        self.fraud_user_ids.add(user.id)
        self._emit_profile(t, user)
        for _ in range(r.randint(1, 3)):
            self._push(t + self._uniform_ms(5, 120), self._fraud_join, user)
        self._push(t + self._uniform_ms(60, 900), self._fraud_buy, user, r.randint(2, 6))
        if r.random() < 0.35:  # trust and safety catches up, after the damage
            self._push(t + self._uniform_ms(1800, 10800), self._profile_update, user, "risk_high")

    def _fraud_join(self, t: int, user: User) -> None:
        if not self._live:
            return
        with_auction = [s for s in self._live if s.auction is not None]
        show = self.r.choice(with_auction or self._live)
        if user.id in show.where:
            return
        self._join(t, show, user, self._uniform_ms(600, 2400))
        self._push(t + self._uniform_ms(5, 60), self._fraud_burst, user, show,
                   self.r.randint(5, 15), 10)

    def _fraud_burst(self, t: int, user: User, show: Show, bids_left: int, tries: int) -> None:
        if not show.live or user.id not in show.where:
            return
        r = self.r
        auction = show.auction
        if auction is None or auction.done:
            if tries > 0:
                self._push(t + self._uniform_ms(5, 20), self._fraud_burst, user, show,
                           bids_left, tries - 1)
            return
        if auction.leader != user.id:
            price = self._next_price(auction)
            price += increment(price) * r.randint(0, 2)
            self._place_bid(t, show, auction, user.id, price)
            # Honest bidders answer back.
            for uid, cap in auction.bidders.items():
                if cap < price + increment(price) and r.random() < 0.5:
                    auction.bidders[uid] = price + increment(price) * r.randint(1, 4)
            if not auction.chain_active:
                auction.chain_active = True
                self._push(t + self._exp(2_000), self._bid, show, auction)
        if bids_left > 1:
            self._push(t + self._uniform_ms(0.8, 4), self._fraud_burst, user, show,
                       bids_left - 1, tries)
        elif r.random() < 0.5:
            self._push(t + self._uniform_ms(120, 600), self._fraud_join, user)

    def _fraud_buy(self, t: int, user: User, orders_left: int) -> None:
        if user.shows:
            show = user.shows[self.r.randrange(len(user.shows))]
            self._order(t, show, user, self.r.randint(50, 600) * 100 - 1)
        if orders_left > 1:
            self._push(t + self._uniform_ms(20, 180), self._fraud_buy, user, orders_left - 1)
