"""A small document model (headings, paragraphs, tables, images) written as Markdown or as one self-contained HTML
page (images embedded as data URIs, no external resources)."""
from __future__ import annotations

import base64
import html
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Sequence, Union


@dataclass
class Table:
    """A table: header cells and rows of values (numbers are formatted, None shows as "-")."""

    header: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass
class Image:
    """A PNG file next to the document (a path relative to the document's folder)."""

    path: str
    alt: str


Block = Union[str, Table, Image]  # a str is a paragraph


@dataclass
class Section:
    """A heading and its blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)


def cell(value: Any) -> str:
    """A value as table text: 4 significant digits for non-integral numbers, "-" for None."""
    if value is None:
        return "-"
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def to_markdown(title: str, sections: Sequence[Section]) -> str:
    """The document as Markdown (images linked by their relative path)."""
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Table):
                lines = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
                lines += ["| " + " | ".join(cell(v).replace("|", "&#124;") for v in row) + " |" for row in block.rows]
                parts.append("\n".join(lines))
            elif isinstance(block, Image):
                parts.append(f"![{block.alt}]({block.path})")
            else:
                parts.append(block)
    return "\n\n".join(parts) + "\n"


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;height:auto}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.5em}"""


def to_html(title: str, sections: Sequence[Section], folder: str) -> str:
    """The document as one HTML page; images are read from `folder` and embedded."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<section><h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
                               for row in block.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif isinstance(block, Image):
                with open(os.path.join(folder, block.path), "rb") as file:
                    data = base64.b64encode(file.read()).decode("ascii")
                body.append(f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}"></p>')
            else:
                body.append(f"<p>{html.escape(block)}</p>")
        body.append("</section>")
    # The empty data-URI icon keeps browsers from requesting /favicon.ico (a console error when served over HTTP).
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{_STYLE}</style></head>\n"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")
