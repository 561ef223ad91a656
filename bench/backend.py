"""The zero-delay backend: nginx serving canned Ollama/OpenAI replies.

Run it alone to poke at it or to point a gateway at it by hand:

    python bench/backend.py [--port 11500 --stream-port 11501] [--cpu 1]

Non-streamed replies come from PORT, streamed (NDJSON/SSE) replies from STREAM_PORT.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import Children, free_port, http_get, pin, wait_until

__all__ = ["ECHO_MODULE_PATHS", "NginxBackend", "render_config"]

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx" / "nginx.conf.template"
CANNED = HERE / "nginx" / "canned"
ECHO_MODULE_PATHS = (
    Path("/usr/lib/nginx/modules/ngx_http_echo_module.so"),
    Path("/usr/share/nginx/modules/ngx_http_echo_module.so"),
)


def nginx_quote(text: str) -> str:
    """Escape text for a single-quoted nginx string (which also expands `$vars`)."""
    if "$" in text:
        raise ValueError("canned bodies must not contain '$' (nginx would expand it)")
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def _stream_pieces(name: str) -> list[str]:
    text = (CANNED / name).read_text()
    if name.endswith(".sse"):  # one SSE event per piece, each ending in a blank line
        return [event + "\n\n" for event in text.split("\n\n") if event]
    return text.splitlines(keepends=True)  # one NDJSON line per piece


def _stream_directives(name: str, echo: bool) -> str:
    pieces = _stream_pieces(name)
    if echo:
        return " ".join(f"echo -n '{nginx_quote(p)}'; echo_flush;" for p in pieces)
    # No echo module: one write, but still `Transfer-Encoding: chunked` because a
    # sub_filter on the type drops Content-Length (the pattern never matches).
    return f"return 200 '{nginx_quote(''.join(pieces))}'; sub_filter '@@never@@' '';"


def echo_module() -> Path | None:
    return next((p for p in ECHO_MODULE_PATHS if p.exists()), None)


def render_config(prefix: Path, port: int, stream_port: int, use_echo: bool = True) -> str:
    module = echo_module() if use_echo else None
    values = {
        "PREFIX": str(prefix),
        "PORT": str(port),
        "STREAM_PORT": str(stream_port),
        "LOAD_MODULES": f"load_module {module};" if module else "",
        "CHAT_NDJSON_STREAM": _stream_directives("chat.ndjson", module is not None),
        "GENERATE_NDJSON_STREAM": _stream_directives("generate.ndjson", module is not None),
        "OPENAI_CHAT_SSE_STREAM": _stream_directives("openai_chat.sse", module is not None),
    }
    for path in CANNED.glob("*.json"):
        values[path.stem.upper() + "_JSON"] = nginx_quote(path.read_text().rstrip("\n"))
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    leftover = [
        line
        for line in text.splitlines()
        if "@@" in line and "@@never@@" not in line and not line.lstrip().startswith("#")
    ]
    if leftover:
        raise ValueError(f"unrendered markers in nginx template: {leftover[:3]}")
    return text


@dataclass
class NginxBackend:
    """nginx in the foreground with a private prefix; `start()` returns when it answers."""

    children: Children
    cpus: str | None = None
    port: int = 0
    stream_port: int = 0
    use_echo: bool = True
    prefix: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="corral-bench-nginx-"))
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"http://127.0.0.1:{self.stream_port}"

    @property
    def streams_per_line(self) -> bool:
        return self.use_echo and echo_module() is not None

    def start(self) -> NginxBackend:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = self.port or free_port()
        self.stream_port = self.stream_port or free_port()
        conf = self.prefix / "nginx.conf"
        conf.write_text(render_config(self.prefix, self.port, self.stream_port, self.use_echo))
        cmd = [nginx, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")]
        self.proc = self.children.start(pin(cmd, self.cpus), log=self.prefix / "stdout.log")
        for url in (self.url, self.stream_url):
            wait_until(
                lambda url=url: b"bench:latest" in http_get(url + "/api/tags"),
                10,
                "nginx backend",
                lambda: self.proc.poll() is None,
            )
        return self

    def stop(self) -> None:
        if hasattr(self, "proc"):
            self.children.stop(self.proc)
        shutil.rmtree(self.prefix, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stream-port", type=int, default=0)
    ap.add_argument("--cpu", default=None, help="taskset CPU list for nginx, e.g. 1")
    ap.add_argument("--no-echo", action="store_true", help="stream in one write, not per line")
    args = ap.parse_args()
    children = Children()
    backend = NginxBackend(children, args.cpu, args.port, args.stream_port, not args.no_echo)
    try:
        backend.start()
        print(f"non-streamed: {backend.url}\nstreamed:     {backend.stream_url}")
        print(f"config:       {backend.prefix / 'nginx.conf'}   (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while backend.proc.poll() is None:
                time.sleep(0.5)
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
