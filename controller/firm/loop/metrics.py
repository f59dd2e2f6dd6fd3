"""Prometheus metrics of the loop, served with the official client (``prometheus-client``).

Every name starts with ``firm_``:

| metric | type | labels | what |
| --- | --- | --- | --- |
| ``firm_p99_ms`` | gauge | type | p99 latency of the last window, ms |
| ``firm_slo_ms`` | gauge | type | the SLO, ms |
| ``firm_requests_in_window`` | gauge | type | requests completed in the last window |
| ``firm_slo_violations_total`` | counter | type | steps whose window violated the SLO |
| ``firm_actions_total`` | counter | resource, outcome | actions: applied, dry_run, rolled_back, failed, rejected |
| ``firm_limit`` | gauge | instance, service, resource | limit in force (resource unit; +Inf: none) |
| ``firm_culprit_score`` | gauge | instance | the localizer's score at the last raise |
| ``firm_cpu_busy_cores`` | gauge | cpu, by | each CPU's load over the last step, cores: ``managed`` (the instances) and ``foreign`` (other work; placement moves culprits off a CPU where it is high), where the target reports them |
| ``firm_stage_seconds`` | histogram | stage | time of each stage of a step |
| ``firm_steps_total`` | counter | status | steps by outcome (acted, no_action, stale, failed) |
| ``firm_loop_errors_total`` | counter | kind | errors the loop survived (trace_store, telemetry, decider, executor, audit) |
| ``firm_scale_total`` | counter | service, direction, outcome | scale-out and scale-in requests (started, not_started) and their ends (done, failed) |

The registry is the loop's own, so several loops (tests) never collide.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Histogram buckets of stage latency, seconds."""


class Metrics:
    """The loop's metrics; :meth:`serve` exposes them over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.p99 = Gauge("firm_p99_ms", "p99 latency of the last window, ms", ["type"], registry=r)
        self.slo = Gauge("firm_slo_ms", "SLO of the request type (p99), ms", ["type"], registry=r)
        self.requests = Gauge(
            "firm_requests_in_window", "Requests completed in the last window", ["type"], registry=r
        )
        self.violations = Counter(
            "firm_slo_violations_total", "Steps whose window violated the SLO", ["type"], registry=r
        )
        self.actions = Counter(
            "firm_actions_total", "Actions by resource and outcome", ["resource", "outcome"], registry=r
        )
        self.limit = Gauge(
            "firm_limit",
            "Limit in force (resource unit; +Inf: none)",
            ["instance", "service", "resource"],
            registry=r,
        )
        self.culprit = Gauge(
            "firm_culprit_score", "Localizer score at the last raise", ["instance"], registry=r
        )
        self.cpu = Gauge(
            "firm_cpu_busy_cores",
            "Each CPU's load over the last step, cores, by the managed instances or other work",
            ["cpu", "by"],
            registry=r,
        )
        self.stage = Histogram(
            "firm_stage_seconds",
            "Time of each stage of a control step",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.steps = Counter("firm_steps_total", "Control steps by outcome", ["status"], registry=r)
        self.errors = Counter("firm_loop_errors_total", "Errors the loop survived", ["kind"], registry=r)
        self.scale = Counter(
            "firm_scale_total", "Scale requests", ["service", "direction", "outcome"], registry=r
        )
        self._limit_labels: dict[str, set[tuple[str, str, str]]] = {}
        """instance -> the label values of its ``firm_limit`` series (to remove them when it goes)."""
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``address:port`` in a daemon thread until :meth:`close`; an OSError
        says which address and port could not be listened on, and why."""
        try:
            self._server, self._thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise listen_error(exc, address, port) from exc

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def observe_step(self, record: Mapping[str, Any]) -> None:
        """Update every metric from one audit record."""
        self.steps.labels(record.get("status", "unknown")).inc()
        for status in record.get("slo") or []:
            name = status["type"]
            if status.get("slo_ms") is not None:
                self.slo.labels(name).set(status["slo_ms"])
            self.requests.labels(name).set(status.get("count") or 0)
            if status.get("p99_ms") is not None:
                self.p99.labels(name).set(status["p99_ms"])
            if status.get("state") == "violated":
                self.violations.labels(name).inc()
        for load in (record.get("inputs") or {}).get("cpus") or []:
            for by in ("managed", "foreign"):
                if isinstance(load.get(by), int | float):
                    self.cpu.labels(str(load["cpu"]), by).set(load[by])
        for stage, ms in (record.get("stages_ms") or {}).items():
            self.stage.labels(stage).observe(ms / 1000)
        for culprit in (record.get("decision") or {}).get("culprits", []):
            if isinstance(culprit.get("score"), int | float):
                self.culprit.labels(culprit["instance"]).set(culprit["score"])
        for rejected in record.get("rejected") or []:
            self.actions.labels(rejected["resource"], "rejected").inc()
        result = record.get("result") or {}
        outcome = (
            "dry_run"
            if result.get("dry_run")
            else "rolled_back"
            if result.get("rolled_back")
            else "failed"
            if result.get("error")
            else "applied"
        )
        for action in result.get("actions", []):
            if action.get("changed"):
                self.actions.labels(action["resource"], outcome).inc()
        for error in record.get("errors") or []:
            self.errors.labels(error.get("kind", "other")).inc()
        for request in record.get("scale_requests") or []:
            self.scale.labels(
                request.get("service", ""),
                request.get("direction", ""),
                "started" if request.get("started") else "not_started",
            ).inc()
        for event in record.get("scale_events") or []:
            self.scale.labels(
                event.get("service", ""), event.get("direction", ""), event.get("outcome", "")
            ).inc()

    def set_limits(self, limits: Mapping[str, tuple[str, Mapping[str, float | str | None]]]) -> None:
        """instance -> (service, resource -> value): the limits in force."""
        for instance, (service, values) in limits.items():
            for resource, value in values.items():
                if isinstance(value, float | int):
                    self.limit.labels(instance, service, resource).set(
                        float(value) if not math.isinf(value) else math.inf
                    )
                    self._limit_labels.setdefault(instance, set()).add((instance, service, resource))

    def forget(self, instances: Iterable[str]) -> None:
        """Remove the series of instances that are gone (scaled in): their limits and culprit score."""
        for instance in instances:
            for labels in self._limit_labels.pop(instance, set()):
                with contextlib.suppress(KeyError):
                    self.limit.remove(*labels)
            with contextlib.suppress(KeyError):
                self.culprit.remove(instance)


ADDRESS_FIX = (
    "give an address of this machine: 0.0.0.0 (every IPv4 address), :: (every address), "
    "127.0.0.1 (this machine only), or a host name that resolves to one"
)
"""What ``--metrics-address`` takes, for a message's fix."""

_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
"""A host name as RFC 1123 writes one: labels of letters, digits and inner hyphens."""


def address_problem(address: str) -> str | None:
    """What is wrong with ``address`` as the address the metrics listen on, or None: it must be an IP
    address (IPv6 without brackets) or a host name that resolves (a name is looked up)."""
    if not address:
        return "an empty address names no interface"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        return None
    if address.startswith("[") or address.endswith("]"):
        return f"{address!r} is in brackets; write an IPv6 address without them (::1, not [::1])"
    if not _HOST_NAME.fullmatch(address) or len(address) > 253:
        return f"{address!r} is neither an IP address nor a host name"
    if address.rstrip(".").rsplit(".", 1)[-1].isdigit():
        return f"{address!r} is not an IP address (four numbers from 0 to 255) nor a host name"
    try:
        socket.getaddrinfo(address, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return f"{address!r} does not resolve ({getattr(exc, 'strerror', None) or exc})"
    return None


def listen_error(exc: OSError, address: str, port: int) -> OSError:
    """``exc`` (from listening on ``address:port``) as an OSError of the same errno whose
    ``strerror`` names the address and the port."""
    reason = exc.strerror or str(exc)
    return OSError(exc.errno, f"cannot listen on address {address} port {port} ({reason})")


def probe_listen(port: int, address: str) -> None:
    """Bind a socket to ``address:port`` as :meth:`Metrics.serve` will (address reuse allowed) and
    close it, so that a port taken or an address not of this machine is found before a run starts.
    Raises the OSError of :func:`listen_error`."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except OSError as exc:
        raise listen_error(exc, address, port) from exc
