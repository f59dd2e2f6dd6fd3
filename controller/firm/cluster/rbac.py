"""What firm may do on a cluster: one ``SelfSubjectAccessReview`` (``authorization.k8s.io/v1``) per
verb and resource that ``firm run --cluster`` uses, each missing permission reported with its fix.

The API server answers a self review for whoever firm authenticates as (the kubeconfig's user, or
inside a pod its service account), with every authorizer it runs (RBAC, webhooks...), so the answer
is the one a real request would get. Every user may create one (``system:basic-user``).

What firm asks of the API (the calls in :mod:`firm.cluster.discovery`, :mod:`firm.cluster.kube`,
:mod:`firm.cluster.preflight` and :mod:`firm.cluster.cadvisor`):

========================  ========  ============================================================
resource                  verbs     for
========================  ========  ============================================================
``pods``                  list      discovery of each service's pods (its namespace)
``pods``                  get       re-reading a pod's limits before and after a resize
``pods/resize``           patch     CPU and memory by in-place resize
``deployments/scale``     get,      scale-out and -in of the services with a Deployment (PUT of
                          update    the Scale with its ``resourceVersion``)
``nodes``                 list      the nodes' allocatable CPU, and matching them to inventory hosts
``nodes/proxy``           get       the kubelet's ``/metrics/cadvisor`` (``telemetry: kubelet``)
========================  ========  ============================================================
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from firm.cluster.config import ClusterError, ServiceSpec, api_error, unreachable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Permission:
    """One verb on one resource that firm uses, where (``namespace`` None: cluster-scoped; "" : in
    every namespace) and what for."""

    verb: str
    resource: str
    group: str = ""
    """API group ("" the core group, ``apps`` for Deployments)."""
    subresource: str = ""
    namespace: str | None = None
    why: str = ""
    required: bool = True
    """Without it ``firm run --cluster`` cannot run (False: one feature is lost, the run goes on)."""

    @property
    def name(self) -> str:
        """``resource/subresource`` as RBAC rules spell it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def where(self) -> str:
        if self.namespace is None:
            return "cluster-wide"
        return f"in namespace {self.namespace}" if self.namespace else "in every namespace"

    def fix(self) -> str:
        """The rule that grants it, and the kind of role it belongs in."""
        rule = f'{{apiGroups: ["{self.group}"], resources: ["{self.name}"], verbs: ["{self.verb}"]}}'
        if self.namespace:
            return (
                f"add the rule {rule} to a Role in namespace {self.namespace} bound to firm's user or "
                "service account by a RoleBinding there (see docs/cluster.md, RBAC)"
            )
        return (
            f"add the rule {rule} to a ClusterRole bound to firm's user or service account by a "
            "ClusterRoleBinding (see docs/cluster.md, RBAC)"
        )


def needed(services: Sequence[ServiceSpec] | None, *, telemetry: str = "kubelet") -> list[Permission]:
    """Every permission ``firm run --cluster`` uses for ``services`` (None: not known, the pod and
    Deployment permissions are checked in every namespace). ``telemetry``: the cluster file's
    (``kubelet`` needs ``get`` on ``nodes/proxy``)."""
    namespaces: list[str] = sorted({s.namespace for s in services}) if services is not None else [""]
    scaled = sorted({s.namespace for s in services if s.deployment}) if services is not None else [""]
    found: list[Permission] = []
    for namespace in namespaces:
        found += [
            Permission("list", "pods", namespace=namespace, why="discovery of the services' pods"),
            Permission("get", "pods", namespace=namespace, why="re-reading a pod's limits around a resize"),
            Permission(
                "patch",
                "pods",
                subresource="resize",
                namespace=namespace,
                why="CPU and memory by in-place pod resize",
            ),
        ]
    for namespace in scaled:
        for verb in ("get", "update"):
            found.append(
                Permission(
                    verb,
                    "deployments",
                    group="apps",
                    subresource="scale",
                    namespace=namespace,
                    why="scale-out and -in through the Deployment's scale",
                    required=False,
                )
            )
    found.append(
        Permission(
            "list",
            "nodes",
            why="the nodes' allocatable CPU, and matching nodes to inventory hosts",
            required=False,
        )
    )
    if telemetry == "kubelet":
        found.append(
            Permission(
                "get",
                "nodes",
                subresource="proxy",
                why="telemetry: the kubelet's /metrics/cadvisor through the API server",
            )
        )
    return found


@dataclass(frozen=True)
class Access:
    """The API server's answer for one :class:`Permission`."""

    permission: Permission
    allowed: bool
    denied: bool = False
    """An authorizer said no outright (RBAC never does: it only fails to allow)."""
    reason: str = ""
    evaluation_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        p = self.permission
        found: dict[str, Any] = {
            "verb": p.verb,
            "resource": p.name,
            "group": p.group,
            "namespace": p.namespace,
            "why": p.why,
            "required": p.required,
            "allowed": self.allowed,
        }
        if self.reason:
            found["reason"] = self.reason
        if self.evaluation_error:
            found["evaluation_error"] = self.evaluation_error
        if not self.allowed:
            found["fix"] = p.fix()
        return found


def review(api: kube_client.ApiClient, permission: Permission, *, timeout_s: float = 10.0) -> Access:
    """One ``SelfSubjectAccessReview``; raises :class:`ClusterError` when the API refuses it or
    cannot be reached."""
    attributes = kube_client.V1ResourceAttributes(
        verb=permission.verb,
        group=permission.group,
        resource=permission.resource,
        subresource=permission.subresource or None,
        namespace=permission.namespace or None,
    )
    body = kube_client.V1SelfSubjectAccessReview(
        api_version="authorization.k8s.io/v1",
        kind="SelfSubjectAccessReview",
        spec=kube_client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes),
    )
    doing = f"asking whether firm may {permission.verb} {permission.name} {permission.where()}"
    try:
        answer = kube_client.AuthorizationV1Api(api).create_self_subject_access_review(
            body, _request_timeout=timeout_s
        )
    except ApiException as exc:
        raise api_error(exc, doing) from exc
    except (HTTPError, OSError) as exc:
        raise unreachable(exc, doing, api) from exc
    status = answer.status
    if status is None:
        raise ClusterError(
            f"{doing}: the API server's answer has no status",
            fix="check that the server serves authorization.k8s.io/v1 (Kubernetes 1.6 or later)",
        )
    return Access(
        permission,
        allowed=bool(status.allowed),
        denied=bool(status.denied),
        reason=status.reason or "",
        evaluation_error=status.evaluation_error or "",
    )


def rbac_report(api: kube_client.ApiClient, permissions: Iterable[Permission]) -> dict[str, Any]:
    """Every permission reviewed: ``checked`` (each answer), ``missing`` (the refused ones, with the
    fix), ``ready`` (no required one missing), and ``error`` when the reviews could not be made
    (the report then says nothing about the permissions)."""
    answers: list[Access] = []
    try:
        for permission in permissions:
            answers.append(review(api, permission))
    except ClusterError as exc:
        log.warning("RBAC checks not made: %s", exc)
        return {"checked": [], "missing": [], "ready": False, "error": str(exc)}
    missing = [a for a in answers if not a.allowed]
    return {
        "checked": [a.as_dict() for a in answers],
        "missing": [a.as_dict() for a in missing],
        "ready": not any(a.permission.required for a in missing),
        "error": None,
    }
