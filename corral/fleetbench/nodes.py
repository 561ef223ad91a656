"""The simulated fleet's backends: the pure node models behind one small interface.

:class:`SimNode` wraps the same :class:`~corral.sim.model.NodeModel` (Ollama) or
:class:`~corral.sim.vllm_model.VllmModel` (vLLM) that ``corral sim`` serves over
sockets, so the benchmark's fleet loads models, evicts, batches and caches exactly as
the simulator does. It adds the faults (down, busy) and what a probe would read
(``/api/tags`` + ``/api/ps``, or ``/v1/models`` + ``/metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.fleetbench.arrivals import model_spec
from corral.fleetbench.scenario import NodeSpec
from corral.sim.catalogue import Catalogue, normalize_name
from corral.sim.model import NodeModel
from corral.sim.model_types import (
    FOREVER,
    Admission,
    Event,
    EventKind,
    Kind,
    NodeConfig,
    Request,
    VllmConfig,
)
from corral.sim.vllm_model import VllmModel

__all__ = ["Probe", "SimNode"]

_GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Probe:
    """What a health probe reads from a node that answered."""

    models: frozenset[str]  # normalized names
    loaded: dict[str, float]  # model -> expires at (Ollama /api/ps; vLLM: forever)
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    preemptions: float = 0.0


class SimNode:
    """One backend: a node model, its faults and its load counter across restarts."""

    def __init__(self, spec: NodeSpec, catalogue: Catalogue, seed: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self._catalogue = catalogue
        self._seed = seed
        self._restarts = 0
        self.down = False
        self.busy = False
        self._loads_before = 0  # loads of earlier incarnations (before a restart)
        self._ids: set[int] = set()  # requests the node holds now
        # normalized name -> the name the engine knows
        self._names = {normalize_name(m): m for m in spec.models}
        self._model: NodeModel | VllmModel = self._start(preload=True, now=0.0)

    # -- life cycle ---------------------------------------------------------------

    def _start(self, *, preload: bool, now: float) -> NodeModel | VllmModel:
        s = self.spec
        seed = self._seed * 1000 + self._restarts
        if s.kind == "vllm":
            if len(s.models) != 1:
                raise ValueError(f"vLLM node {s.name} serves exactly one model")
            config = VllmConfig(
                max_num_seqs=s.max_num_seqs,
                kv_cache_tokens=s.kv_cache_tokens,
                speed=s.speed,
                token_chunk=0,
                seed=seed,
            )
            return VllmModel(model_spec(s, s.models[0], self._catalogue), config)
        node_config = NodeConfig(
            num_parallel=s.num_parallel,
            max_loaded_models=s.max_loaded_models,
            vram_bytes=int(s.vram_gb * _GIB),
            max_queue=s.max_queue,
            keep_alive=s.keep_alive_s,
            speed=s.speed,
            token_chunk=0,
            seed=seed,
        )
        specs = [model_spec(s, m, self._catalogue) for m in s.models]
        node = NodeModel(node_config, specs)
        if preload:
            for m in s.preload:
                node.preload(m, now)
        return node

    def fail(self, now: float) -> list[int]:
        """The node goes down: every request on it is lost. Returns their ids."""
        self.down = True
        lost = list(self._ids)
        self._ids.clear()
        return lost

    def recover(self, now: float) -> None:
        """Back up, as a freshly started process: nothing loaded, empty caches."""
        self.down = False
        self._loads_before = self.model_loads
        self._restarts += 1
        self._model = self._start(preload=False, now=now)

    # -- requests -----------------------------------------------------------------

    def submit(
        self,
        req_id: int,
        model: str,
        prompt_tokens: int,
        output_tokens: int,
        prefix: tuple[int, ...],
        now: float,
    ) -> Admission:
        name = self._names.get(model, model)
        req = Request(
            req_id=req_id,
            model=name,
            kind=Kind.CHAT,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            prefix_hashes=prefix if self.kind == "vllm" else (),
        )
        adm = self._model.submit(req, now)
        if adm in (Admission.RUNNING, Admission.QUEUED, Admission.LOADING):
            self._ids.add(req_id)
        return adm

    def cancel(self, req_id: int, now: float) -> None:
        if req_id in self._ids:
            self._ids.discard(req_id)
            self._model.cancel(req_id, now)

    def next_event_time(self) -> float | None:
        return None if self.down else self._model.next_event_time()

    def advance(self, now: float) -> list[Event]:
        events = self._model.advance(now)
        for ev in events:
            if ev.kind is EventKind.DONE and isinstance(ev.req_id, int):
                self._ids.discard(ev.req_id)
        return events

    # -- what the gateway can see -------------------------------------------------

    @property
    def model_loads(self) -> int:
        m = self._model
        return self._loads_before + (m.stats.loads if isinstance(m, NodeModel) else 0)

    def model_bytes(self) -> dict[str, int]:
        """Size on disk of each model it holds (what ``/api/tags`` lists)."""
        return {
            name: model_spec(self.spec, m, self._catalogue).size_bytes
            for name, m in self._names.items()
        }

    @property
    def in_flight(self) -> int:
        return len(self._ids)

    def probe(self, now: float) -> Probe | None:
        """None when the node does not answer (down)."""
        if self.down:
            return None
        models = frozenset(self._names)
        m = self._model
        if isinstance(m, VllmModel):
            st = m.stats
            return Probe(
                models,
                dict.fromkeys(models, FOREVER),
                running=float(m.num_running),
                waiting=float(m.num_waiting),
                kv_cache_usage=m.kv_cache_usage,
                prefix_queries=float(st.prefix_queries),
                prefix_hits=float(st.prefix_hits),
                preemptions=float(st.preemptions),
            )
        loaded = {normalize_name(r.model): r.expires_at for r in m.runners(now)}
        return Probe(models, loaded)
