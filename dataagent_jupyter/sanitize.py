"""The one trust boundary: what the child kernel outputs and what the model writes.

JupyterLab trusts the outputs of a cell it ran, and ipywidgets' ``Output`` and ``HTML``
views trust whatever they are given. Script in such an output acts with the user's whole
Jupyter authority (the contents API, terminals, the user's kernel, which holds the API
key), so anything that did not come from the user passes this module before it is shown:

- **Child output** (display data, results, streams) becomes an :class:`~.events.Output`
  event, and ``Output`` cleans its bundle when it is made (:func:`clean_output`). That is
  the choke point: every front end (the ``%%ask`` cell, the chat widget, the side panel,
  a transcript replay) only ever sees an ``Output``, so none of them can forget.
- **Model text** (streamed answers, explanations, summaries) is Markdown; front ends show
  it through :func:`markdown_bundle` (CommonMark with markdown-it-py, then the same HTML
  cleaning), never as ``text/markdown`` a trusted renderer would pass raw HTML through.
- **Exports** (Markdown files, notebooks) keep Markdown readable as Markdown:
  :func:`markdown_source` escapes any raw HTML and breaks script links in it.

What is kept (an allow-list; everything else is dropped with a one-line note naming the
type): ``text/plain``; ``image/png``, ``image/jpeg``, ``image/gif`` (checked to be
base64); ``text/html`` cleaned by nh3 (no script, style, iframe, object, embed or form,
no event handlers, links only to http(s)/mailto/relative targets, images only as
``data:image/...`` URIs so an output cannot make the browser fetch from a server of its
choosing); ``text/markdown`` rendered to cleaned HTML; ``image/svg+xml`` shown as an
``<img>`` whose source is a data URI (a browser runs no script in an SVG used as an
image); ``application/json``. One output larger than ``max_bytes`` is replaced by a note.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ALLOWED_MIME",
    "MAX_OUTPUT_BYTES",
    "clean_html",
    "clean_output",
    "markdown_bundle",
    "markdown_html",
    "markdown_source",
]

#: Default cap on one output's size (all its representations together).
MAX_OUTPUT_BYTES = 20 * 1024 * 1024

#: The MIME types an output may keep (after cleaning).
ALLOWED_MIME = (
    "text/plain",
    "text/html",
    "text/markdown",
    "image/svg+xml",
    "image/png",
    "image/jpeg",
    "image/gif",
    "application/json",
)
_IMAGES = ("image/png", "image/jpeg", "image/gif")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd",
    "del", "details", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q",
    "s", "samp", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
}  # fmt: skip
_ATTRIBUTES = {
    "*": {"title", "lang", "dir", "style"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start"},
}
# Properties that cannot load anything (no url() values) or cover the page (no position).
_STYLE = {
    "color", "background-color", "text-align", "vertical-align", "font-weight",
    "font-style", "font-size", "font-family", "text-decoration", "white-space", "border",
    "border-left", "border-right", "border-top", "border-bottom", "border-collapse",
    "border-color", "border-width", "border-style", "padding", "padding-left",
    "padding-right", "padding-top", "padding-bottom", "margin", "margin-left",
    "margin-right", "margin-top", "margin-bottom", "width", "min-width", "max-width",
}  # fmt: skip
_CLASSES = {
    "table": {"dataframe", "dataagent-history", "dataagent-stats"},
    "div": {"highlight", "dataagent-note", "dataagent-error", "dataagent-loaded"},
    "code": {"language-python"},
}
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml)[;,]")
_LINK_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def _attribute(tag: str, name: str, value: str) -> str | None:
    """nh3's per-attribute filter: the URL rules nh3's scheme list cannot say alone."""
    if name not in ("href", "src"):
        return value
    # browsers ignore whitespace and control characters inside a scheme ("java\tscript:")
    flat = _CONTROL.sub("", value).lower()
    if name == "src":
        return value if tag == "img" and _DATA_IMAGE.match(flat) else None
    scheme = _SCHEME.match(flat)
    if scheme is None or scheme.group(1) in _LINK_SCHEMES:
        return value
    return None


def clean_html(text: str) -> str:
    """``text`` with everything that could run script or load from elsewhere removed."""
    return _cleaner().clean(text)


@functools.lru_cache(maxsize=1)
def _cleaner() -> Any:
    import nh3

    return nh3.Cleaner(
        tags=_TAGS,
        clean_content_tags={"script", "style", "template", "noscript", "textarea", "title"},
        attributes=_ATTRIBUTES,
        attribute_filter=_attribute,
        url_schemes={*_LINK_SCHEMES, "data"},
        allowed_classes=_CLASSES,
        filter_style_properties=_STYLE,
        link_rel="noopener noreferrer nofollow",
    )


@functools.lru_cache(maxsize=1)
def _markdown_it() -> Any:
    from markdown_it import MarkdownIt

    # CommonMark plus the GFM tables and strikethrough models write; raw HTML is let
    # through to be cleaned with the rest, so harmless tags (<br>, <details>) still work.
    md = MarkdownIt("commonmark", {"html": True, "highlight": _highlight})
    return md.enable(["table", "strikethrough"])


def _highlight(code: str, lang: str, _attrs: str) -> str:
    if lang.lower() not in ("python", "py", "python3"):
        return ""  # markdown-it escapes it into a plain block
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:  # pragma: no cover - pygments is an IPython dependency
        return ""
    # markdown-it keeps a rendering that is already a <pre> block as it is
    spans = highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nowrap=True))
    return f'<pre><code class="language-python">{spans}</code></pre>'


def markdown_html(text: str) -> str:
    """Model (or other untrusted) Markdown as cleaned HTML; links keep working."""
    return clean_html(_markdown_it().render(text))


def markdown_bundle(text: str) -> dict[str, str]:
    """A display bundle for untrusted Markdown: cleaned HTML, and the text for terminals."""
    return {"text/html": markdown_html(text), "text/plain": text}


def _note(mime: str, why: str) -> str:
    return f"[Data Agent: an output of type {mime} is not shown: {why}.]"


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    try:
        return len(json.dumps(value))
    except (TypeError, ValueError):
        return 0


def _text(value: Any) -> str | None:
    """A text representation as one string (nbformat allows a list of lines), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return "".join(value)
    return None


def _svg_html(svg: str) -> str:
    encoded = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img src="data:image/svg+xml;base64,{encoded}" alt="SVG image">'


def clean_output(
    data: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    max_bytes: int = MAX_OUTPUT_BYTES,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One output's MIME bundle and metadata, reduced to what is safe to show as trusted.

    Idempotent: a bundle cleaned once comes back unchanged, so a second front end (or a
    replay) may clean it again.
    """
    metadata = metadata if isinstance(metadata, Mapping) else {}
    total = sum(_size(v) for v in data.values())
    if total > max_bytes:
        plain = _text(data.get("text/plain")) or ""
        head = plain[:2000] + ("…" if len(plain) > 2000 else "")
        note = (
            f"[Data Agent: an output of {total / 1e6:.1f} MB is not shown: one output may "
            f"be at most {max_bytes / 1e6:.0f} MB.]"
        )
        return {"text/plain": f"{head}\n{note}" if head else note}, {}

    out: dict[str, Any] = {}
    notes: list[str] = []
    for mime, value in data.items():
        if mime not in ALLOWED_MIME:
            notes.append(_note(mime, "only text, images, HTML, Markdown, SVG and JSON are"))
            continue
        if mime == "application/json":
            if isinstance(value, dict | list):
                out[mime] = value
            else:
                notes.append(_note(mime, "it is not a JSON object"))
            continue
        text = _text(value)
        if text is None:
            notes.append(_note(mime, "its content is not text"))
        elif mime in _IMAGES:
            if _BASE64.fullmatch(text):
                out[mime] = text
            else:
                notes.append(_note(mime, "its content is not base64"))
        else:
            out[mime] = text

    # One HTML rendering, made safe: the sender's own HTML first, else its Markdown, else
    # its SVG (as an image, where no script runs).
    if "text/html" in out:
        out["text/html"] = clean_html(out["text/html"])
    elif "text/markdown" in out:
        out["text/html"] = markdown_html(out["text/markdown"])
    elif "image/svg+xml" in out:
        out["text/html"] = _svg_html(out["image/svg+xml"])
    if "text/markdown" in out:
        out.setdefault("text/plain", out["text/markdown"])
    out.pop("text/markdown", None)
    out.pop("image/svg+xml", None)

    if notes:
        line = "\n".join(notes)
        out["text/plain"] = f"{out['text/plain']}\n{line}" if "text/plain" in out else line
        if "text/html" in out:
            out["text/html"] += "".join(
                f'<div class="dataagent-note">{html.escape(n)}</div>' for n in notes
            )
    return out, _clean_metadata(metadata, out)


def _clean_metadata(metadata: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Only image sizes survive: nothing else in metadata changes how an output renders
    safely (``isolated``, ``unconfined`` and the like are the sender's to want, not ours)."""
    out: dict[str, Any] = {}
    for mime in _IMAGES:
        entry = metadata.get(mime)
        if mime in data and isinstance(entry, Mapping):
            size = {
                k: v
                for k, v in entry.items()
                if k in ("width", "height") and isinstance(v, int | float)
            }
            if size:
                out[mime] = size
    return out


# --- Markdown that stays Markdown (exports) -------------------------------------------------

# "<" that could open a tag, a comment, a declaration or an autolink
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
# a link or image destination, or a reference definition, with a scheme that runs script
_BAD_LINK = re.compile(r"(\]\s*)\((?=\s*<?\s*(?:javascript|vbscript|data|file)\s*:)", re.I)
_BAD_REF = re.compile(
    r"^(\s*)\[(?=[^\]]*\]:\s*<?\s*(?:javascript|vbscript|data|file)\s*:)", re.I | re.M
)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def _raw_html(text: str) -> bool:
    """Whether CommonMark would pass raw HTML (or a script link) through in ``text``."""
    for token in _markdown_it().parse(text):
        if token.type == "html_block":
            return True
        for child in token.children or ():
            if child.type == "html_inline":
                return True
    return bool(_BAD_LINK.search(text) or _BAD_REF.search(text))


def _code_lines(text: str) -> set[int]:
    lines: set[int] = set()
    for token in _markdown_it().parse(text):
        if token.type in ("fence", "code_block") and token.map:
            lines.update(range(*token.map))
    return lines


def _escape_line(line: str) -> str:
    # code spans stay as written (escaping there would show the escape)
    parts, last = [], 0
    for span in _CODE_SPAN.finditer(line):
        parts.append(_escape_prose(line[last : span.start()]))
        parts.append(span.group(0))
        last = span.end()
    parts.append(_escape_prose(line[last:]))
    return "".join(parts)


def _escape_prose(text: str) -> str:
    text = _TAG_START.sub("&lt;", text)
    text = _BAD_LINK.sub(r"\1\\(", text)
    return _BAD_REF.sub(r"\1\\[", text)


def markdown_source(text: str) -> str:
    """Untrusted Markdown kept as Markdown, with raw HTML escaped and script links broken.

    Text without either comes back unchanged. Code blocks and code spans are left as
    written; if the escaped text would still hold raw HTML (a code span the line-by-line
    pass misread), every tag opening outside code blocks is escaped.
    """
    if not _raw_html(text):
        return text
    code = _code_lines(text)
    lines = text.split("\n")
    escaped = [ln if i in code else _escape_line(ln) for i, ln in enumerate(lines)]
    result = "\n".join(escaped)
    if _raw_html(result):
        result = "\n".join(ln if i in code else _escape_prose(ln) for i, ln in enumerate(lines))
    return result
