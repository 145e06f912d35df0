"""Charts for the report: matplotlib without a display, one style, one colour per source.

``Report.figure`` saves a figure beside the page and returns an <img> that embeds it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from python_udfs.apps.report.html import esc  # noqa: E402
from python_udfs.apps.report.tables import Tables  # noqa: E402

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
           "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
EXCLUDED_COLOUR = "#bbbbbb"
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "text.parse_math": False,  # tokens and model names may contain "$"
}


@dataclass
class Report:
    """The output folder and the figures written so far (name -> PNG bytes)."""

    out: Path
    images: dict[str, bytes] = field(default_factory=dict)

    def figure(self, fig: Figure, name: str, alt: str) -> str:
        """Save ``fig`` as ``<out>/<name>.png`` and return an <img> embedding it."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
        plt.close(fig)
        png = buf.getvalue()
        self.images[f"{name}.png"] = png
        (self.out / f"{name}.png").write_bytes(png)
        data = base64.b64encode(png).decode("ascii")
        return f'<img class="chart" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def source_colours(wh: Tables) -> dict[str, str]:
    """Sources by document count, each with a fixed colour used by every chart."""
    if not wh.has("documents"):
        return {}
    _, rows = wh.rows("select source, count(*) as n from documents group by source order by n desc, source")
    return {r[0]: PALETTE[i] if i < len(PALETTE) else PALETTE[-3] for i, r in enumerate(rows)}
