"""The user's journey: upload a dataset, follow its job, get a prediction."""

from __future__ import annotations

from typing import Any


def add_commands(commands: Any) -> None:
    del commands
