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
from firm.schema import yaml_position
from firm.urls import describe_transport, redact_url

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""An RFC 1123 label, as Kubernetes names namespaces: at most 63 characters."""
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""An RFC 1123 subdomain, as Kubernetes names Deployments: at most 253 characters."""


class ClusterError(FirmError):
    """The cluster could not be read or changed (the message says why and what to do)."""


class ClusterConfigError(ClusterError, InvalidInputError):
    """A cluster setting was rejected before anything was asked of the API."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the application on the cluster.

    Raises :class:`ClusterConfigError` for a namespace that is not a DNS label, an empty selector or a
    deployment that is not a Kubernetes name (before anything connects: a scale-out would find no such
    Deployment only in the middle of a run).
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
        if self.deployment is not None and not _DNS_SUBDOMAIN.match(self.deployment):
            raise ClusterConfigError(
                f"service {self.name}: deployment {self.deployment!r} is not a Deployment name",
                fix="give the name `kubectl get deployments -n NAMESPACE` shows (lower-case letters, digits, "
                "'-' and '.', at most 253 characters), or leave deployment out for a service firm does not scale",
            )


SERVICE_FIELDS = ("name", "namespace", "selector", "deployment")
"""The fields of a service entry in configuration (``deployment`` is optional)."""


def services_from(mapping: object) -> list[ServiceSpec]:
    """Services from configuration: ``{name: {namespace, selector, deployment}}`` or a list of
    ``{name, namespace, selector, deployment}``; raises :class:`ClusterConfigError` naming the entry
    for a missing field, an unknown one or a value that is not text."""
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
            f"the services are {_kind(mapping)} ({_short(mapping)}), not a mapping or a list", fix=shape
        )
    found = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ClusterConfigError(
                f"service entry {_short(entry)} is not a mapping of its fields", fix=shape
            )
        where = (
            f"service {entry.get('name')!r}" if entry.get("name") else f"service entry {_short(dict(entry))}"
        )
        unknown = [str(k) for k in entry if k not in SERVICE_FIELDS]
        if unknown:
            raise ClusterConfigError(
                f"{where}: {', '.join(unknown)} {'is not a field' if len(unknown) == 1 else 'are not fields'}",
                fix=f"the fields are {', '.join(SERVICE_FIELDS)} (deployment is optional)",
            )
        missing = [f for f in ("name", "namespace", "selector") if entry.get(f) in (None, "")]
        if missing:
            raise ClusterConfigError(
                f"{where} lacks {', '.join(missing)}",
                fix="give name, namespace and selector (deployment is optional)",
            )
        not_text = [f for f in SERVICE_FIELDS if entry.get(f) is not None and not isinstance(entry[f], str)]
        if not_text:
            raise ClusterConfigError(
                f"{where}: " + ", ".join(f"{f} is {_kind(entry[f])} ({_short(entry[f])})" for f in not_text),
                fix="give each as text, e.g. namespace: social-network, selector: app=compose-post "
                "(quote a name YAML would read as a number)",
            )
        found.append(
            ServiceSpec(entry["name"], entry["namespace"], entry["selector"], entry.get("deployment") or None)
        )
    return found


def _kind(value: object) -> str:
    """``a number``, ``a list``, ``a mapping``, ``true or false``..., for messages."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return "a list"
    if value is None:
        return "empty"
    return "text" if isinstance(value, str) else f"a {type(value).__name__}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
            f"cannot load the cluster's credentials from {where}: {_credentials_problem(exc)}",
            fix="give --kubeconfig FILE (and --context), or run firm in a pod with a service account",
        ) from exc
    return kube_client.ApiClient(configuration)


def _credentials_problem(exc: BaseException) -> str:
    """Why a kubeconfig (or the service account) could not be loaded, in firm's words: a YAML error
    as its line and problem, the client's own ConfigException as its message (it names the missing
    key or context), an OSError as its reason, and the client's TypeError / KeyError / AttributeError
    on a document of the wrong shape as that."""
    if isinstance(exc, yaml.YAMLError):
        return f"not YAML{yaml_position(exc)}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename is not None else "")
    if isinstance(exc, ConfigException | OSError):
        return str(exc).strip().rstrip(".")
    return (
        "not a kubeconfig of the usual shape (apiVersion, clusters, contexts and users, each a list of "
        "{name, ...} entries, and current-context); `kubectl config view` shows what it reads"
    )


def server_of(api: Any) -> str | None:
    """The API server's URL of a client (``kubernetes.client.ApiClient``, or an API object holding one
    as ``api_client``), password redacted (:func:`firm.urls.redact_url`); None when it has none."""
    client = getattr(api, "api_client", api)
    host = getattr(getattr(client, "configuration", None), "host", None)
    return redact_url(host) if isinstance(host, str) and host else None


def unreachable(exc: BaseException, doing: str, api: Any = None) -> ClusterError:
    """A :class:`ClusterError` for an API server that could not be reached while ``doing`` (``"listing
    the nodes"``): which server (from ``api``, password redacted), why in words
    (:func:`firm.urls.describe_transport`, not the HTTP library's text) and the fix."""
    server = server_of(api)
    return ClusterError(
        f"cannot reach the API server{f' at {server}' if server else ''} {doing}: "
        f"{describe_transport(exc, where=server is None)}",
        fix="check the kubeconfig's server address (`kubectl cluster-info` shows it), the network and, "
        "for a TLS error, the kubeconfig's certificate authority",
    )


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
