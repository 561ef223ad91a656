"""JSON cost on the hot path: stdlib json vs orjson vs msgspec, on realistic payloads.

    .venv/bin/python bench/choices/json_parse.py [--pin 0]

Decodes the wrk chat request body (bench/wrk/bodies/ollama_chat.json, ~1.8 KB) the
ways a gateway might (generic dict; msgspec typed Struct, full or only the routing
fields), decodes one streamed NDJSON chunk and the final `done` chunk, and encodes a
chunk (what translation between dialects costs). Prints µs per operation (median of
7 timeit repeats) as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import timeit
from pathlib import Path
from typing import Any

import msgspec
import orjson

BENCH = Path(__file__).resolve().parent.parent
CHAT = (BENCH / "wrk" / "bodies" / "ollama_chat.json").read_bytes()
STREAM = (BENCH / "nginx" / "canned" / "chat.ndjson").read_bytes().splitlines()
CHUNK, FINAL = STREAM[0], STREAM[-1]


class Message(msgspec.Struct):
    role: str
    content: str
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatRequest(msgspec.Struct):
    model: str
    messages: list[Message]
    stream: bool = True
    format: Any = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | None = None
    tools: list[dict[str, Any]] | None = None
    think: bool | str | None = None


class Routing(msgspec.Struct):  # only what routing needs; msgspec skips the rest
    model: str
    stream: bool = True


class Final(msgspec.Struct):
    done: bool
    prompt_eval_count: int = 0
    eval_count: int = 0


full = msgspec.json.Decoder(ChatRequest)
routing = msgspec.json.Decoder(Routing)
final = msgspec.json.Decoder(Final)
enc = msgspec.json.Encoder()
chunk_obj = json.loads(CHUNK)

CASES = {
    f"decode chat request ({len(CHAT)} B) -> dict": {
        "json": lambda: json.loads(CHAT),
        "orjson": lambda: orjson.loads(CHAT),
        "msgspec": lambda: msgspec.json.decode(CHAT),
    },
    "decode chat request -> typed, validated": {
        "msgspec": lambda: full.decode(CHAT),
    },
    "decode chat request -> model+stream only": {
        "msgspec": lambda: routing.decode(CHAT),
    },
    f"decode one NDJSON chunk ({len(CHUNK)} B)": {
        "json": lambda: json.loads(CHUNK),
        "orjson": lambda: orjson.loads(CHUNK),
        "msgspec": lambda: msgspec.json.decode(CHUNK),
    },
    f"decode final chunk ({len(FINAL)} B) -> usage": {
        "json": lambda: json.loads(FINAL)["eval_count"],
        "orjson": lambda: orjson.loads(FINAL)["eval_count"],
        "msgspec": lambda: final.decode(FINAL).eval_count,
    },
    "encode one chunk dict": {
        "json": lambda: json.dumps(chunk_obj, separators=(",", ":")).encode(),
        "orjson": lambda: orjson.dumps(chunk_obj),
        "msgspec": lambda: enc.encode(chunk_obj),
    },
}


def micros(fn: Any) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number * 1e6 for t in timer.repeat(7, number))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pin", type=int, help="pin this process to one CPU")
    args = ap.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    print("| operation | json µs | orjson µs | msgspec µs |")
    print("|---|---:|---:|---:|")
    for name, libs in CASES.items():
        cells = [
            f"{micros(libs[lib]):.2f}" if lib in libs else ""
            for lib in ("json", "orjson", "msgspec")
        ]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    versions = f"orjson {orjson.__version__}, msgspec {msgspec.__version__}"
    print(f"\n({versions}; median of 7 timeit repeats)")


if __name__ == "__main__":
    main()
