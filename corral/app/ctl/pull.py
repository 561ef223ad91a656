"""``corral models pull``: the gateway's pull stream drawn as one progress bar per backend.

The stream's lines (``POST /admin/models/pull``, docs/admin-api.md "The pull stream")
map onto Rich progress tasks: ``start`` makes a bar per backend, ``progress`` moves
one, ``overall`` moves the bar of the whole pull, ``done`` ends one bar with its
result, and ``summary`` is what the command prints and judges its exit code by.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from corral.app.ctl.output import console

__all__ = ["PullBars", "follow_pull"]

_OVERALL = "all backends"


class _Bytes(DownloadColumn):
    """Bytes done of the total; nothing for a backend that skipped or failed before
    it knew the size (its status says why)."""

    def render(self, task: Task) -> Text:
        if task.fields.get("no_bytes"):
            return Text("")
        return super().render(task)


class _Status(ProgressColumn):
    """The backend's own words (``pulling 6a07…``, ``done``, the error), plain text."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("status", "")), style=str(task.fields.get("style", "")))


class PullBars:
    """Turns the pull stream's lines into bars on a Rich `Progress`."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.summary: dict[str, Any] | None = None

    def _task(self, name: str) -> TaskID:
        if name not in self.tasks:  # a backend the start line did not announce
            self.tasks[name] = self.progress.add_task(
                name, total=None, status="", style="", no_bytes=False
            )
        return self.tasks[name]

    def feed(self, line: dict[str, Any]) -> None:
        kind = line.get("type")
        if kind == "start":
            backends = [str(b) for b in line.get("backends") or []]
            if len(backends) > 1:
                self.tasks[_OVERALL] = self.progress.add_task(
                    _OVERALL, total=None, status="", style="bold", no_bytes=False
                )
            for name in backends:
                self._task(name)
        elif kind == "progress":
            total = line.get("total") or None  # 0: not known yet, a pulsing bar
            self.progress.update(
                self._task(str(line.get("backend"))),
                total=total,
                completed=line.get("completed") or 0,
                status=str(line.get("status", "")),
            )
        elif kind == "overall" and _OVERALL in self.tasks:
            self.progress.update(
                self.tasks[_OVERALL],
                total=line.get("total") or None,
                completed=line.get("completed") or 0,
                status=f"{line.get('finished', 0)} of {line.get('backends', 0)} finished",
            )
        elif kind == "done":
            self._done(str(line.get("backend")), line)
        elif kind == "summary":
            self.summary = line

    def _done(self, name: str, line: dict[str, Any]) -> None:
        task = self._task(name)
        known = next(t for t in self.progress.tasks if t.id == task).total
        result = line.get("result")
        if result == "ok":
            total = known or 1
            self.progress.update(task, total=total, completed=total, status="done", style="green")
        else:
            status = (
                f"skipped: {line.get('reason')}"
                if result == "skipped"
                else f"error: {line.get('error')}"
            )
            # A bar stopped where it was; an empty one if the size was never known.
            fields: dict[str, Any] = {"total": 1, "completed": 0, "no_bytes": True}
            self.progress.update(
                task,
                status=status,
                style="dim" if result == "skipped" else "red",
                **({} if known else fields),
            )
        self.progress.stop_task(task)


def follow_pull(lines: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Draw the stream on stderr as it arrives; return its summary line (None if the
    stream ended without one)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        _Bytes(),  # GB and MB/s, as Ollama shows a pull
        TransferSpeedColumn(),
        _Status(),
        console=console(stderr=True),
        redirect_stdout=False,
        redirect_stderr=False,
    )
    bars = PullBars(progress)
    with progress:
        for line in lines:
            if isinstance(line, dict):
                bars.feed(line)
    return bars.summary
