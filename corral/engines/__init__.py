"""Real inference engines Corral can start next to itself, for tests and the demo.

- ``corral.engines.tinymodel`` writes a tiny random-weight llama model as GGUF.
- ``corral.engines.llamacpp`` runs llama.cpp's own HTTP server (the ``xllamacpp``
  wheel) in a child process: ``python -m corral.engines.llamacpp --model PATH``.

Nothing here imports the gateway: an engine is just another server on a port.
"""

from __future__ import annotations

# The submodules are not imported here: ``python -m corral.engines.llamacpp`` would
# otherwise find its own module already imported and warn.
__all__: list[str] = []
