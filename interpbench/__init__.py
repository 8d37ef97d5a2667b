"""interpbench: score interpretability methods against ground truth compiled from RASP programs."""

from interpbench.case import Case, Domain, case, get_case, list_cases
from interpbench.errors import BadInputError, CompileError, InterpbenchError, VerificationError
from interpbench.explanation import Explanation
from interpbench.method import Method, method

__version__ = "0.1.0"

__all__ = [
    "BadInputError",
    "Case",
    "CompileError",
    "Domain",
    "Explanation",
    "InterpbenchError",
    "Method",
    "VerificationError",
    "__version__",
    "case",
    "get_case",
    "list_cases",
    "method",
]
