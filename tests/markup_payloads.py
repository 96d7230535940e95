"""Hostile payloads for the trust-boundary tests, and a checker for cleaned HTML.

Each payload, if a browser ran it, would write ``pwned-<tag>.txt`` through the Jupyter
contents API and add ``<tag>`` to ``window.__dataagent_pwned``: the browser tests look for
both. The Python tests scan the cleaned HTML with :func:`problems`.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser


def script(tag: str) -> str:
    """JavaScript (no double quotes, so it fits in an attribute) that leaves two traces."""
    return (
        f"window.__dataagent_pwned=(window.__dataagent_pwned||[]).concat('{tag}');"
        f"fetch('/api/contents/pwned-{tag}.txt',{{method:'PUT',"
        "headers:{'Content-Type':'application/json'},"
        "body:JSON.stringify({type:'file',format:'text',content:'pwned'})})"
    )


def html_payload(tag: str) -> str:
    """Markup that runs script on its own in a trusted HTML output (no click needed)."""
    js = script(tag)
    return (
        f'<img src="x" onerror="{js}">'
        f"<script>{js}</script>"
        f'<svg><animate onbegin="{js}" attributeName="x" dur="1s"/></svg>'
        f'<details open ontoggle="{js}"><summary>s</summary>d</details>'
        f'<iframe srcdoc="{html.escape(f"<script>parent.{js}</script>")}"></iframe>'
        f'<input autofocus onfocus="{js}">'
        f'<object data="javascript:{js}"></object><embed src="javascript:{js}">'
        f'<form action="javascript:{js}"><button>go</button></form>'
        f'<a href="javascript:{js}">a link</a>'
        f'<a href=" java&#x09;script:{js}">a spaced link</a>'
        f'<a href="data:text/html,&lt;script&gt;{js}&lt;/script&gt;">a data link</a>'
        f'<style>@import url("https://example.invalid/x.css");</style>'
        f'<p style="position:fixed;top:0;background-image:url(https://example.invalid/t)">'
        "styled</p>"
        f'<img src="https://example.invalid/track.png?leak=1">'
        f'<noscript><p title="</noscript><img src=x onerror=&quot;{js}&quot;>"></p></noscript>'
        f'<math><mtext><table><mglyph><style><img src=x onerror="{js}">'
    )


def svg_payload(tag: str) -> str:
    js = script(tag)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" onload="{js}">'
        f"<script>{js}</script>"
        f'<a href="javascript:{js}"><rect width="40" height="40" fill="red"/></a></svg>'
    )


def markdown_payload(tag: str) -> str:
    js = script(tag)
    return (
        f'**Bold** text <img src="x" onerror="{js}"> and a '
        "[safe link](https://pandas.pydata.org/docs/) and a "
        f"[bad link](javascript:{js.replace('(', '%28').replace(')', '%29')})\n\n"
        f'<details open ontoggle="{js}"><summary>more</summary>x</details>\n'
    )


def cell_payload(tag: str) -> str:
    return f'<img src="x" onerror="{script(tag)}">'


# --- checking cleaned HTML --------------------------------------------------------------------

_FORBIDDEN = {
    "script", "style", "iframe", "object", "embed", "form", "input", "button", "svg",
    "math", "link", "meta", "base", "frame", "frameset", "textarea", "template",
    "noscript", "animate", "set",
}  # fmt: skip
_SAFE_HREF = re.compile(r"(https?:|mailto:|[#/?.]|[^:]*$)", re.I)


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _FORBIDDEN:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = re.sub(r"[\x00-\x20]", "", value or "")
            if name.startswith("on") or name in ("srcdoc", "formaction", "xlink:href"):
                self.found.append(f"{tag}[{name}]")
            elif name == "href" and not _SAFE_HREF.match(value):
                self.found.append(f"{tag}[href={value[:30]}]")
            elif name == "src" and not value.startswith("data:image/"):
                self.found.append(f"{tag}[src={value[:30]}]")
            elif name == "style" and re.search(r"url\(|position|expression", value, re.I):
                self.found.append(f"{tag}[style={value[:30]}]")


def problems(markup: str) -> list[str]:
    """What in ``markup`` could run script, load from elsewhere or cover the page."""
    scanner = _Scanner()
    scanner.feed(markup)
    scanner.close()
    return scanner.found
