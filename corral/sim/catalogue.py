"""Model specs for the Ollama node simulator.

A :class:`ModelSpec` says how big a model is on disk and in VRAM, how long its context is
and how fast it runs. The built-in catalogue (``catalogue.yaml`` beside this module) holds
common names; a user YAML file of the same shape adds or overrides entries. Any other name
is accepted too: its size is guessed from the tag (``:7b``, ``-13b``, ``:0.5b``,
``:8x7b``), so a fleet can be simulated with whatever names a workload uses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Catalogue",
    "ModelSpec",
    "guess_spec",
    "normalize_name",
]

_GIB = 1024**3
_MIB = 1024**2

# Bytes per parameter of common GGUF quantizations (file size / parameter count).
_BYTES_PER_PARAM = {
    "Q4_0": 0.57,
    "Q4_1": 0.63,
    "Q4_K_S": 0.58,
    "Q4_K_M": 0.61,
    "Q5_0": 0.69,
    "Q5_K_S": 0.69,
    "Q5_K_M": 0.71,
    "Q6_K": 0.82,
    "Q8_0": 1.07,
    "F16": 2.0,
    "BF16": 2.0,
    "F32": 4.0,
}

_MOE_RE = re.compile(r"(?:^|[:\-_/])(\d+)x(\d+(?:\.\d+)?)([bm])(?=$|[-_.:])")
_SIZE_RE = re.compile(r"(?:^|[:\-_/])(\d+(?:\.\d+)?)([bm])(?=$|[-_.:])")
_QUANT_RE = re.compile(r"(q\d_k_[sml]|q\d_k|q\d_\d|bf16|fp16|f16|f32)")
_PARAMS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$", re.IGNORECASE)
_FAMILY_RE = re.compile(r"[a-z]+\d*")


def normalize_name(name: str) -> str:
    """Ollama's name rule that matters here: no tag means ``:latest``."""
    name = name.strip().lower()
    last = name.rsplit("/", 1)[-1]
    if name and ":" not in last:
        name += ":latest"
    return name


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the simulator needs to know about one model."""

    name: str
    family: str
    parameter_size: str
    quantization_level: str
    size_bytes: int
    vram_bytes: int
    context_length: int
    prompt_tps: float
    gen_tps: float
    embedding: bool = False
    embedding_length: int = 0
    kv_bytes_per_token: int = 0
    capabilities: tuple[str, ...] = ()
    format: str = "gguf"

    @property
    def digest(self) -> str:
        """Deterministic manifest digest (hex, as /api/tags shows it)."""
        return hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def params(self) -> float:
        """Parameter count in billions."""
        return _parse_params(self.parameter_size)

    @property
    def families(self) -> tuple[str, ...]:
        return (self.family,)

    def layer_digests(self) -> list[tuple[str, int]]:
        """(digest, size) of the manifest's layers: weights, template, license, params."""
        out = []
        for part, size in (("model", self.size_bytes), ("template", 1429), ("license", 7711)):
            out.append(
                ("sha256:" + hashlib.sha256(f"{self.name}/{part}".encode()).hexdigest(), size)
            )
        return out


def _parse_params(text: str) -> float:
    m = _PARAMS_RE.match(text)
    if not m:
        return 1.0
    scale = {"K": 1e-6, "M": 1e-3, "B": 1.0, "T": 1e3}[m.group(2).upper()]
    return float(m.group(1)) * scale


def _format_params(billions: float) -> str:
    if billions < 1:
        return f"{billions * 1000:.0f}M"
    return f"{billions:.1f}B"


def _guess_params(name: str) -> float | None:
    base, _, tag = name.rpartition(":")
    for text in (tag, base):
        m = _MOE_RE.search(text)
        if m:
            unit = 1.0 if m.group(3) == "b" else 1e-3
            return int(m.group(1)) * float(m.group(2)) * unit
        m = _SIZE_RE.search(text)
        if m:
            unit = 1.0 if m.group(2) == "b" else 1e-3
            return float(m.group(1)) * unit
    return None


def _embedding_length(billions: float) -> int:
    for limit, width in ((0.2, 768), (0.6, 1024), (1.2, 2048), (2.0, 1536), (4.5, 3072)):
        if billions <= limit:
            return width
    for limit, width in ((9.0, 4096), (20.0, 5120), (40.0, 6144)):
        if billions <= limit:
            return width
    return 8192


def _derived(
    name: str,
    family: str,
    billions: float,
    quant: str,
    embedding: bool,
    **given: Any,
) -> ModelSpec:
    """Fill every field not given from the parameter count and quantization."""
    size = int(given.pop("size_bytes", None) or billions * 1e9 * _BYTES_PER_PARAM.get(quant, 0.61))
    # Weights plus a compute graph of a few hundred MiB; the KV cache is added per num_ctx.
    vram = int(given.pop("vram_bytes", None) or size * 1.05 + 256 * _MIB)
    # Single-stream decoding is memory-bound: ~450 GB/s effective over the weights.
    gen = float(given.pop("gen_tps", None) or min(400.0, 450e9 / max(size, 1)))
    prompt = float(given.pop("prompt_tps", None) or min(12000.0, gen * 30))
    kv = int(given.pop("kv_bytes_per_token", None) or 24 * 1024 * max(billions, 0.05) ** 0.7)
    caps = given.pop("capabilities", None)
    if caps is None:
        caps = ("embedding",) if embedding else ("completion", "tools")
    return ModelSpec(
        name=name,
        family=family,
        parameter_size=given.pop("parameter_size", None) or _format_params(billions),
        quantization_level=quant,
        size_bytes=size,
        vram_bytes=vram,
        context_length=int(given.pop("context_length", None) or (2048 if embedding else 32768)),
        prompt_tps=prompt,
        gen_tps=gen,
        embedding=embedding,
        embedding_length=int(given.pop("embedding_length", None) or _embedding_length(billions)),
        kv_bytes_per_token=kv,
        capabilities=tuple(caps),
        format=given.pop("format", "gguf"),
    )


def guess_spec(name: str, **given: Any) -> ModelSpec:
    """A plausible spec for any name; ``given`` fields win over guesses."""
    name = normalize_name(name)
    embedding = bool(given.pop("embedding", "embed" in name))
    guessed = _guess_params(name)
    if "parameter_size" in given:
        billions = _parse_params(str(given["parameter_size"]))
    elif guessed is not None:
        billions = guessed
    else:
        billions = 0.137 if embedding else 1.0  # no size in the name: a small default
    quant_m = _QUANT_RE.search(name)
    quant = given.pop("quantization_level", None)
    if quant is None:
        quant = quant_m.group(1).upper().replace("FP16", "F16") if quant_m else None
    if quant is None:
        quant = "F16" if embedding else "Q4_K_M"
    base = name.rsplit("/", 1)[-1].split(":", 1)[0]
    fam_m = _FAMILY_RE.match(base)
    family = str(given.pop("family", None) or (fam_m.group(0) if fam_m else "llama"))
    return _derived(name, family, billions, str(quant), embedding, **given)


_SPEC_KEYS = {f.name for f in fields(ModelSpec)} - {"name"}


@dataclass
class Catalogue:
    """Known specs by normalized name; unknown names are guessed on demand."""

    specs: dict[str, ModelSpec] = field(default_factory=dict)

    def get(self, name: str) -> ModelSpec:
        key = normalize_name(name)
        spec = self.specs.get(key)
        return spec if spec is not None else guess_spec(key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self.specs

    def names(self) -> list[str]:
        return sorted(self.specs)

    def add(self, spec: ModelSpec) -> None:
        self.specs[normalize_name(spec.name)] = spec

    def merged(self, entries: Mapping[str, Any]) -> Catalogue:
        """A new catalogue with ``entries`` (the YAML ``models`` mapping) laid over this one."""
        out = Catalogue(dict(self.specs))
        for raw_name, raw in entries.items():
            name = normalize_name(str(raw_name))
            given = dict(raw or {})
            alias = given.pop("alias", None)
            if alias is not None:
                out.specs[name] = replace(out.get(str(alias)), name=name)
                continue
            unknown = set(given) - _SPEC_KEYS
            if unknown:
                raise ValueError(f"catalogue entry {name!r}: unknown fields {sorted(unknown)}")
            if "capabilities" in given:
                given["capabilities"] = tuple(given["capabilities"])
            out.specs[name] = guess_spec(name, **given)
        return out

    @classmethod
    def builtin(cls) -> Catalogue:
        text = resources.files("corral.sim").joinpath("catalogue.yaml").read_text()
        return cls().merged(_models_section(yaml.safe_load(text)))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalogue:
        """The built-in catalogue, with the YAML file at ``path`` (if any) laid over it."""
        base = cls.builtin()
        if path is None:
            return base
        return base.merged(_models_section(yaml.safe_load(Path(path).read_text())))

    @classmethod
    def of(cls, specs: Iterable[ModelSpec]) -> Catalogue:
        return cls({normalize_name(s.name): s for s in specs})


def _models_section(doc: Any) -> dict[str, Any]:
    """Accept ``models:`` as a mapping name -> fields, or a list of entries with ``name``."""
    models = (doc or {}).get("models", {}) if isinstance(doc, dict) else {}
    if isinstance(models, list):
        out: dict[str, Any] = {}
        for entry in models:
            entry = dict(entry)
            out[str(entry.pop("name"))] = entry
        return out
    if not isinstance(models, dict):
        raise ValueError("catalogue: 'models' must be a mapping or a list")
    return models
