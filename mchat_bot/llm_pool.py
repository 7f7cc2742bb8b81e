"""Several deployments of one model, tried in turn: the direct path's load balancing and failover.

``llm.model`` and ``llm.api_base`` may each name several; the deployments are every model at every
base (two models behind one gateway, one model on three servers, or both). The litellm path hands
the same list to litellm's Router; the direct OpenAI-compatible path uses :class:`DeploymentPool`:
round robin over the deployments that are not cooling down, and a deployment whose try failed with a
retryable error (connection, 429, 5xx) cools down for ``cooldown`` seconds, so the next try, and
every other call meanwhile, goes elsewhere. With all of them cooling down, the one that recovers
first is tried: a pool never refuses a call by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deployment:
    model: str
    api_base: str = ""

    def __str__(self) -> str:
        return f"{self.model}@{self.api_base}" if self.api_base else self.model


def deployments_of(models: str | Sequence[str], bases: str | Sequence[str] = "") -> list[Deployment]:
    """Every model at every base, in the order given (no base: the provider's default)."""
    model_list = [models] if isinstance(models, str) else list(models)
    base_list = [bases] if isinstance(bases, str) else list(bases)
    model_list = [m.strip() for m in model_list if m.strip()]
    base_list = [b.strip() for b in base_list if b.strip()] or [""]
    return [Deployment(m, b) for m in model_list for b in base_list]


class DeploymentPool:
    def __init__(
        self,
        deployments: Sequence[Deployment],
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not deployments:
            raise ValueError("no LLM deployment")
        self.deployments = tuple(deployments)
        self.cooldown = cooldown
        self._clock = clock
        self._next = 0
        self._cool_until: dict[Deployment, float] = {}

    def __len__(self) -> int:
        return len(self.deployments)

    def pick(self, tried: Sequence[Deployment] = ()) -> Deployment:
        """The next deployment in turn that is not cooling down, one this call has not ``tried``
        while there is such a one; all cooling down: the one that recovers first."""
        now = self._clock()
        n = len(self.deployments)
        for fresh_only in (True, False):
            for step in range(n):
                dep = self.deployments[(self._next + step) % n]
                if self._cool_until.get(dep, 0.0) > now or (fresh_only and dep in tried):
                    continue
                self._next = (self._next + step + 1) % n
                return dep
        return min(self.deployments, key=lambda d: self._cool_until.get(d, 0.0))

    def failed(self, dep: Deployment) -> None:
        """A retryable failure: give this deployment a rest."""
        self._cool_until[dep] = self._clock() + self.cooldown

    def succeeded(self, dep: Deployment) -> None:
        self._cool_until.pop(dep, None)

    def has_untried(self, tried: Sequence[Deployment]) -> bool:
        """Is a deployment left that this call has not tried and that is not cooling down?"""
        now = self._clock()
        return any(d not in tried and self._cool_until.get(d, 0.0) <= now for d in self.deployments)
