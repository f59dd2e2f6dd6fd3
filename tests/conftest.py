"""Settings for the whole test session.

torch compiles its optimizers' helpers with TorchDynamo, which is imported on first use and registers
substitutes for a few builtins, ``sys.intern`` among them. Importing ``ansible.module_utils.basic``
(the module tests do) replaces ``sys.intern`` with a patch object, after which that registration
fails with a TypeError. The firm command never imports both in one process; a test session does, so
TorchDynamo is imported first, while ``sys.intern`` is still the builtin.
"""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):
    import torch._dynamo  # noqa: F401
