"""Load specs are validated on construction; errors name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from firm.load import (
    ConstantRate,
    LoadSpec,
    LoadSpecError,
    Mix,
    RedisOutput,
    RequestType,
    Slo,
    TraceRate,
    parse_mix,
    parse_slos,
)

URL = "http://127.0.0.1:8080"


def error_of(build: object) -> LoadSpecError:
    assert callable(build)
    with pytest.raises(LoadSpecError) as info:
        build()
    return info.value


@pytest.mark.parametrize(
    ("build", "field", "words"),
    [
        (lambda: ConstantRate(-5), "rate.rps", "negative"),
        (lambda: ConstantRate(0), "rate.rps", "zero"),
        (lambda: ConstantRate(float("nan")), "rate.rps", "not a finite number"),
        (lambda: Mix(0, 0, 0), "mix", "every weight is zero"),
        (lambda: Mix(10, -1, 30), "mix.home", "negative"),
        (lambda: Slo(RequestType.COMPOSE_POST, 0), "slo.compose", "zero"),
        (lambda: LoadSpec(URL, ConstantRate(10)), "duration_s", "needs a duration"),
        (lambda: LoadSpec(URL, ConstantRate(10), duration_s=-1), "duration_s", "negative"),
        (lambda: LoadSpec("ftp://x", ConstantRate(10), duration_s=1), "url", "not an http(s) URL"),
        (lambda: LoadSpec("http://:80", ConstantRate(10), duration_s=1), "url", "not an http(s) URL"),
        (lambda: LoadSpec("http://h:99999", ConstantRate(10), duration_s=1), "url", "invalid port"),
        (lambda: LoadSpec(URL, ConstantRate(10), duration_s=1, users=0), "users", "not positive"),
        (lambda: LoadSpec(URL, ConstantRate(10), duration_s=1, connections=0), "connections", "not positive"),
        (
            lambda: LoadSpec(URL, ConstantRate(10), duration_s=1, connections=8, max_in_flight=4),
            "max_in_flight",
            "below connections",
        ),
        (lambda: LoadSpec(URL, ConstantRate(10), duration_s=1, timeout_s=0), "timeout_s", "zero"),
        (lambda: LoadSpec(URL, ConstantRate(10), duration_s=1, window_s=-0.5), "window_s", "negative"),
        (lambda: LoadSpec(URL, ConstantRate(10), duration_s=1, seed=-3), "seed", "non-negative"),
        (
            lambda: LoadSpec(
                URL,
                ConstantRate(10),
                duration_s=1,
                slos=(Slo(RequestType.COMPOSE_POST, 5), Slo(RequestType.COMPOSE_POST, 6)),
            ),
            "slo.compose",
            "given twice",
        ),
        (lambda: RedisOutput("http://127.0.0.1:6379"), "redis.url", "not a Redis URL"),
        (
            lambda: RedisOutput("redis://127.0.0.1", requests_maxlen=0),
            "redis.requests_maxlen",
            "not positive",
        ),
    ],
)
def test_invalid_values_name_the_field_and_a_fix(build: object, field: str, words: str) -> None:
    err = error_of(build)
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert words in str(err)
    assert err.fix, "every error says how to fix it"


def test_missing_trace_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    err = error_of(lambda: TraceRate(missing, peak_rps=100))
    assert err.field == "rate.path"
    assert str(missing) in str(err)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda p: TraceRate(p, peak_rps=-1), "rate.peak_rps"),
        (lambda p: TraceRate(p, peak_rps=10, speedup=0), "rate.speedup"),
    ],
)
def test_trace_rate_numbers_are_checked(tmp_path: Path, build: object, field: str) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("1\n2\n")
    assert callable(build)
    assert error_of(lambda: build(trace)).field == field


def test_a_spec_is_frozen_and_knows_its_slos() -> None:
    spec = LoadSpec(URL, ConstantRate(10), duration_s=1, slos=parse_slos("compose=500,home=200"))
    assert spec.slo_ms(RequestType.COMPOSE_POST) == 500
    assert spec.slo_ms(RequestType.READ_HOME_TIMELINE) == 200
    assert spec.slo_ms(RequestType.READ_USER_TIMELINE) is None
    with pytest.raises(AttributeError):
        spec.users = 3  # type: ignore[misc]


def test_default_mix_is_deathstarbench() -> None:
    assert Mix().probabilities() == pytest.approx((0.1, 0.6, 0.3))
    assert Mix().types() == list(RequestType)


def test_parse_mix_accepts_short_and_long_names_and_leaves_others_out() -> None:
    mix = parse_mix("compose=1, read-home-timeline=3")
    assert mix.probabilities() == pytest.approx((0.25, 0.75, 0.0))
    assert mix.types() == [RequestType.COMPOSE_POST, RequestType.READ_HOME_TIMELINE]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("", "mix", "is empty"),
        ("compose", "mix", "not TYPE=NUMBER"),
        ("tweet=5", "mix", "not a request type"),
        ("home=x", "mix.home", "not a number"),
        ("home=1,home=2", "mix.home", "given twice"),
        ("home=0", "mix", "every weight is zero"),
    ],
)
def test_parse_mix_errors(text: str, field: str, words: str) -> None:
    err = error_of(lambda: parse_mix(text))
    assert (err.field, words in str(err)) == (field, True)


def test_parse_slos_one_number_applies_to_every_type() -> None:
    slos = parse_slos("250")
    assert {s.request_type for s in slos} == set(RequestType)
    assert {s.p99_ms for s in slos} == {250}
    assert error_of(lambda: parse_slos("home=-1")).field == "slo.home"


def test_request_type_paths_match_the_frontend_contract() -> None:
    assert [rt.path for rt in RequestType] == ["/compose_post", "/read_home_timeline", "/read_user_timeline"]
    assert RequestType.parse("USER") is RequestType.READ_USER_TIMELINE
    assert RequestType.parse("read_home_timeline") is RequestType.READ_HOME_TIMELINE
