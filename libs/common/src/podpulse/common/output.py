"""How podpulse commands write for people: consoles a pipe does not wrap, numbers as people
write them.

A rich ``Console`` that is not writing to a terminal takes the terminal's width, or 80
columns: ``podpulse report RUN > report.txt`` (or a CI log) would get tables squeezed and
lines broken mid-sentence, which a file has no reason for. Numbers go through :func:`plain`
instead of ``:g`` or ``.3g``, whose exponents (``1.08e+04``) no one reads at a glance.
"""

from __future__ import annotations

import math
import os

from rich.console import Console

__all__ = ["PIPE_WIDTH", "console", "plain"]

# Wide enough for any table a command prints on one line per row; a file has no margin.
PIPE_WIDTH = 1000
_MAX_DECIMALS = 12


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width on a terminal, unwrapped elsewhere.

    COLUMNS, when set, still wins: it is how a user asks for a width.
    """
    out = Console(stderr=stderr)
    if out.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return out
    # soft_wrap keeps a long line whole; the width keeps a table's rows whole.
    return Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)


def plain(value: float, *, digits: int = 3, sign: bool = False) -> str:
    """*value* with *digits* significant digits, never in scientific notation.

    Whole units from ``10 ** (digits - 1)`` up (``10800``, ``-2030``: rounding a large number to
    fewer digits would only hide them), trailing zeros dropped (``0.5``, not ``0.500``), and
    thousands unseparated so the text reads back as a number. *sign* adds ``+`` to a positive
    value, for slopes and margins. NaN and infinities are spelt ``nan``, ``inf``, ``-inf``.
    """
    if not math.isfinite(value):
        return f"{value:+}" if sign and value > 0 else str(value)
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    decimals = min(_MAX_DECIMALS, max(0, digits - 1 - magnitude))
    text = f"{value:{'+' if sign else ''}.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text.lstrip("+-") == "0":
        # Rounded to nothing (or -0.0): no sign on a zero.
        return "0"
    return text
