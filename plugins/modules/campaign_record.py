#!/usr/bin/python
# Copyright: firm developers
# Apache License 2.0 (see galaxy.yml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: campaign_record
short_description: Record an anomaly campaign's plan and injections as ground truth
version_added: "0.1.0"
description:
  - Appends a campaign's plan, or the anomalies it started or that have ended (as M(firm.core.anomaly)
    returns them), to a JSON-lines campaign file and to Redis.
  - In Redis each injection is a hash C(firm:injection:<campaign>:<name>), listed in
    C(firm:campaign:<campaign>:injections) and indexed by start time in the sorted set
    C(firm:injections); the plan is in the hash C(firm:campaign:<campaign>).
  - Runs where the record is kept (usually the controller, with C(delegate_to)), and needs the C(redis)
    Python package there when O(redis_url) is given.
author:
  - firm developers
extends_documentation_fragment:
  - firm.core.common
options:
  campaign:
    description: The campaign's id.
    type: str
    required: true
  event:
    description:
      - V(planned) records the O(schedule); V(started) and V(ended) record O(entries).
    type: str
    choices: [planned, started, ended]
    required: true
  entries:
    description: Anomaly summaries, each with at least C(name), C(host), C(kind), C(started_at).
    type: list
    elements: dict
    default: []
  schedule:
    description: The campaign's rounds, with O(event=planned).
    type: list
    elements: dict
    default: []
  jsonl:
    description: The campaign file to append to; no file when unset.
    type: path
  redis_url:
    description: Redis to record in, for example C(redis://127.0.0.1:6379/0); no Redis when unset.
    type: str
  redis_password:
    description:
      - Redis password; by default the one in O(redis_url), else C($FIRM_REDIS_PASSWORD), else, for a Redis
        on this machine's loopback, the one C(make services) generated into C(/etc/firm/redis.password)
        (C($FIRM_REDIS_PASSWORD_FILE) moves it).
    type: str
  redis_wait:
    description:
      - Seconds to keep resending the record while Redis does not answer (down or restarting); the
        campaign file is written first in any case. The module fails when Redis has not taken it by then.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Record the anomalies this round started
  firm.core.campaign_record:
    campaign: c1
    event: started
    entries: "{{ started.results | map(attribute='anomaly') | list }}"
    jsonl: /var/lib/firm/campaigns/c1.jsonl
    redis_url: redis://127.0.0.1:6379/0
    redis_password: "{{ lookup('ansible.builtin.env', 'FIRM_REDIS_PASSWORD') }}"
  delegate_to: localhost
"""

RETURN = r"""
recorded:
  description: How many injections were recorded.
  returned: always
  type: int
  sample: 3
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.firm.core.plugins.module_utils import campaign, redis_auth
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False


def argument_spec() -> dict[str, Any]:
    return {
        "campaign": {"type": "str", "required": True},
        "event": {"type": "str", "choices": ["planned", "started", "ended"], "required": True},
        "entries": {"type": "list", "elements": "dict", "default": []},
        "schedule": {"type": "list", "elements": "dict", "default": []},
        "jsonl": {"type": "path"},
        "redis_url": {"type": "str"},
        "redis_password": {"type": "str", "no_log": True},
        "redis_wait": {"type": "int", "default": 30},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    client = None
    try:
        params["entries"] = campaign.validate_entries(params["event"], params["entries"])
        campaign.check_id(params["campaign"])
    except FirmError as err:
        module.fail_json(**err.as_dict())
    if params["redis_url"]:
        if not HAS_REDIS:
            module.fail_json(msg=missing_required_lib("redis"))
        try:
            redis_auth.check_url(params["redis_url"])
        except FirmError as err:
            module.fail_json(**err.as_dict())
        if params["redis_wait"] < 0:
            module.fail_json(
                msg=f"redis_wait {params['redis_wait']} is negative", fix="give 0 or more seconds"
            )
        try:
            client = redis.Redis.from_url(
                params["redis_url"],
                password=params["redis_password"] or redis_auth.password_for(params["redis_url"]),
                socket_timeout=10,
                socket_connect_timeout=5,
            )
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # down or restarting: the record waits for it (redis_wait)
        except (redis.RedisError, ValueError) as exc:
            module.fail_json(
                msg=f"cannot reach Redis at {params['redis_url']}: {exc}",
                fix="start Redis (the redis role) or fix redis_url / redis_password",
            )
    if module.check_mode:
        module.exit_json(changed=True, recorded=len(params["entries"]))
    try:
        recorded = campaign.record(
            params["event"],
            params["campaign"],
            params["entries"],
            params["jsonl"],
            client,
            params["schedule"],
            redis_wait_s=params["redis_wait"],
            retry_on=(redis.ConnectionError, redis.TimeoutError) if client else (),
        )
    except FirmError as err:
        module.fail_json(**err.as_dict())
    except redis.RedisError as exc:
        module.fail_json(msg=f"Redis refused the campaign record: {exc}", fix="check Redis's logs and memory")
    module.exit_json(changed=True, recorded=recorded)


if __name__ == "__main__":
    main()
