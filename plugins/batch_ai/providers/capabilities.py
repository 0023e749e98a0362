"""The capability table: provider limits, prices, completion windows and storage prices, from
``include/provider_capabilities.yaml``."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from batch_ai import include_dir


@dataclass(frozen=True)
class Limits:
    max_requests_per_job: int
    max_bytes_per_job: int
    min_requests_per_job: int = 1


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int, discount: float = 1.0) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6 * discount


@dataclass(frozen=True)
class Window:
    """How long a provider may take over a batch: ``hours`` until its results are due (or the job
    expires), ``queueing_hours`` it may wait before it starts (``None``: no separate bound is
    published), and whether the provider's SLA covers batch (``None``: the SLA does not say)."""

    hours: float
    queueing_hours: float | None
    sla_covered: bool | None
    source: str
    as_of: str

    def describe(self) -> str:
        """E.g. ``72h (queueing up to 72h; not covered by the SLA)``."""
        notes = [f"queueing up to {self.queueing_hours:g}h"] if self.queueing_hours else []
        notes += {False: ["not covered by the SLA"], None: ["SLA coverage unconfirmed"]}.get(self.sla_covered, [])
        return f"{self.hours:g}h" + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class Storage:
    """What keeping staged request files and result files costs, per GB-month, dated."""

    usd_per_gb_month: float
    source: str
    as_of: str

    def cost(self, byte_count: int, days: float) -> float:
        return byte_count / 1e9 * self.usd_per_gb_month * days / 30.0


@dataclass(frozen=True)
class ProviderCapabilities:
    name: str
    batch_discount: float
    limits: Limits
    models: dict[str, dict[str, Any]]
    window: Window
    storage: Storage
    extra: dict[str, Any]

    @property
    def default_conn_id(self) -> str:
        return self.extra["default_conn_id"]

    @property
    def default_model(self) -> str:
        return self.extra["default_model"]

    @property
    def default_region(self) -> str | None:
        return self.extra.get("default_region")

    @property
    def endpoints(self) -> list[str]:
        """The batch endpoints this project's adapter for the provider sends."""
        return list(self.extra.get("endpoints", ["chat"]))

    def default_model_for(self, endpoint: str) -> str:
        if endpoint == "embeddings" and "default_embedding_model" in self.extra:
            return self.extra["default_embedding_model"]
        return self.default_model

    def embedding_dimensions(self, model: str) -> tuple[int, int]:
        """(default, largest) dimensions of an embedding model."""
        m = self.models[model]
        return int(m["dimensions"]), int(m.get("max_dimensions", m["dimensions"]))

    def price(self, model: str) -> Price:
        m = self.models[model]
        return Price(m["input_per_mtok"], m["output_per_mtok"])


#: The keys of a provider's entry read into typed fields; the rest is ``extra``.
_TYPED = ("batch_discount", "limits", "models", "window", "storage")


class Capabilities:
    def __init__(self, path: Path):
        self.path = path
        data = yaml.safe_load(path.read_text())
        self.prices_as_of: str = str(data["prices_as_of"])
        self.providers: dict[str, ProviderCapabilities] = {}
        for name, p in data["providers"].items():
            limits = p.get("limits", {})
            self.providers[name] = ProviderCapabilities(
                name=name,
                batch_discount=float(p["batch_discount"]),
                limits=Limits(
                    max_requests_per_job=int(limits["max_requests_per_job"]),
                    max_bytes_per_job=int(limits["max_bytes_per_job"]),
                    min_requests_per_job=int(limits.get("min_requests_per_job", 1)),
                ),
                models=dict(p["models"]),
                window=_window(name, p["window"]),
                storage=Storage(
                    usd_per_gb_month=float(p["storage"]["usd_per_gb_month"]),
                    source=str(p["storage"]["source"]),
                    as_of=str(p["storage"]["as_of"]),
                ),
                extra={k: v for k, v in p.items() if k not in _TYPED},
            )

    def provider(self, name: str) -> ProviderCapabilities:
        try:
            return self.providers[name]
        except KeyError:
            raise ValueError(
                f"provider {name!r} is not in the capability table {self.path.name}; known: {sorted(self.providers)}"
            ) from None

    def check_batch_model(self, provider: str, model: str, region: str | None = None) -> None:
        """Fail unless the table says ``provider`` offers batch for ``model`` (in ``region``)."""
        p = self.provider(provider)
        if model not in p.models:
            raise ValueError(
                f"model {model!r} is not in the capability table for {provider} ({self.path.name}); "
                f"known: {sorted(p.models)}. Add it there with its prices if the provider offers it for batch."
            )
        if not p.models[model].get("batch", False):
            raise ValueError(f"{provider} does not offer batch inference for model {model!r} ({self.path.name})")
        regions = p.models[model].get("regions")
        if region and regions is not None and region not in regions:
            raise ValueError(
                f"{provider} batch inference for {model!r} is not offered in {region!r} according to "
                f"{self.path.name}; it is in {regions}"
            )

    def check_endpoint(self, provider: str, endpoint: str, model: str) -> None:
        """Fail unless ``provider`` offers ``endpoint`` in batch, this project's adapter sends it,
        and ``model`` is of the kind the endpoint takes (an embedding model for embeddings)."""
        p = self.provider(provider)
        where = f"{self.path.name}: providers.{provider}"
        if endpoint == "embeddings":
            offered = p.extra.get("embeddings") or {}
            if not offered.get("batch"):
                why = f" ({offered['note']})" if offered.get("note") else ""
                others = [n for n, c in self.providers.items() if "embeddings" in c.endpoints]
                raise ValueError(
                    f"provider.endpoint is embeddings, but {provider} offers no embeddings in batch{why}; "
                    f"{where}.embeddings says so. Use a provider that does ({', '.join(others)})."
                )
        if endpoint not in p.endpoints:
            note = (p.extra.get("embeddings") or {}).get("note") if endpoint == "embeddings" else None
            raise ValueError(
                f"provider.endpoint is {endpoint}, which batch-ai's {provider} adapter does not send"
                f"{f' ({note})' if note else ''}; {where}.endpoints lists {p.endpoints}"
            )
        kind = p.models.get(model, {}).get("kind", "chat")
        if (endpoint == "embeddings") != (kind == "embedding"):
            raise ValueError(
                f"provider.model {model!r} is a{'n embedding' if kind == 'embedding' else ' generation'} model "
                f"({where}.models.{model}), which provider.endpoint {endpoint} cannot use"
            )


def _window(provider: str, w: dict[str, Any]) -> Window:
    sla = w.get("sla_covered")
    if sla not in (True, False, None):
        raise ValueError(f"{provider}: window.sla_covered must be true, false or null (unconfirmed), not {sla!r}")
    queueing = w.get("queueing_hours")
    return Window(
        hours=float(w["hours"]),
        queueing_hours=float(queueing) if queueing is not None else None,
        sla_covered=sla,
        source=str(w["source"]),
        as_of=str(w["as_of"]),
    )


@functools.cache
def capabilities() -> Capabilities:
    return Capabilities(include_dir() / "provider_capabilities.yaml")
