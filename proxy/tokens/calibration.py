"""Per-model calibration of local token estimates against the upstream's counts
(docs/design.md §4.1)."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

# --------------------------------------------------------------------------- calibration


class Calibration:
    """Per-model ratio of the upstream's reported prompt tokens to the local estimate.

    `observe` folds each (local, reported) pair into an exponential moving average of the
    ratio; pairs that cannot be right (non-positive, or a ratio outside [0.5, 3]) are ignored.
    The first observation of a model sets the factor directly.
    """

    MIN_RATIO = 0.5
    MAX_RATIO = 3.0

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._factors: dict[str, float] = {}
        self._samples: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, local_tokens: int, reported_tokens: int) -> bool:
        """Learn from one upstream response; returns whether the pair was used."""
        try:
            local, reported = float(local_tokens), float(reported_tokens)
        except (TypeError, ValueError):
            return False
        if not (local > 0 and reported > 0 and math.isfinite(local) and math.isfinite(reported)):
            return False
        ratio = reported / local
        if not self.MIN_RATIO <= ratio <= self.MAX_RATIO:
            return False
        with self._lock:
            old = self._factors.get(model)
            self._factors[model] = ratio if old is None else old + self.alpha * (ratio - old)
            self._samples[model] = self._samples.get(model, 0) + 1
        return True

    def factor(self, model: str) -> float:
        return self._factors.get(model, 1.0)

    def samples(self, model: str) -> int:
        return self._samples.get(model, 0)

    def adjust(self, model: str, local_tokens: int) -> int:
        """The local estimate corrected by the model's factor (rounded up)."""
        # round before ceil so that 100 * 1.1 (= 110.00000000000001) is 110, not 111
        return math.ceil(round(local_tokens * self.factor(model), 6))

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "alpha": self.alpha,
                "models": {
                    m: {"factor": f, "samples": self._samples.get(m, 0)}
                    for m, f in self._factors.items()
                },
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calibration:
        """Rebuild from `to_dict()` output; malformed entries are dropped, not fatal."""
        data = data or {}
        try:
            calibration = cls(alpha=float(data.get("alpha", 0.2)))
        except (TypeError, ValueError):
            calibration = cls()
        models = data.get("models")
        if isinstance(models, Mapping):
            for model, entry in models.items():
                try:
                    factor = float(entry["factor"])
                    samples = int(entry.get("samples", 1))
                except (TypeError, ValueError, KeyError, AttributeError):
                    continue
                if math.isfinite(factor) and cls.MIN_RATIO <= factor <= cls.MAX_RATIO:
                    calibration._factors[str(model)] = factor
                    calibration._samples[str(model)] = max(samples, 0)
        return calibration
