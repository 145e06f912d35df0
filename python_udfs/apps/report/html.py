"""The report's HTML: sections, escaping, number formatting, tables and the page itself.

Everything is escaped here (``esc``): tokens, source and model names come from the data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Section:
    """One part of the report: an anchor id, a heading and its HTML body."""

    id: str
    title: str
    body: str = ""
    figures: list[str] = field(default_factory=list)  # PNG file names written for it


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def visible(token: str, limit: int = 40, spaces: bool = True) -> str:
    """Text a chart can draw: newlines and tabs spelled out, rare glyphs escaped, and with
    ``spaces`` each space shown as an open box (a token's leading space matters)."""
    out = []
    for ch in token:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == " " and spaces:
            out.append("\u2423")
        elif not ch.isprintable() or ord(ch) > 0x052F:  # outside DejaVu's wide coverage
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def name(text: str, limit: int = 40) -> str:
    """A source, run or model name for a chart: spaces kept."""
    return visible(text, limit, spaces=False)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: thousands separators, ``digits`` significant decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], code_columns: Sequence[str] = ()) -> str:
    """An HTML table; numbers right-aligned, ``code_columns`` shown as whitespace-exact code."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for col, value in zip(columns, row):
            if col in code_columns and value is not None:
                cells.append(f"<td><code>{esc(visible(str(value), 80))}</code></td>")
            elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
                cells.append(f'<td class="num">{esc(fmt(value))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def note(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: white; }
h1 { margin-bottom: 4px; } .sub { color: #666; margin-top: 0; }
h2 { border-bottom: 2px solid #4c72b0; padding-bottom: 4px; margin-top: 40px; }
nav ol { columns: 2; color: #4c72b0; } nav a { color: #4c72b0; text-decoration: none; }
img.chart { max-width: 100%; height: auto; display: block; margin: 12px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 10px 0 18px; display: block; overflow-x: auto; }
td { white-space: nowrap; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #f0f3f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.headline th { font-weight: normal; color: #555; } table.headline td { font-weight: 600; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; white-space: pre; }
p.hint { color: #555; margin-top: -4px; }
p.missing { color: #8a6d3b; background: #fcf8e3; border-left: 4px solid #e0c060; padding: 8px 12px; }
"""

def render(sections: list[Section], db: Path) -> str:
    """The whole page as one HTML string (no external resources)."""
    toc = "".join(f'<li><a href="#{s.id}">{esc(s.title)}</a></li>' for s in sections)
    parts = "".join(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pilehouse report</title><style>{CSS}</style></head><body><main>"
        f'<h1>pilehouse report</h1><p class="sub">Warehouse <code>{esc(db)}</code>, generated {stamp}.</p>'
        f"<nav><ol>{toc}</ol></nav>{parts}</main></body></html>\n"
    )
