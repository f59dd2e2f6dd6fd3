"""firm on a Kubernetes cluster: discovery, telemetry, traces and executors for many nodes.

- :mod:`firm.cluster.config`: :class:`ServiceSpec` (a service of the application: namespace, label
  selector, Deployment) and :func:`api_client` (kubeconfig or in-cluster credentials).
- :mod:`firm.cluster.discovery`: each service's pods, their node, QoS class, containers and IDs, and
  the cgroup path each pod has on its node (cgroupfs or systemd driver; containerd, CRI-O, Docker).
- :mod:`firm.cluster.cadvisor`: per-container and per-pod counters from cAdvisor or the kubelet's
  ``/metrics/cadvisor`` (Prometheus text), turned into :class:`firm.telemetry.Sample` rates.
- :mod:`firm.cluster.traces`: the loop's trace source over Jaeger's query API, one window per
  interval, with back-pressure when Jaeger is slow.
- :mod:`firm.cluster.ansible`: :class:`AnsibleExecutor`, a step's actions for one node in one
  ansible-runner run of the ``firm.core`` modules.
- :mod:`firm.cluster.kube`: :class:`KubernetesExecutor` (CPU through in-place pod resize, the rest
  through the ansible executor on the pod's node) and :class:`KubernetesScaler` (the Deployment's
  ``scale`` subresource).
- :mod:`firm.cluster.app`: :class:`ClusterTarget`, the application on a cluster as the loop's target.
- :mod:`firm.cluster.target`: :class:`AnsibleOverride`, the testbed driven through the ansible executor.
- :mod:`firm.cluster.cli`: ``firm cluster``, the application's pods as firm sees them.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
