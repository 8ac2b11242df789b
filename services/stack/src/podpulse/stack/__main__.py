"""``python -m podpulse.stack``: the same as ``podpulse up``."""

from __future__ import annotations

import typer

from .cli import up

if __name__ == "__main__":
    typer.run(up)
