"""The operator's remote control: ``corral status``, ``backends``, ``chat``, ...

These commands talk to a running gateway over HTTP (its admin API and its Ollama
API), never to its database: the URL and key come from flags, the environment or
``~/.config/corral/config.toml`` (`corral.app.ctl.remote`).
"""
