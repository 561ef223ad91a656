"""Logical models: one name for a model that each engine calls something else.

Ollama calls it ``qwen2.5:7b``, vLLM ``Qwen/Qwen2.5-7B-Instruct``; configured as one
`LogicalModel`, a request by any of its names reaches both, and each backend hears
its own name. All names compare the way Ollama reads them (`normalize_model`: a
bare name means ``name:latest``), so ``qwen`` and ``qwen:latest`` are one name.

Keys: the dispatcher indexes models by a *logical key*. For a configured model it is
its normalized name; for an upstream model no logical model claims (*unmapped*) it
is that model's own normalized name, so an unconfigured fleet routes as before.

Pure: built once from settings, then asked by the fleet after each model-list probe
(`ModelMap.backend_models`) and by the request path (`ModelMap.resolve`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.core.names import normalize_model

__all__ = ["BackendModel", "LogicalModel", "ModelMap"]


@dataclass(frozen=True, slots=True)
class LogicalModel:
    """One model as clients see it, whatever each backend calls it.

    ``upstreams`` maps a backend name to what that backend calls the model; it is
    optional, since a backend reporting the model under its name or an alias joins
    without being listed.
    """

    name: str
    aliases: tuple[str, ...] = ()
    upstreams: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def key(self) -> str:
        """The dispatcher's key for this model: its normalized name."""
        return normalize_model(self.name)


@dataclass(frozen=True, slots=True)
class BackendModel:
    """A model one backend holds, as filed under a logical key."""

    upstream: str
    """The backend's own name for it, as the backend reported it: send this."""
    source: str
    """Its key in the mapping the backend's report was given as."""
    mapped: bool
    """Claimed by a logical model; unmapped ones are listed only with list_unmapped."""


# Which of a backend's names wins when several land on one logical key: what the
# config set for that backend, then the logical name, then aliases in their order.
_EXPLICIT, _BY_NAME, _BY_ALIAS = 0, 1, 2


class ModelMap:
    """Resolves requested names to logical keys and files backends' models under them.

    Raises ValueError when two models claim one name (after normalization), or two
    claim one upstream name on the same backend; the config loader reports the same
    conflicts with their file and line before this is ever built.
    """

    def __init__(self, models: Iterable[LogicalModel] = (), *, list_unmapped: bool = True) -> None:
        self.models: tuple[LogicalModel, ...] = tuple(models)
        self.list_unmapped = list_unmapped
        self._by_key: dict[str, LogicalModel] = {}
        # Every normalized name and alias -> (model, rank when a backend reports it).
        self._names: dict[str, tuple[LogicalModel, int]] = {}
        # backend -> normalized upstream name -> model, from the config's backends lists.
        self._explicit: dict[str, dict[str, LogicalModel]] = {}
        for model in self.models:
            if not model.key:
                raise ValueError("a logical model needs a name")
            self._by_key[model.key] = model
            ranked = [(model.name, _BY_NAME)]
            ranked += [(alias, _BY_ALIAS + i) for i, alias in enumerate(model.aliases)]
            for name, rank in ranked:
                norm = normalize_model(name)
                if not norm:
                    raise ValueError(f"{model.name!r} has an empty alias")
                other = self._names.get(norm)
                if other is not None and other[0] is not model:
                    raise ValueError(f"{name!r} names both {other[0].name!r} and {model.name!r}")
                self._names.setdefault(norm, (model, rank))
            for backend, upstream in model.upstreams.items():
                claimed = self._explicit.setdefault(backend, {})
                norm = normalize_model(upstream)
                if claimed.get(norm, model) is not model:
                    raise ValueError(
                        f"{backend}'s {upstream!r} is claimed by both "
                        f"{claimed[norm].name!r} and {model.name!r}"
                    )
                claimed[norm] = model

    def resolve(self, requested: str) -> str:
        """The logical key a client's model name means.

        A name or alias of a logical model gives that model's key; any other name is
        returned normalized, to be matched against what backends report as is.
        """
        norm = normalize_model(requested)
        hit = self._names.get(norm)
        return hit[0].key if hit is not None else norm

    def model(self, key: str) -> LogicalModel | None:
        """The logical model filed under ``key``; None for an unmapped key."""
        return self._by_key.get(key)

    def listed(self, key: str) -> bool:
        """Whether model listings (/api/tags, /v1/models) show ``key``.

        Hiding only affects listings: a request naming an unmapped model still routes.
        """
        return key in self._by_key or self.list_unmapped

    def backend_models(
        self, backend: str, upstream: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, BackendModel]:
        """File what ``backend`` reported under logical keys.

        ``upstream`` maps normalized names to the backend's entries (an /api/tags
        ``models`` item or a /v1/models ``data`` item). A name configured for this
        backend goes to its model even when another model has it as a name; a name
        equal to a logical model's name or alias joins that model; anything else
        keeps its own key, unmapped. When several of the backend's names land on one
        key, the configured one wins, then the logical name, then the first alias.
        """
        explicit = self._explicit.get(backend, {})
        out: dict[str, BackendModel] = {}
        ranks: dict[str, tuple[int, str]] = {}
        for source, entry in upstream.items():
            norm = normalize_model(source)
            model = explicit.get(norm)
            rank = _EXPLICIT
            if model is None:
                model, rank = self._names.get(norm, (None, _EXPLICIT))
            key = model.key if model is not None else norm
            # The name breaks ties, so the order the backend listed in does not matter.
            if key in ranks and ranks[key] <= (rank, norm):
                continue
            ranks[key] = (rank, norm)
            out[key] = BackendModel(_own_name(source, entry), source, model is not None)
        return out


def _own_name(source: str, entry: Mapping[str, Any]) -> str:
    # OpenAI-kind entries carry "id", Ollama ones "model" and "name"; the fleet
    # reads the same fields, in the same order, when it rewrites a request.
    for field_name in ("id", "model", "name"):
        value = entry.get(field_name)
        if isinstance(value, str) and value:
            return value
    return source
