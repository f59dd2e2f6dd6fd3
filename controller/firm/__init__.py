"""firm: fine-grained, SLO-oriented resource management for microservices."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
