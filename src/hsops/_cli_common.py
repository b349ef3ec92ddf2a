"""What every ``hsops`` command module shares: the consoles, failing with a message, JSON out."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

# at least 110 columns: the tables stay readable when output goes to a pipe or a CI log
console = Console(width=None if Console().width >= 110 else 110)
err = Console(stderr=True, soft_wrap=True)  # an error stays one line in logs and pipes


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _emit_json(payload) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
