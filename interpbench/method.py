"""Method adapters: settings at construction, data at call time, registered by a decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from interpbench.errors import BadInputError
from interpbench.explanation import KINDS
from interpbench.registry import Registry

if TYPE_CHECKING:
    from interpbench.compiled import CompiledCase
    from interpbench.explanation import Explanation

FAMILIES = ("attention", "attribution", "synthesis", "baseline", "circuit")


class Method:
    """Base class of every adapter.

    Subclasses take their settings as keyword arguments (captum names: `n_steps`,
    `baselines`, `internal_batch_size`, `perturbations_per_eval`, `n_samples`) and
    implement `explain`. Heavy imports belong inside `explain`, so a missing
    dependency marks the method unavailable instead of breaking the harness.

    `behaviour_only` declares that the method only runs the model forward on token
    inputs (perturbed tokens, hidden keys) and reads its outputs, never its internals or
    gradients. Every twin computes the base model's function on all such inputs, so the
    run records these methods' twin cells as not applicable instead of recomputing an
    explanation that cannot move (tests/test_twins.py checks the premise).
    `reads_model` is False for the baselines, whose explanations ignore the model: they
    would be perfectly twin-consistent by construction, so twin-level metrics skip them.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"
    defaults: ClassVar[dict[str, Any]] = {}
    behaviour_only: ClassVar[bool] = False
    reads_model: ClassVar[bool] = True

    def __init__(self, **settings: Any) -> None:
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise BadInputError(f"method {self.name!r} has no setting {sorted(unknown)[0]!r}; "
                                f"settings: {sorted(self.defaults)}")  # fmt: skip
        self.settings = {**self.defaults, **settings}

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this method cannot run here (missing dependency, unfaithful rules), or None.

        An unavailable method is listed with its reason and left out of default grids;
        asking for it by name is an error that quotes the reason.
        """
        return None

    def params(self) -> dict[str, Any]:
        """Every setting used, recorded with each leaderboard row."""
        return dict(self.settings)

    def explain(self, case: CompiledCase, *, seed: int = 0) -> Explanation:
        """Explains the model of `case` on its evaluation inputs."""
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")

M = TypeVar("M", bound=type[Method])


def method(name: str, *, family: str, kinds: tuple[str, ...], version: str = "1") -> Callable[[M], M]:
    """Class decorator registering a Method subclass under `name`.

    Example:
        @method("my_saliency", family="attribution", kinds=("token_relevance",))
        class MySaliency(Method):
            defaults = {"abs": True}
            def explain(self, case, *, seed=0): ...
    """
    if family not in FAMILIES:
        raise BadInputError(f"method {name!r}: family must be one of {FAMILIES}, got {family!r}")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise BadInputError(f"method {name!r}: unknown explanation kind {bad[0]!r}; kinds: {KINDS}")

    def register(cls: M) -> M:
        cls.name, cls.family, cls.kinds, cls.version = name, family, tuple(kinds), version
        METHODS.add(name, cls, replace=True)
        return cls

    return register


def get_method(name: str) -> type[Method]:
    """Looks up a registered method (loading adapters first), with "did you mean"."""
    from interpbench.discovery import load_methods

    load_methods()
    return METHODS.get(name)


def list_methods() -> list[type[Method]]:
    """Every registered method class."""
    from interpbench.discovery import load_methods

    load_methods()
    return [cls for _, cls in METHODS.items()]
