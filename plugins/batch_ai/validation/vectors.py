"""Embedding validation: a vector per record, checked for its length and that every value is a
finite number, fast (one numpy pass over a 1536-float vector, no text checks on numbers).

A valid vector is kept as ``{model, dimensions, vector}`` where ``vector`` is the little-endian
float32 bytes in base64 (:func:`encode`): 8 KB for 1536 dimensions instead of ~30 KB of JSON
numbers, in the ledger and in memory; the sinks decode it (:func:`decode`).
"""

from __future__ import annotations

import base64
from typing import Any

from batch_ai import jsonio
from batch_ai.validation.records import Verdict

#: Results a collect validates and writes at once: a 1536-float vector as Python floats is ~50 KB.
CHUNK = 500


def encode(values) -> str:
    """A vector as base64 of its little-endian float32 bytes."""
    import numpy as np

    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def decode(text: str):
    """The float32 numpy array :func:`encode` wrote."""
    import numpy as np

    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def vector_problem(values: Any, dimensions: int):
    """``(array, None)`` for a valid vector, else ``(None, why)``."""
    import numpy as np

    if not isinstance(values, list):
        return None, f"vector: not a list of numbers but {type(values).__name__}"
    if not values:
        return None, "vector: empty"
    if len(values) != dimensions:
        return None, f"vector: {len(values)} dimensions, not the configured {dimensions}"
    try:
        array = np.asarray(values)  # numbers make a numeric array; a string, null or list does not
    except ValueError:
        array = None
    if array is None or array.ndim != 1 or array.dtype.kind not in "fi":
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))), None)
        return None, f"vector: holds {str(bad)[:20]!r}, not a number"
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        at = int(np.argmin(finite))
        return None, f"vector: value {at} is {array[at]}, not a finite number"
    as_float32 = array.astype(np.float32)
    if not np.isfinite(as_float32).all():
        return None, "vector: a value is beyond the float32 range"
    if not as_float32.any():
        return None, "vector: every value is zero"
    return as_float32, None


class VectorValidator:
    """Checks one embedding result: the configured length, finite numbers, not empty or all zero."""

    chunk = CHUNK

    def __init__(self, dimensions: int, model: str):
        self.dimensions = dimensions
        self.model = model

    @classmethod
    def for_workload(cls, workload) -> VectorValidator:
        return cls(workload.spec.provider.dimensions, workload.spec.provider.model)

    def check(self, result, source_id: str, source: dict[str, Any] | None = None) -> Verdict:
        if result.vector is None:
            return Verdict(
                None, [f"no embedding in the answer{f': {result.output_text[:80]!r}' if result.output_text else ''}"]
            )
        return self._verdict(result.vector, result.model or self.model)

    def validate(self, text: str | None, source_id: str, source: dict[str, Any] | None = None) -> Verdict:
        """An output as JSON text (a reviewer's edit): ``{"vector": [...]}`` or the stored form."""
        try:
            output = jsonio.loads(text or "")
        except ValueError as exc:
            return Verdict(None, [f"output is not JSON: {exc}"])
        if not isinstance(output, dict) or "vector" not in output:
            return Verdict(None, ["output has no vector"])
        values = output["vector"]
        if isinstance(values, str):
            try:
                values = decode(values).tolist()
            except ValueError as exc:
                return Verdict(None, [f"vector: not base64 float32: {exc}"])
        return self._verdict(values, str(output.get("model") or self.model))

    def _verdict(self, values: Any, model: str) -> Verdict:
        array, problem = vector_problem(values, self.dimensions)
        if problem:
            return Verdict({"model": model, "dimensions": len(values) if isinstance(values, list) else None}, [problem])
        return Verdict({"model": model, "dimensions": int(array.size), "vector": encode(array)})
