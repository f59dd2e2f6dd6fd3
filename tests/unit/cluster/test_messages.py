"""What the cluster commands say when the cluster cannot be reached or its files are wrong: firm's
words (what failed, which server with its password hidden, the fix), never the HTTP library's
("HTTPSConnectionPool", "Max retries exceeded", "NewConnectionError", "[Errno 111]") or pydantic's."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.cli import main
from firm.cluster.cadvisor import url_fetcher
from firm.cluster.config import ClusterError, api_client
from firm.cluster.run import ClusterRunConfigError, load_config

LIBRARY_WORDS = (
    "HTTPSConnectionPool",
    "HTTPConnectionPool",
    "Max retries",
    "NewConnectionError",
    "Errno",
    "urlopen error",
)
PYDANTIC_WORDS = ("Input should", "Extra inputs", "validation error", "type=")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig(tmp_path: Path, server: str, name: str = "kubeconfig") -> str:
    path = tmp_path / name
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return str(path)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["cluster", "--service", "web=social:app=web"],
        ["preflight", "--cluster"],
    ],
)
def test_an_api_server_that_refuses_is_named_with_its_password_hidden(
    tmp_path: Path, args: list[str]
) -> None:
    server = f"https://admin:s3cret@127.0.0.1:{closed_port()}"
    code, output = invoke(*args, "--kubeconfig", kubeconfig(tmp_path, server))
    assert code == 1
    assert f"cannot reach the API server at https://admin:***@127.0.0.1:{server.rsplit(':', 1)[1]}" in output
    assert "connection refused, after retrying" in output and "Fix: check the kubeconfig's server" in output
    assert "s3cret" not in output
    assert not any(w in output for w in LIBRARY_WORDS), output


def test_an_unknown_api_server_host_says_so(tmp_path: Path) -> None:
    code, output = invoke(
        "cluster",
        "--service",
        "web=social:app=web",
        "--kubeconfig",
        kubeconfig(tmp_path, "https://no-such-host.invalid:6443"),
    )
    assert code == 1 and "no-such-host.invalid:6443" in output and "unknown host" in output
    assert not any(w in output for w in LIBRARY_WORDS), output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("a: [\n", "not YAML (line 2"),
        ("[1, 2]\n", "not a kubeconfig of the usual shape"),
        (
            "apiVersion: v1\nclusters: 5\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\nusers: []\n",
            "not a kubeconfig of the usual shape",
        ),
        ("foo: 1\n", "current-context"),
    ],
)
def test_a_malformed_kubeconfig_is_described(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "kc.yaml"
    path.write_text(content)
    with pytest.raises(ClusterError) as raised:
        api_client(str(path))
    message = str(raised.value)
    assert f"cannot load the cluster's credentials from {path}: " in message and expected in message
    assert "object is not" not in message and "indices must be" not in message


def test_cadvisor_that_does_not_answer_is_named_in_firms_words() -> None:
    port = closed_port()
    with pytest.raises(ClusterError) as raised:
        url_fetcher(f"http://127.0.0.1:{port}/metrics?n={{node}}")("node-1")
    message = str(raised.value)
    assert (
        f"cannot read cAdvisor metrics at http://127.0.0.1:{port}/metrics?n=node-1: connection refused"
        in message
    )
    assert not any(w in message for w in LIBRARY_WORDS), message
    with pytest.raises(ClusterError) as raised:
        url_fetcher(f"http://user:pw@127.0.0.1:{port}/metrics")("node-1")
    assert "http://user:***@127.0.0.1" in str(raised.value) and ":pw@" not in str(raised.value)
    with pytest.raises(ClusterError, match="not an http"):
        url_fetcher("{node}/metrics")("node-1")


def cluster_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cluster.yml"
    path.write_text("services: {web: {namespace: social, selector: app=web}}\nentry_services: [web]\n" + body)
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "jaeger_url: http://u:secret@[::1\n",
            "jaeger_url is 'http://***@[::1': it is not a URL (Invalid IPv6 URL)",
        ),
        ("jaeger_url: jaeger:16686\n", "jaeger_url is 'jaeger:16686': it is not an http(s) URL with a host"),
        ("jaeger_url: http://j:16686\nslo_window_s: .nan\n", "slo_window_s is nan; give a finite number"),
        (
            "jaeger_url: http://j:16686\ntrace_horizon_s: .inf\n",
            "trace_horizon_s is inf; give a finite number",
        ),
        ("jaeger_url: http://j:16686\nslo_ms: {compose: -1}\n", "the SLO of compose is not above 0"),
        (
            "jaeger_url: http://j:16686\nmin_replicas: 5\nmax_replicas: 2\n",
            "min_replicas 5 is above max_replicas 2",
        ),
        (
            "jaeger_url: http://j:16686\ncadvisor_url: 'http://{address}:8080/{pod}'\n",
            "it holds {pod}; only {address} and {node}",
        ),
        ("jaeger_url: http://j:16686\ncadvisor_url: 'http://{address:8080/'\n", "an unbalanced brace"),
        ("jaeger_url: http://j:16686\nrefresh_s: fast\n", "refresh_s is 'fast'; give a number"),
        (
            "jaeger_url: http://j:16686\nspeed: 3\n",
            "speed is not a known field (the fields are services, jaeger_url",
        ),
    ],
)
def test_the_cluster_file_is_refused_field_by_field(tmp_path: Path, body: str, expected: str) -> None:
    path = cluster_file(tmp_path, body)
    with pytest.raises(ClusterRunConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "secret" not in message
    assert not any(w in message for w in PYDANTIC_WORDS), message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a: [\n", "is not YAML (line 2"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"- 1\n", "holds a list, not a mapping"),
    ],
)
def test_an_unreadable_cluster_file_is_described(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "cluster.yml"
    path.write_bytes(content)
    with pytest.raises(ClusterRunConfigError) as raised:
        load_config(path)
    assert expected in str(raised.value)


def test_a_valid_cluster_file_with_a_literal_brace_in_the_cadvisor_url(tmp_path: Path) -> None:
    config = load_config(
        cluster_file(
            tmp_path, "jaeger_url: http://j:16686\ncadvisor_url: 'http://{address}:8080/m?x={{1}}'\n"
        )
    )
    assert config.cadvisor_url == "http://{address}:8080/m?x={{1}}"


def test_a_service_spec_with_too_many_parts_is_a_usage_error(tmp_path: Path) -> None:
    code, output = invoke(
        "cluster",
        "--kubeconfig",
        kubeconfig(tmp_path, "https://127.0.0.1:1"),
        "--service",
        "web=ns:app=w:dep:extra",
    )
    assert code == 2 and "is not NAME=NAMESPACE:SELECTOR[:DEPLOYMENT]" in output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a: [\n", "is not YAML (line 2: expected the node content"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"services: {web: {namespace: social, selector: app=web, bogus: 1}}\n", "bogus is not a field"),
        (b"services: {web: {}, web: {}}\n", "(line 1: the key 'web' is given twice)"),
        (b"services: {web: {namespace: 1e400}}\n", "the number 1e400 is out of range"),
        (b"[" * 100_000, "nests too deeply"),
    ],
)
def test_a_bad_services_file_is_described(tmp_path: Path, content: bytes, expected: str) -> None:
    services = tmp_path / "services.yml"
    services.write_bytes(content)
    code, output = invoke(
        "cluster", "--kubeconfig", kubeconfig(tmp_path, "https://127.0.0.1:1"), "--services", str(services)
    )
    assert code == 1 and expected in output, output
    assert "<unicode string>" not in output


@pytest.mark.parametrize(
    ("loop_yaml", "expected"),
    [
        ("exclude: [nosuch]\n", "exclude names service 'nosuch', which the cluster file"),
        (
            "services: {redis: {cpu: {min: 1, max: 2, max_step: 1}}}\n",
            "services names service 'redis', which the cluster file",
        ),
    ],
)
def test_firm_run_on_a_cluster_refuses_services_its_cluster_file_does_not_name(
    tmp_path: Path, loop_yaml: str, expected: str
) -> None:
    loop = tmp_path / "loop.yml"
    loop.write_text(loop_yaml)
    cluster = cluster_file(tmp_path, "jaeger_url: http://127.0.0.1:1\nslo_ms: {home: 200}\n")
    code, output = invoke(
        "run",
        "--cluster",
        str(cluster),
        "--kubeconfig",
        kubeconfig(tmp_path, "https://127.0.0.1:1"),
        "--config",
        str(loop),
        "--decider",
        "aimd",
        "--dry-run",
        "--redis",
        "redis://127.0.0.1:1/0",
    )
    assert code == 1 and expected in output and "name the services of the cluster file" in output, output
    assert "'web'" not in output.split("Fix:")[0] and "web" in output.split("Fix:")[1]


def test_the_default_exclusion_of_the_testbed_s_redis_is_no_error_on_a_cluster_without_one() -> None:
    from firm.loop.config import check_services, load  # noqa: PLC0415 (the loop layer, only here)

    check_services(
        load(None), ["web"], "the cluster file"
    )  # the default exclude: [redis] excludes nothing here
    with pytest.raises(FirmError, match="exclude names service 'redis'"):
        check_services(load(None, exclude=["redis"]), ["web"], "the cluster file")  # written: refused
