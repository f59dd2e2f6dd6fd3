"""What firm needs to know about a cluster: the application's services and how to reach the API.

A service is found by a namespace and a label selector (the same selector its Deployment uses);
``deployment`` names the Deployment that scale-out and scale-in change. Credentials come from a
kubeconfig file (``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``) or, inside a pod,
from the service account (in-cluster config).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ClusterError(FirmError):
    """The cluster could not be read or changed (the message says why and what to do)."""


class ClusterConfigError(ClusterError, InvalidInputError):
    """A cluster setting was rejected before anything was asked of the API."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the application on the cluster.

    Raises :class:`ClusterConfigError` for a namespace that is not a DNS label or an empty selector.
    """

    name: str
    """The service's name in traces and in firm (e.g. ``compose-post``)."""
    namespace: str
    """Kubernetes namespace of its pods."""
    selector: str
    """Label selector of its pods, as ``kubectl -l`` takes it (e.g. ``app=compose-post``)."""
    deployment: str | None = None
    """Deployment whose ``scale`` subresource scale-out and scale-in change (None: not scaled)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ClusterConfigError(
                "a service has no name", fix="give each service the name its spans carry"
            )
        if not _DNS_LABEL.match(self.namespace):
            raise ClusterConfigError(
                f"service {self.name}: namespace {self.namespace!r} is not a namespace name",
                fix="give a DNS label such as social-network",
            )
        if not self.selector.strip():
            raise ClusterConfigError(
                f"service {self.name}: the label selector is empty",
                fix="give the selector of its pods, e.g. app=compose-post",
            )


def services_from(mapping: object) -> list[ServiceSpec]:
    """Services from configuration: ``{name: {namespace, selector, deployment}}`` or a list of
    ``{name, namespace, selector, deployment}``; raises :class:`ClusterConfigError` on a missing field."""
    shape = "give {NAME: {namespace, selector, deployment}} or a list of {name, namespace, selector}"
    if isinstance(mapping, Mapping):
        bad = [k for k, v in mapping.items() if not isinstance(v, Mapping)]
        if bad:
            raise ClusterConfigError(f"service {bad[0]!r} is not a mapping of its fields", fix=shape)
        entries: list[Any] = [{"name": k, **v} for k, v in mapping.items()]
    elif isinstance(mapping, Sequence) and not isinstance(mapping, str | bytes):
        entries = list(mapping)
    else:
        raise ClusterConfigError(
            f"services are a {type(mapping).__name__}, not a mapping or a list", fix=shape
        )
    found = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ClusterConfigError(f"service entry {entry!r} is not a mapping of its fields", fix=shape)
        missing = [f for f in ("name", "namespace", "selector") if not entry.get(f)]
        if missing:
            raise ClusterConfigError(
                f"service entry {dict(entry)!r} lacks {', '.join(missing)}",
                fix="give name, namespace and selector (deployment is optional)",
            )
        found.append(
            ServiceSpec(
                str(entry["name"]),
                str(entry["namespace"]),
                str(entry["selector"]),
                str(entry["deployment"]) if entry.get("deployment") else None,
            )
        )
    return found


def api_client(
    kubeconfig: str | None = None, *, context: str | None = None, in_cluster: bool | None = None
) -> kube_client.ApiClient:
    """A client of the cluster's API server.

    ``in_cluster`` None: in-cluster config when no kubeconfig is given and the service account's
    environment is there (``KUBERNETES_SERVICE_HOST``), else the kubeconfig. Raises
    :class:`ClusterError` when neither can be loaded.
    """
    configuration = kube_client.Configuration()
    use_cluster = (
        in_cluster
        if in_cluster is not None
        else (kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ)
    )
    try:
        if use_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except (ConfigException, OSError, TypeError, ValueError, KeyError, AttributeError, yaml.YAMLError) as exc:
        where = (
            "the pod's service account" if use_cluster else (kubeconfig or "$KUBECONFIG or ~/.kube/config")
        )
        raise ClusterError(
            f"cannot load the cluster's credentials from {where}: {exc}",
            fix="give --kubeconfig FILE (and --context), or run firm in a pod with a service account",
        ) from exc
    return kube_client.ApiClient(configuration)


def api_error(exc: ApiException, doing: str) -> ClusterError:
    """A :class:`ClusterError` for an API error, with the server's own message and the fix for its status."""
    message = ""
    reason = exc.reason or ""
    if exc.body:
        try:
            status = json.loads(exc.body)
            message = str(status.get("message", ""))
            reason = str(status.get("reason", reason))
        except (ValueError, AttributeError):
            message = str(exc.body)[:200]
    fixes = {
        401: "the credentials were refused: renew the kubeconfig's token or certificate",
        403: "give firm's user or service account RBAC for this verb and resource (see docs/cluster.md)",
        404: "check the namespace and name; an older API server may not have this subresource",
        409: "another writer changed the object first: read it again and retry",
        422: "the API server rejected the value: check the limit against the pod's and node's",
        429: "the API server is throttling firm: lower the control rate",
    }
    code = exc.status or 0
    return ClusterError(
        f"{doing}: HTTP {code} {reason}" + (f": {message}" if message else ""),
        fix=fixes.get(code, "check the API server's reachability and logs"),
        status=code,
        reason=reason,
    )
