"""The embedded default: a traced social-network application on this machine.

Each service instance is a real process in its own cgroups and network namespace, joined to the
others through veths and a bridge, so that every firm.core knob applies to exactly one service.
"""
