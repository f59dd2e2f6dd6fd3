"""``firm experiment``: FIRM against the baselines it was built to beat, on the embedded testbed.

- :mod:`firm.experiment.policies`: the policies behind the loop's ``Decider`` protocol (``static``,
  ``none``, ``hpa``, ``hpa-fast``; ``aimd`` and ``firm`` are the loop's own deciders).
- :mod:`firm.experiment.schedule`: the seeded anomaly schedule.
- :mod:`firm.experiment.report`: the report computed from recorded runs (pure functions), its
  table and its plots.
- :mod:`firm.experiment.runner`: one run per policy on the testbed, with the same load and anomalies.
"""

import logging

from ansible_collections.firm.core.plugins.module_utils.errors import FirmError, InvalidInputError

logging.getLogger(__name__).addHandler(logging.NullHandler())


class ExperimentError(FirmError):
    """The experiment could not run, or not finish cleanly."""


class ExperimentInputError(ExperimentError, InvalidInputError):
    """An option or input of the experiment is wrong; nothing has started."""


__all__ = ["ExperimentError", "ExperimentInputError"]
