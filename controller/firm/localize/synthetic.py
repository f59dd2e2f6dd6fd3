"""Labelled fault windows built by perturbing real traces: a test bench for culprit localization.

A *template* is the shape of one real request: its spans, who calls whom, and the time each part
took (own processing segments, request and response gaps, calls to uninstrumented callees), read
from a recorded trace (e.g. DeathStarBench's Jaeger JSON) or built from a call graph
(:func:`boutique_templates`, a shop-like graph with OpenTelemetry span kinds). A request is laid
out again from its template: each child starts after its predecessor (the latest sibling that ended
before it started in the template) or its parent's start, plus the recorded lead time; a parent
ends after its last child plus the recorded tail. Every part is multiplied by log-normal noise
(per part and per request), and a fault adds to the parts it moves:

- ``cpu_hog`` (a CPU hog inside the instance, sharing its quota): its own segments x ``U(1.5, 4)``,
  its server spans start late (exponential, mean 10 % of its own time), late pickup of its callees'
  responses;
- ``cpu_contention`` (a CPU hog beside the instance): requests into it start late (exponential
  delays, mean 5-60 % of the median request latency), it picks up its callees' responses late (half
  of that), its own segments x ``U(1.05, 1.5)``;
- ``network_delay`` (netem-like delay on its interface, 5-100 % of the median latency, +-10 %):
  response gaps of calls into it; with probability 0.3 request gaps into it too; with probability
  0.5 its outgoing requests and its calls to uninstrumented callees as well.

The window is messy on purpose: tens to hundreds of requests, a request mix that changes between
the reference and the window, per-instance clock offsets (some gaps come out negative), exactly
duplicated spans and traces, calls whose callee is not instrumented (the server subtree removed),
and a fault that covers only part of the window. The output is Jaeger query-API JSON
(``{"data": [...]}``) that goes through the real parser.

This is a simulation of how faults show in traces, written from the signatures described in
``docs/localization.md``; it is no substitute for recorded faults, and results on it are reported
as synthetic.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firm.tracing import Trace, load_traces, parse_traces
from firm.tracing.culprit_features import CulpritFeatureConfig, culprit_features

__all__ = [
    "FAULT_KINDS",
    "FaultCase",
    "SpanTemplate",
    "boutique_templates",
    "dsb_templates",
    "hotel_templates",
    "make_case",
    "synthetic_rows",
    "template_from_trace",
]

FAULT_KINDS = ("cpu_hog", "cpu_contention", "network_delay")


@dataclass
class SpanTemplate:
    """One span of a template request and the recorded shape of its time (microseconds)."""

    service: str
    instance: str
    operation: str
    kind: str
    duration: int
    children: list[SpanTemplate] = field(default_factory=list)
    leads: list[int] = field(default_factory=list)
    """Per child: start minus its predecessor's end (or this span's start), us."""
    preds: list[int] = field(default_factory=list)
    """Per child: index of its predecessor sibling, -1 for this span's start."""
    tail: int = 0
    """End minus the latest child end, us (the duration when there are no children)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.instance)


def template_from_trace(trace: Trace) -> SpanTemplate:
    """The template of ``trace`` (its longest root's tree)."""
    spans = {s.span_id: s for s in trace.spans}
    kids: dict[str, list[Any]] = {}
    for s in trace.spans:
        if s.parent_id in spans:
            kids.setdefault(s.parent_id or "", []).append(s)
    roots = [s for s in trace.spans if s.parent_id not in spans]
    root = max(roots, key=lambda s: s.duration)

    def build(s: Any) -> SpanTemplate:
        cs = sorted(kids.get(s.span_id, []), key=lambda c: (c.start, c.end))
        t = SpanTemplate(s.service, s.instance, s.operation, s.kind, s.duration)
        for i, c in enumerate(cs):
            done = [j for j in range(i) if cs[j].end <= c.start]
            pred = max(done, key=lambda j: cs[j].end) if done else -1
            t.children.append(build(c))
            t.preds.append(pred)
            t.leads.append(c.start - (cs[pred].end if pred >= 0 else s.start))
        t.tail = s.end - max((c.end for c in cs), default=s.start)
        return t

    return build(root)


def dsb_templates(folder: Path) -> dict[str, list[SpanTemplate]]:
    """Templates of the recorded DeathStarBench traces in ``folder``, by request type."""
    out: dict[str, list[SpanTemplate]] = {}
    for f in sorted(folder.glob("*.json")):
        rtype = f.name.split("_R")[0]
        for t in load_traces(f):
            out.setdefault(rtype, []).append(template_from_trace(t))
    return out


def _call(
    caller: tuple[str, str],
    callee: str,
    op: str,
    own: int,
    calls: Sequence[Any] = (),
    db: int = 0,
    gap: int = 150,
    parallel: bool = False,
) -> SpanTemplate:
    """A client span of ``caller`` calling ``callee``'s server span (OpenTelemetry kinds)."""
    server = _server(callee, op, own, calls, db, parallel)
    client = SpanTemplate(caller[0], caller[1], f"{op}/call", "client", 0, [server], [gap], [-1], gap)
    client.duration = gap + server.duration + gap
    return client


def _server(
    service: str, op: str, own: int, calls: Sequence[Any] = (), db: int = 0, parallel: bool = False
) -> SpanTemplate:
    inst = f"{service}-7d9f8c-{zlib.crc32(service.encode()) % 10000:04d}"
    kids: list[SpanTemplate] = []
    for c in calls:
        callee, cop, cown, sub, cdb = (*c, (), 0)[:5] if len(c) == 3 else c
        kids.append(_call((service, inst), callee, cop, cown, sub, cdb))
    if db:
        kids.append(SpanTemplate(service, inst, "redis.get", "client", db, [], [], [], db))
    seg = max(own // (len(kids) + 1), 1)
    t = SpanTemplate(service, inst, op, "server", 0)
    t.children = kids
    for i in range(len(kids)):
        if parallel:  # fan-out: every call starts shortly after the span's start
            t.leads.append(seg + 30 * i)
            t.preds.append(-1)
        else:
            t.leads.append(seg)
            t.preds.append(i - 1)
    # Compute the end by laying out once.
    ends: list[int] = []
    for i, k in enumerate(kids):
        base = 0 if t.preds[i] < 0 else ends[t.preds[i]]
        ends.append(base + t.leads[i] + k.duration)
    end = max(ends, default=0)
    t.tail = seg
    t.duration = end + seg
    return t


def boutique_templates() -> dict[str, list[SpanTemplate]]:
    """A shop-like application built in code (not recorded): frontend, catalog, currency, cart,
    recommendation, ads, checkout, shipping, payment, email; OpenTelemetry span kinds, instance
    names like Kubernetes pods. Three request types."""
    home = _server(
        "frontend",
        "GET /",
        900,
        parallel=True,
        calls=[
            ("currency", "GetSupportedCurrencies", 300, (), 0),
            ("productcatalog", "ListProducts", 700, (), 0),
            ("cart", "GetCart", 400, (), 600),
            ("ad", "GetAds", 500, (), 0),
        ],
    )
    product = _server(
        "frontend",
        "GET /product",
        800,
        [
            ("productcatalog", "GetProduct", 400, (), 0),
            ("currency", "Convert", 250, (), 0),
            ("recommendation", "ListRecommendations", 900, (("productcatalog", "ListProducts", 600),), 0),
            ("ad", "GetAds", 500, (), 0),
        ],
    )
    checkout = _server(
        "frontend",
        "POST /cart/checkout",
        1000,
        [
            (
                "checkout",
                "PlaceOrder",
                1200,
                (
                    ("cart", "GetCart", 400, (), 600),
                    ("productcatalog", "GetProduct", 400),
                    ("currency", "Convert", 250),
                    ("shipping", "GetQuote", 350),
                    ("payment", "Charge", 700),
                    ("shipping", "ShipOrder", 400),
                    ("cart", "EmptyCart", 300, (), 500),
                    ("email", "SendOrderConfirmation", 900),
                ),
                0,
            ),
            ("currency", "Convert", 250, (), 0),
        ],
    )
    return {"home": [home], "product": [product], "checkout": [checkout]}


def hotel_templates() -> dict[str, list[SpanTemplate]]:
    """A hotel-booking-like application built in code (not recorded): a frontend fanning out to
    search (which calls geo and rate in turn), profile, recommendation, user and reservation, with
    caches and databases as uninstrumented leaf calls. Three request types."""
    search = _server(
        "hotel-frontend",
        "HTTP GET /hotels",
        600,
        [
            (
                "hotel-search",
                "/search.Search/Nearby",
                300,
                (
                    ("hotel-geo", "/geo.Geo/Nearby", 700, (), 400),
                    ("hotel-rate", "/rate.Rate/GetRates", 350, (), 900),
                ),
                0,
            ),
            ("hotel-profile", "/profile.Profile/GetProfiles", 250, (), 1200),
        ],
    )
    recommend = _server(
        "hotel-frontend",
        "HTTP GET /recommendations",
        500,
        [
            ("hotel-recommendation", "/recommendation.Recommendation/GetRecommendations", 900, (), 0),
            ("hotel-profile", "/profile.Profile/GetProfiles", 250, (), 1200),
        ],
    )
    reserve = _server(
        "hotel-frontend",
        "HTTP POST /reservation",
        700,
        [
            ("hotel-user", "/user.User/CheckUser", 400, (), 500),
            ("hotel-reservation", "/reservation.Reservation/MakeReservation", 600, (), 1500),
        ],
    )
    return {"search": [search], "recommend": [recommend], "reserve": [reserve]}


# -- Layout -------------------------------------------------------------------------------------


@dataclass
class _Effects:
    own: dict[tuple[str, str], float] = field(default_factory=dict)
    """Instance -> factor on own segments."""
    req_in: dict[tuple[str, str], float] = field(default_factory=dict)
    """Instance -> mean extra request gap into it (us; exponential unless fixed)."""
    resp_in: dict[tuple[str, str], float] = field(default_factory=dict)
    req_out: dict[tuple[str, str], float] = field(default_factory=dict)
    resp_out: dict[tuple[str, str], float] = field(default_factory=dict)
    leaf: dict[tuple[str, str], float] = field(default_factory=dict)
    fixed: bool = False
    """Delays are fixed (network delay, +-10 %) rather than exponential (queueing)."""


class _Layout:
    def __init__(self, rng: np.random.Generator, sigma: float, effects: _Effects | None) -> None:
        self.rng = rng
        self.sigma = sigma
        self.fx = effects
        self.load = 1.0
        self.spans: list[dict[str, Any]] = []

    def noise(self, v: float) -> float:
        if v <= 0:
            return v
        return v * self.load * float(self.rng.lognormal(0.0, self.sigma))

    def delay(self, table: dict[tuple[str, str], float], key: tuple[str, str]) -> float:
        if self.fx is None or key not in table:
            return 0.0
        m = table[key]
        if self.fx.fixed:
            return m * float(self.rng.uniform(0.9, 1.1))
        return float(self.rng.exponential(m))

    def own(self, key: tuple[str, str], v: float) -> float:
        f = self.fx.own.get(key, 1.0) if self.fx else 1.0
        return self.noise(v) * f if v > 0 else v

    def lay(self, t: SpanTemplate, start: float, parent: str | None, pid: int) -> float:
        sid = f"{pid:04x}{len(self.spans):012x}"
        rec: dict[str, Any] = {"t": t, "sid": sid, "parent": parent, "start": start}
        self.spans.append(rec)
        k = t.key
        if not t.children:
            if t.kind in ("client", "producer") or (t.kind == "" and "client" in t.operation.lower()):
                dur = self.noise(t.duration) + self.delay(self.fx.leaf if self.fx else {}, k)
            else:
                dur = self.own(k, t.duration)
            rec["end"] = start + max(dur, 0.0)
            return float(rec["end"])
        ends: list[float] = []
        for i, c in enumerate(t.children):
            base = start if t.preds[i] < 0 else ends[t.preds[i]]
            lead = t.leads[i]
            if c.key != k:  # request gap of a call
                lead_v = self.noise(lead) if lead > 0 else float(lead)
                lead_v += self.delay(self.fx.req_in if self.fx else {}, c.key)
                lead_v += self.delay(self.fx.req_out if self.fx else {}, k)
            else:
                lead_v = self.own(k, lead)
            ends.append(self.lay(c, base + lead_v, sid, pid))
        last = int(np.argmax(ends))
        tail = t.tail
        if t.children[last].key != k:  # response gap
            tail_v = self.noise(tail) if tail > 0 else float(tail)
            tail_v += self.delay(self.fx.resp_in if self.fx else {}, t.children[last].key)
            tail_v += self.delay(self.fx.resp_out if self.fx else {}, k)
        else:
            tail_v = self.own(k, tail)
        rec["end"] = max(ends) + tail_v
        return float(rec["end"])


def _instances(t: SpanTemplate, acc: dict[tuple[str, str], SpanTemplate]) -> None:
    acc.setdefault(t.key, t)
    for c in t.children:
        _instances(c, acc)


def _callees(t: SpanTemplate, acc: set[tuple[str, str]]) -> None:
    for c in t.children:
        if c.key != t.key:
            acc.add(c.key)
        _callees(c, acc)


def _callers(t: SpanTemplate, acc: set[tuple[str, str]]) -> None:
    for c in t.children:
        if c.key != t.key:
            acc.add(t.key)
        _callers(c, acc)


def _own_of(t: SpanTemplate, key: tuple[str, str]) -> float:
    """Own time per request of ``key`` in template ``t`` (us, rough)."""
    total = 0.0
    if t.key == key:
        for i, c in enumerate(t.children):
            if c.key == key and c.children:
                continue
            total += max(t.leads[i], 0)
        total += max(t.tail, 0)
        if not t.children and not (t.kind == "client" or "client" in t.operation.lower()):
            total += t.duration
    return total + sum(_own_of(c, key) for c in t.children)


@dataclass(frozen=True)
class FaultCase:
    """One labelled case: a reference window, a window with a fault, and the culprit."""

    kind: str
    """One of :data:`FAULT_KINDS`, or ``none`` for a quiet window."""
    culprit: tuple[str, str] | None
    """(service, instance) of the faulty instance (``None`` for a quiet window)."""
    reference: dict[str, Any]
    """Jaeger query-API JSON of the reference window."""
    window: dict[str, Any]
    """Jaeger query-API JSON of the window with the fault."""
    intensity: float
    """Size of the fault relative to the median request latency (ratio)."""

    def traces(self) -> tuple[list[Trace], list[Trace]]:
        """(window, reference), parsed by the real parser."""
        return (
            parse_traces(json.loads(json.dumps(self.window)), "synthetic-window"),
            parse_traces(json.loads(json.dumps(self.reference)), "synthetic-reference"),
        )


def _fault_effects(
    kind: str,
    culprit: tuple[str, str],
    size: float,
    rng: np.random.Generator,
    median_lat: float,
    own_med: float,
) -> _Effects:
    """What fault ``kind`` of ``size`` on ``culprit`` adds to the parts of a request (module doc)."""
    fx = _Effects()
    if kind == "none":
        pass
    elif kind == "cpu_hog":  # the quota is shared with the hog: slower work, throttled waits
        fx.own[culprit] = size
        wait = float(rng.uniform(0.0, 0.1)) * median_lat
        fx.req_in[culprit] = 0.1 * own_med * size + wait
        fx.resp_out[culprit] = 0.05 * own_med * size + wait / 2
    elif kind == "cpu_contention":
        fx.req_in[culprit] = size * median_lat
        fx.resp_out[culprit] = size * median_lat / 2
        fx.own[culprit] = float(rng.uniform(1.05, 1.5))
    else:
        d = size * median_lat
        fx.fixed = True
        fx.resp_in[culprit] = d
        if rng.random() < 0.3:
            fx.req_in[culprit] = d
        if rng.random() < 0.5:
            fx.req_out[culprit] = d
            fx.leaf[culprit] = d
    return fx


def make_case(
    templates: Mapping[str, Sequence[SpanTemplate]],
    kind: str,
    seed: int,
    *,
    culprit: tuple[str, str] | None = None,
    requests: tuple[int, int] = (30, 200),
    intensity: tuple[float, float] | None = None,
    messy: bool = True,
) -> FaultCase:
    """A seeded labelled case of fault ``kind`` (one of :data:`FAULT_KINDS`).

    ``culprit`` defaults to a random instance among those that serve requests (not the entry
    instance of every request type, whose signature a caller-less root cannot show in gaps).
    ``requests`` bounds the requests per window; ``intensity`` the fault's size relative to the
    median latency (defaults per kind in the module doc).
    """
    if kind not in (*FAULT_KINDS, "none"):
        raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)} or none, not {kind!r}")
    rng = np.random.default_rng(seed)
    types = sorted(templates)
    insts: dict[tuple[str, str], SpanTemplate] = {}
    for ts in templates.values():
        for t in ts:
            _instances(t, insts)
    if culprit is None:
        called: set[tuple[str, str]] = set()
        for ts in templates.values():
            for t in ts:
                _callees(t, called)
        candidates = sorted(called)
        culprit = candidates[int(rng.integers(len(candidates)))]
    median_lat = float(np.median([t.duration for ts in templates.values() for t in ts]))
    own_med = float(np.mean([_own_of(t, culprit) for ts in templates.values() for t in ts])) or 100.0

    lo, hi = (
        intensity
        or {
            "cpu_hog": (1.5, 4.0),
            "cpu_contention": (0.05, 0.6),
            "network_delay": (0.05, 1.0),
            "none": (0.0, 0.0),
        }[kind]
    )
    size = float(rng.uniform(lo, hi))
    fx = _fault_effects(kind, culprit, size, rng, median_lat, own_med)

    mix_ref = rng.dirichlet(np.ones(len(types)) * 2)
    mix_win = rng.dirichlet(np.ones(len(types)) * 2) if messy else mix_ref
    offsets = {k: (float(rng.normal(0, 300)) if messy else 0.0) for k in insts}
    drop = set()
    if messy and rng.random() < 0.5:  # an uninstrumented leaf callee (its server spans are missing)
        callers: set[tuple[str, str]] = set()
        for ts in templates.values():
            for t in ts:
                _callers(t, callers)
        servers = sorted(k for k in insts if k != culprit and k not in callers)
        if servers:
            drop.add(servers[int(rng.integers(len(servers)))])
    coverage = float(rng.uniform(0.7, 1.0)) if messy else 1.0
    n_ref = int(rng.integers(requests[0], requests[1] + 1))
    n_win = int(rng.integers(requests[0], requests[1] + 1))
    sigma = 0.25
    t0 = 1_700_000_000_000_000 + seed * 1_000_000_000
    ref = _window(rng, templates, types, mix_ref, n_ref, None, 1.0, offsets, drop, sigma, t0, messy, "r")
    win = _window(
        rng, templates, types, mix_win, n_win, fx, coverage, offsets, drop, sigma, t0 + 60_000_000, messy, "w"
    )
    return FaultCase(kind, None if kind == "none" else culprit, ref, win, size)


def _window(
    rng: np.random.Generator,
    templates: Mapping[str, Sequence[SpanTemplate]],
    types: list[str],
    mix: np.ndarray,
    n: int,
    fx: _Effects | None,
    coverage: float,
    offsets: Mapping[tuple[str, str], float],
    drop: set[tuple[str, str]],
    sigma: float,
    t0: int,
    messy: bool,
    tag: str,
) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for r in range(n):
        rtype = types[int(rng.choice(len(types), p=mix))]
        tpl_list = templates[rtype]
        tpl = tpl_list[int(rng.integers(len(tpl_list)))]
        faulty = fx is not None and r >= n * (1.0 - coverage)
        lay = _Layout(rng, sigma, fx if faulty else None)
        lay.load = float(rng.lognormal(0.0, 0.1))
        start = t0 + r * 60_000_000 // max(n, 1)
        lay.lay(tpl, float(start), None, r)
        data.append(
            _to_jaeger(f"{tag}{r:07x}{int(rng.integers(1 << 30)):08x}", lay.spans, offsets, drop, rng, messy)
        )
        if messy and rng.random() < 0.02:
            data.append(json.loads(json.dumps(data[-1])))  # the same trace twice
    return {"data": data}


def _to_jaeger(
    tid: str,
    spans: list[dict[str, Any]],
    offsets: Mapping[tuple[str, str], float],
    drop: set[tuple[str, str]],
    rng: np.random.Generator,
    messy: bool,
) -> dict[str, Any]:
    procs: dict[tuple[str, str], str] = {}
    out: list[dict[str, Any]] = []
    dropped: set[str] = set()
    for rec in spans:
        t: SpanTemplate = rec["t"]
        if rec["parent"] in dropped or (
            t.key in drop
            and t.kind in ("server", "")
            and rec["parent"] is not None
            and not any(r["sid"] == rec["parent"] and r["t"].key == t.key for r in spans)
        ):
            dropped.add(rec["sid"])
            continue
        pid = procs.setdefault(t.key, f"p{len(procs) + 1}")
        off = offsets.get(t.key, 0.0)
        s: dict[str, Any] = {
            "traceID": tid,
            "spanID": rec["sid"],
            "operationName": t.operation,
            "references": (
                []
                if rec["parent"] is None
                else [{"refType": "CHILD_OF", "traceID": tid, "spanID": rec["parent"]}]
            ),
            "startTime": int(rec["start"] + off),
            "duration": max(int(rec["end"] - rec["start"]), 0),
            "processID": pid,
            "tags": ([{"key": "span.kind", "type": "string", "value": t.kind}] if t.kind else []),
        }
        out.append(s)
        if messy and rng.random() < 0.01:
            out.append(json.loads(json.dumps(s)))  # an exactly duplicated span
    processes = {
        pid: {"serviceName": k[0], "tags": [{"key": "hostname", "type": "string", "value": k[1]}]}
        for k, pid in procs.items()
    }
    return {"traceID": tid, "spans": out, "processes": processes}


GRAPHS: dict[str, Callable[[], dict[str, list[SpanTemplate]]]] = {
    "boutique": boutique_templates,
    "hotel": hotel_templates,
}
"""Call graphs built in code, by name (``dsb`` needs the recorded traces, see :func:`graphs`)."""


def graphs(names: Sequence[str], dsb_folder: Path | None = None) -> dict[str, dict[str, list[SpanTemplate]]]:
    """Templates of the named graphs (``dsb``: the recorded DeathStarBench traces in ``dsb_folder``).

    Raises ``ValueError`` for an unknown name or ``dsb`` without a folder holding traces.
    """
    out: dict[str, dict[str, list[SpanTemplate]]] = {}
    for name in names:
        if name == "dsb":
            if dsb_folder is None or not dsb_folder.is_dir() or not any(dsb_folder.glob("*.json")):
                raise ValueError(f"the graph 'dsb' needs the DeathStarBench traces; {dsb_folder} holds none")
            out[name] = dsb_templates(dsb_folder)
        elif name in GRAPHS:
            out[name] = GRAPHS[name]()
        else:
            raise ValueError(f"unknown graph {name!r}; known: dsb, {', '.join(GRAPHS)}")
    return out


def synthetic_rows(
    templates: Mapping[str, Mapping[str, Sequence[SpanTemplate]]],
    cases_per_kind: int,
    seed: int,
    *,
    quiet_share: float = 0.1,
    feature_config: CulpritFeatureConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Dataset rows (see :mod:`firm.localize.train`) of ``cases_per_kind`` seeded cases of every
    fault kind on every graph of ``templates``, plus ``quiet_share`` as many quiet windows."""
    from firm.localize.train import rows_of_window  # noqa: PLC0415 (train imports this module's users)

    cfg = feature_config or CulpritFeatureConfig()
    plan: list[tuple[str, str, int]] = []
    n_quiet = round(cases_per_kind * quiet_share)
    for gi, g in enumerate(sorted(templates)):
        for ki, kind in enumerate((*FAULT_KINDS, "none")):
            count = n_quiet if kind == "none" else cases_per_kind
            plan.extend((g, kind, seed + 100_003 * gi + 10_007 * ki + i) for i in range(count))
    rows: list[dict[str, Any]] = []
    for done, (g, kind, case_seed) in enumerate(plan, 1):
        case = make_case(templates[g], kind, case_seed)
        win, ref = case.traces()
        cw = culprit_features(win, ref, cfg)
        culprits = {case.culprit: True} if case.culprit else {}
        rows.extend(
            rows_of_window(
                f"{g}-{kind}-{case_seed}",
                cw,
                culprits,
                source="synthetic",
                graph=g,
                kind=kind,
                targets=culprits,
            )
        )
        if progress is not None:
            progress(done, len(plan))
    return rows
