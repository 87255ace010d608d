"""The report document: one list of blocks rendered as Markdown and as self-contained HTML."""
from __future__ import annotations

import base64
import functools
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple


class Report:
    """Blocks in order: ("h", (level, text)), ("p", text), ("ul", [text]), ("table", (headers,
    rows of str, sortable)), ("img", (png path, caption)). Text may hold **bold** and `code`."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: List[Tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2):
        self.blocks.append(("h", (level, text)))

    def text(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]):
        self.blocks.append(("ul", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], sortable: bool = False):
        self.blocks.append(("table", (list(headers), [[str(c) for c in r] for r in rows], sortable)))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("img", (Path(path), caption)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, body in self.blocks:
            if kind == "h":
                out += ["#" * body[0] + " " + body[1], ""]
            elif kind == "p":
                out += [body, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in body] + [""]
            elif kind == "table":
                headers, rows, _ = body
                esc = lambda c: c.replace("|", "\\|")  # noqa: E731
                out.append("| " + " | ".join(map(esc, headers)) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows] + [""]
            elif kind == "img":
                out += [f"![{body[1]}]({body[0].name})", "", f"*{body[1]}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        """The report as one HTML page (templates/report.html.j2): figures embedded as base64 PNG,
        the sortable table sorted by a small inline script; nothing is fetched from elsewhere."""
        template = _environment().get_template("report.html.j2")
        return template.render(title=self.title, blocks=[_html_block(kind, body) for kind, body in self.blocks])


def _html_block(kind: str, body: Any) -> Dict[str, Any]:
    """One block as the template's dict (see the template's header); images read and encoded here."""
    if kind == "h":
        return {"kind": kind, "level": body[0], "text": body[1]}
    if kind == "p":
        return {"kind": kind, "text": body}
    if kind == "ul":
        return {"kind": kind, "entries": body}
    if kind == "table":
        return {"kind": kind, "headers": body[0], "rows": body[1], "sortable": body[2]}
    if kind == "img":
        return {"kind": kind, "data": base64.b64encode(body[0].read_bytes()).decode("ascii"), "caption": body[1]}
    raise ValueError(f"unknown report block kind {kind!r}")


def _inline(text: str):
    """Escaped text with **bold** and `code` as tags (the only markup the report's text uses)."""
    from markupsafe import Markup, escape

    t = str(escape(text))
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", t))


@functools.lru_cache(maxsize=1)
def _environment():
    """The Jinja2 environment over this package's templates/, autoescaping everything."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("sweeps.compare", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["inline"] = _inline
    return env
