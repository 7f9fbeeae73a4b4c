"""The one error of the host side: the jail cannot be set up, so nothing ran."""

from __future__ import annotations


class RunnerUnavailable(Exception):
    """The jail cannot be set up for this run: nothing ran (the service answers 503)."""

    def __init__(self, message: str, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer
