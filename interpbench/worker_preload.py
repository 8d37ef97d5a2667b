"""Imported once by the local executor's fork server: what every worker needs, loaded before forking.

Importing this module has effects on purpose: torch, captum, scipy, the scoring modules,
the suites and the method adapters are imported (registering cases and methods), so the
workers forked from the server start with them instead of importing them each (seconds
per worker). Nothing here runs torch or JAX, so forking afterwards is safe.
"""

from __future__ import annotations

import captum.attr  # noqa: F401 - every import here is for the workers
import scipy.stats  # noqa: F401
import torch  # noqa: F401

import interpbench.executors  # noqa: F401 - the worker entry point
import interpbench.head_metrics  # noqa: F401
import interpbench.program_metrics  # noqa: F401
import interpbench.runtime  # noqa: F401
import interpbench.synthesis  # noqa: F401
import interpbench.token_metrics  # noqa: F401
import interpbench.twin_metrics  # noqa: F401
from interpbench.case import list_cases
from interpbench.method import list_methods

list_cases()
list_methods()
