"""HTML and figure building blocks of the report: escaping, number formats, tables, rows,
embedded PNG figures, and the page's look."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BEFORE_COLOR = "#a7adb7"
AFTER_COLOR = "#1f77b4"
SELECTED_COLOR = "#ff7f0e"
KEPT_COLOR = "#d62728"
PLOT_DPI = 100
PLOT_WIDTH = 10.8  # inches: 1080 px at PLOT_DPI, the page's content width

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232b;
       background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d9dde3; }
p.lead, p.note { color: #4a5360; margin: 4px 0 12px; }
nav { margin: 10px 0 0; font-size: 14px; }
nav a { color: #33475b; margin-right: 14px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 4px; }
.card { border: 1px solid #d9dde3; border-radius: 6px; padding: 10px 16px; min-width: 190px;
        background: #f7f8fa; }
.card .label { font-size: 13px; color: #4a5360; }
.card .value { font-size: 22px; font-weight: 600; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
th, td { border: 1px solid #d9dde3; padding: 4px 10px; text-align: left; }
th { background: #f1f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.selected td { background: #fdf3e1; font-weight: 600; }
tr.total td { font-weight: 600; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
pre { background: #f7f8fa; border: 1px solid #d9dde3; padding: 10px; font-size: 12.5px;
      overflow-x: auto; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; font-size: 14px; }
dt { color: #4a5360; }
dd { margin: 0; word-break: break-all; }
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "–"
    return f"{100 * (after - before):+.2f} pp".replace("-", "−")


def plot_label(text: str, limit: int = 36) -> str:
    """A name fit for a plot: `$` escaped (no mathtext), long names cut in the middle."""
    if len(text) > limit:
        keep = (limit - 1) // 2
        text = f"{text[:keep]}…{text[-keep:]}"
    return text.replace("$", r"\$")


def image(figure: Figure, alt: str) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software" stamp: the same result gives the same bytes.
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def table(header: Iterable[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def row(cells: Iterable[tuple[str, bool]], css_class: str = "") -> str:
    """One table row from (text, is_number) cells; text is escaped here."""
    attribute = f' class="{css_class}"' if css_class else ""
    tds = "".join(
        f'<td class="num">{escape(text)}</td>' if number else f"<td>{escape(text)}</td>"
        for text, number in cells
    )
    return f"<tr{attribute}>{tds}</tr>"


def verdict(before: float | None, after: float | None, better: str) -> str:
    if before is None or after is None:
        return "–"
    if math.isclose(before, after, abs_tol=5e-5):
        return "unchanged"
    return "better" if (after > before) == (better == "higher") else "worse"
