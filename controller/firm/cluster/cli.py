"""``firm cluster`` (what firm sees of an application on a Kubernetes cluster), ``firm preflight
--cluster`` and ``firm run --cluster`` (the control loop on a cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.cli_options import describe, json_option, refuse_empty
from firm.schema import load_yaml, yaml_position
from firm.textfiles import TextFileError, read_small_file

if TYPE_CHECKING:
    from firm.cluster.config import ServiceSpec
    from firm.cluster.discovery import PodInfo
    from firm.loop.session import RunOptions

_SERVICE_HELP = (
    "A service as NAME=NAMESPACE:SELECTOR[:DEPLOYMENT], e.g. "
    "compose-post=social-network:app=compose-post-service:compose-post-service (repeatable)."
)


def _services(specs: tuple[str, ...], services_file: Path | None) -> list[ServiceSpec]:
    from firm.cluster.config import ServiceSpec, services_from  # noqa: PLC0415 (kubernetes is slow to import)

    found: list[ServiceSpec] = []
    if services_file is not None:
        try:
            doc = load_yaml(read_small_file(services_file).decode("utf-8"))
        except TextFileError as exc:
            raise click.ClickException(
                f"--services {services_file} {exc}; give the YAML file of the services"
            ) from exc
        except RecursionError as exc:
            raise click.ClickException(
                f"--services {services_file} nests too deeply; give a YAML file of the services"
            ) from exc
        except yaml.YAMLError as exc:
            where = yaml_position(exc)
            raise click.ClickException(
                f"--services {services_file} is not YAML{where}; give a YAML file of the services"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"--services {services_file}: {describe(exc)}") from exc
        if not isinstance(doc, (dict, list)):
            raise click.ClickException(
                f"--services {services_file}: expected a mapping of services or a list"
            )
        found += services_from(doc.get("services", doc) if isinstance(doc, dict) else doc)
    for spec in specs:
        name, _, rest = spec.partition("=")
        parts = rest.split(":")
        if not name or not 2 <= len(parts) <= 3:
            raise click.BadParameter(
                f"{spec!r} is not NAME=NAMESPACE:SELECTOR[:DEPLOYMENT]", param_hint="--service"
            )
        found.append(ServiceSpec(name, parts[0], parts[1], parts[2] if len(parts) > 2 and parts[2] else None))
    if not found:
        raise click.UsageError("give the application's services: --service ... or --services FILE")
    return found


def _row(pod: PodInfo, driver: str) -> dict[str, Any]:
    try:
        path: str | None = pod.cgroup_path(driver)
    except FirmError:
        path = None
    return {**pod.as_dict(), "cgroup": path}


@click.command("cluster")
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    envvar="KUBECONFIG",
    help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the pod's service account).",
)
@click.option(
    "--context", default=None, callback=refuse_empty, help="kubeconfig context (default: its current one)."
)
@click.option("--service", "service_specs", multiple=True, metavar="SPEC", help=_SERVICE_HELP)
@click.option(
    "--services",
    "services_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML file: {services: {NAME: {namespace, selector, deployment}}}.",
)
@click.option(
    "--cgroup-driver",
    type=click.Choice(["cgroupfs", "systemd"]),
    default="cgroupfs",
    show_default=True,
    help="The kubelets' cgroup driver, for the cgroup paths shown.",
)
@click.option(
    "--metrics",
    is_flag=True,
    help="Also read each node's /metrics/cadvisor once (through the API "
    "server's node proxy) and show the pods' cumulative counters.",
)
@json_option("Print JSON (one object per pod).")
def cluster_command(
    kubeconfig: str | None,
    context: str | None,
    service_specs: tuple[str, ...],
    services_file: Path | None,
    cgroup_driver: str,
    metrics: bool,
    as_json: bool,
) -> None:
    """Show the application's pods on a Kubernetes cluster as firm sees them: service, node, QoS
    class, containers and the cgroup path on the node (see docs/cluster.md)."""
    # kubernetes is slow to import: only this command needs it
    from firm.cluster.cadvisor import kubelet_fetcher, parse  # noqa: PLC0415
    from firm.cluster.config import api_client  # noqa: PLC0415
    from firm.cluster.discovery import Discovery  # noqa: PLC0415

    try:
        services = _services(service_specs, services_file)
        api = api_client(kubeconfig, context=context)
        pods = Discovery(api, services).pods()
        rows = [_row(p, cgroup_driver) for p in pods]
        if metrics:
            fetch = kubelet_fetcher(api)
            for node in sorted({p.node for p in pods if p.node}):
                counters = parse(fetch(node))
                for row in rows:
                    found = counters.get(row["uid"])
                    if row["node"] == node and found is not None:
                        row["counters"] = {k: v for k, v in vars(found.pod).items() if v not in (None, "")}
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    table = Table(title=f"{len(rows)} pods of {len(services)} services")
    for column in ("service", "pod", "node", "QoS", "containers", "cgroup"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["service"],
            f"{row['namespace']}/{row['name']}",
            row["node"] or "-",
            row["qos_class"],
            ", ".join(c["name"] for c in row["containers"]),
            row["cgroup"] or "-",
        )
    Console().print(table)


def preflight_cluster(
    inventory: str | None,
    kubeconfig: str | None,
    context: str | None,
    in_cluster: bool,
    *,
    probe_pqos: bool,
    as_json: bool,
    cluster_file: Path | None = None,
) -> None:
    """``firm preflight --cluster``: :func:`firm.cluster.preflight.cluster_preflight` as tables or
    JSON; with ``cluster_file`` (``firm run --cluster``'s) its services, telemetry and node names."""
    from firm import preflight  # noqa: PLC0415
    from firm.cluster.config import api_client  # noqa: PLC0415
    from firm.cluster.preflight import cluster_preflight  # noqa: PLC0415
    from firm.cluster.run import load_config  # noqa: PLC0415

    try:
        cluster = load_config(cluster_file) if cluster_file is not None else None
        api = (
            api_client(kubeconfig, context=context, in_cluster=in_cluster or None)
            if kubeconfig is not None or in_cluster
            else None
        )
        report = cluster_preflight(
            inventory,
            api=api,
            probe_pqos=probe_pqos,
            mapping=cluster.nodes if cluster is not None else None,
            services=cluster.service_specs() if cluster is not None else None,
            telemetry=cluster.telemetry if cluster is not None else "kubelet",
        )
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        preflight.render_cluster(report, Console())


def run_on_cluster(
    cluster_file: Path,
    options: RunOptions,
    *,
    kubeconfig: str | None,
    context: str | None,
    inventory: Path | None,
) -> None:
    """``firm run --cluster FILE``: the control loop on a Kubernetes cluster (see docs/cluster.md).

    The loop and its ``options`` are `firm run`'s (:mod:`firm.loop.session`); the target comes from :func:`firm.cluster.run.build`
    (pods, Jaeger, cAdvisor, in-place resize, the ansible executor on the nodes of ``inventory``,
    the Deployments' scale). Credentials: ``kubeconfig`` (else ``$KUBECONFIG``, ``~/.kube/config``,
    or inside a pod its service account).
    """
    from ansible_collections.firm.core.plugins.module_utils import redis_auth  # noqa: PLC0415
    from firm.cluster.config import api_client  # noqa: PLC0415
    from firm.cluster.run import build  # noqa: PLC0415
    from firm.loop import session  # noqa: PLC0415
    from firm.telemetry.redis_store import RedisTelemetrySink  # noqa: PLC0415
    from firm.telemetry.source import TelemetrySink  # noqa: PLC0415

    cluster, config, slo, chosen = _cluster_setup(cluster_file, options)
    client = (
        redis_auth.connect(config.redis_url, socket_timeout=2, socket_connect_timeout=2)
        if config.redis_url
        else None
    )
    sinks: list[TelemetrySink] = [RedisTelemetrySink(client)] if client is not None else []
    with session.recording(client, config, options) as (journal, metrics):
        try:
            api = api_client(kubeconfig, context=context)
            built = build(
                cluster,
                api,
                str(inventory) if inventory is not None else None,
                dry_run=options.dry_run,
                sinks=sinks,
            )
        except FirmError as exc:
            raise click.ClickException(str(exc)) from exc
        outcome = session.run(
            config,
            built.target,
            chosen,
            options,
            slo_ms=slo,
            window_s=config.window_s or cluster.slo_window_s,
            journal=journal,
            metrics=metrics,
            scaler=built.scaler,
            started=built.start,
            finished=built.stop,
            instances="pods",
        )
    pods = len(built.target.names())
    Console().print(
        session.summary(outcome, dry_run=options.dry_run, where=" on the cluster", scope=f" over {pods} pods")
    )


def _cluster_setup(config_path_cluster: Path, options: RunOptions) -> tuple[Any, Any, dict[str, float], Any]:
    """The cluster file, the loop's configuration, the SLOs and the decider; ClickException on any error."""
    from firm.cluster.run import load_config  # noqa: PLC0415
    from firm.loop import config as loop_config  # noqa: PLC0415
    from firm.loop import session  # noqa: PLC0415

    try:
        cluster = load_config(config_path_cluster)
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    config = session.loop_config(options)
    try:
        loop_config.check_services(config, cluster.services, f"the cluster file {config_path_cluster}")
        loop_config.check_model_files(config)
    except FirmError as exc:
        raise click.ClickException(str(exc)) from exc
    slo = {**cluster.slo_ms, **config.slo_ms}
    if not slo:
        raise click.ClickException(
            f"no SLO to keep: give slo_ms (request type: p99 ms) in {config_path_cluster} or in --config"
        )
    return cluster, config, slo, session.choose_decider(config, request_types=list(slo))
