"""The control loop: every interval, read the window, check the SLOs, decide, bound, apply, audit.

- :mod:`firm.loop.config`: :class:`LoopConfig` (timing, SLO checks, guardrails, reclaim, deciders).
- :mod:`firm.loop.observe`: :class:`Observation`, what one step sees (SLO status, instances).
- :mod:`firm.loop.deciders`: the :class:`Decider` interface; ``firm``, ``aimd`` and ``none``.
- :mod:`firm.loop.guard`: :class:`Guardrails`, the bounds every action passes through.
- :mod:`firm.loop.audit`: audit records in Redis and JSON lines.
- :mod:`firm.loop.metrics`: Prometheus metrics.
- :mod:`firm.loop.testbed`: discovery of the embedded testbed (instances, traces, telemetry).
- :mod:`firm.loop.runner`: :class:`ControlLoop`, which orders the stages.
- :mod:`firm.loop.session`: ``firm run``'s body for any target (the testbed's, a cluster's).
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
