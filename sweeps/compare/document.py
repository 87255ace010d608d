"""The report document: one list of blocks rendered as Markdown and as self-contained HTML."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, List, Sequence, Tuple


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
        def inline(text: str) -> str:
            t = html.escape(text)
            t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
            return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

        parts = []
        for kind, body in self.blocks:
            if kind == "h":
                parts.append(f"<h{body[0]}>{inline(body[1])}</h{body[0]}>")
            elif kind == "p":
                parts.append(f"<p>{inline(body)}</p>")
            elif kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in body) + "</ul>")
            elif kind == "table":
                headers, rows, sortable = body
                cls = ' class="sortable"' if sortable else ""
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                hint = '<p class="hint">click a column header to sort</p>' if sortable else ""
                parts.append(f"{hint}<table{cls}><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(body[0].read_bytes()).decode("ascii")
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(body[1])}">'
                             f"<figcaption>{inline(body[1])}</figcaption></figure>")
        return _HTML.format(title=html.escape(self.title), body="\n".join(parts))


_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }}
table.sortable th {{ cursor: pointer; }}
table.sortable th:after {{ content: " \\2195"; color: #aaa; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ margin: 1em 0 2em; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 0.9em; }} .hint {{ color: #777; font-size: 0.8em; margin-bottom: 0; }}
code {{ background: #f3f3f3; padding: 0 3px; }}
</style></head><body>
<h1>{title}</h1>
{body}
<script>
document.querySelectorAll("table.sortable th").forEach(function (th) {{
  th.addEventListener("click", function () {{
    var table = th.closest("table"), body = table.tBodies[0];
    var rows = Array.from(body.rows), asc = th.dataset.asc !== "1";
    table.querySelectorAll("th").forEach(function (h) {{ delete h.dataset.asc; }});
    th.dataset.asc = asc ? "1" : "0";
    var idx = Array.from(th.parentNode.children).indexOf(th);
    rows.sort(function (a, b) {{
      var x = a.cells[idx].textContent, y = b.cells[idx].textContent;
      var nx = x.trim() === "" ? NaN : Number(x), ny = y.trim() === "" ? NaN : Number(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    }});
    rows.forEach(function (r) {{ body.appendChild(r); }});
  }});
}});
</script>
</body></html>
"""
