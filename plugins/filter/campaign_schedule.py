# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: campaign_schedule
short_description: Turn an anomaly campaign definition into rounds of concurrent injections
version_added: "0.1.0"
description:
  - Takes a campaign (C(id) with either C(anomalies), an explicit list, or C(random), a seeded plan)
    and the campaign's hosts, and returns its rounds. All injections of a round start together.
  - A random campaign draws, per round, how many hosts and which of each host's C(anomaly_targets)
    take an anomaly, and each anomaly's kind, intensity and duration, from C(seed). The same seed,
    hosts and targets always give the same schedule.
positional: hosts, hostvars
options:
  _input:
    description:
      - The campaign, a dict with C(id) and either C(random) (C(seed), C(rounds), C(kinds), and ranges
        C(intensity), C(duration), C(gap), C(hosts_per_round), C(services_per_host)) or C(anomalies), a
        list of entries with C(host), C(kind), C(intensity), C(duration), optionally C(round),
        C(service), C(cgroup), C(namespace), C(interface), C(link_rate) and C(name). See EXAMPLES.
    type: dict
    required: true
  hosts:
    description: The hosts the campaign may use.
    type: list
    elements: str
    required: true
  hostvars:
    description: The inventory's C(hostvars), for each host's C(anomaly_targets).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Plan a seeded campaign over the workers
  vars:
    seeded:
      id: c1
      random:
        seed: 7
        rounds: 3
        intensity: [40, 90]
        duration: [10, 30]
  ansible.builtin.set_fact:
    firm_schedule: "{{ seeded | firm.core.campaign_schedule(groups['workers'], hostvars) }}"

- name: Plan an explicit campaign
  vars:
    explicit:
      id: c2
      anomalies:
        - host: node1
          service: web
          cgroup: firm/web
          kind: cpu
          intensity: 50
          duration: 20
  ansible.builtin.set_fact:
    firm_schedule: "{{ explicit | firm.core.campaign_schedule(groups['workers'], hostvars) }}"
"""

RETURN = r"""
_value:
  description: The rounds, each with C(index), C(length_s) and C(injections) (each with its C(host) and the
    C(args) of M(firm.core.anomaly)).
  type: list
  elements: dict
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.firm.core.plugins.module_utils import campaign
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError


def campaign_schedule(
    definition: Mapping[str, Any], hosts: Sequence[str], hostvars: Mapping[str, Any]
) -> list[dict[str, Any]]:
    try:
        if not isinstance(definition, Mapping):
            raise campaign.CampaignInputError(
                f"the campaign {definition!r} is not a mapping",
                fix="give {id: ..., random: {...}} or {id: ..., anomalies: [...]}",
            )
        campaign_id = campaign.check_id(str(definition.get("id", "")))
        if "anomalies" in definition:
            rounds = campaign.explicit_schedule(
                campaign_id,
                definition["anomalies"],
                list(hosts),
                campaign.parse_gap(definition.get("gap", 5)),
            )
        elif "random" in definition:
            plan = campaign.parse_random_plan(definition["random"])
            targets = {host: campaign.parse_targets(hostvars[host].get("anomaly_targets")) for host in hosts}
            rounds = campaign.random_schedule(campaign_id, plan, targets)
        else:
            raise campaign.CampaignInputError(
                "the campaign has neither anomalies nor random",
                fix="give anomalies: [...] or random: {seed: ...}",
            )
    except FirmError as err:
        raise AnsibleFilterError(f"campaign: {err}") from err
    return [r.as_dict() for r in rounds]


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"campaign_schedule": campaign_schedule}
