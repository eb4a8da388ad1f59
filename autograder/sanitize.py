"""Student HTML and Markdown made safe to render in the notebook kept for formgrader.

Formgrader shows `autograded/<student>/<assignment>/<notebook>.ipynb` to the instructor through
nbconvert, which passes HTML outputs, raw cells and the HTML inside Markdown through as they
are. So in that copy: text/html is cleaned by ammonia (the `nh3` binding): no script, style,
iframe, object, embed, form or event handler, no `javascript:` URL, no remote resource (an
image's source may only be an inline `data:image/...`); outputs that are script or can carry
script (application/javascript, image/svg+xml, widgets...) are dropped; text/plain, the usual
images, errors and printed text are kept. Markdown cells that are not the release's own are
cleaned the same way, and their Markdown links and images are defused too.
"""

from __future__ import annotations

import re
from typing import Any

# Output types kept as they are: inert text and raster images. text/html and text/markdown are
# kept after cleaning; everything else (javascript, svg, widget views, pdf...) is dropped.
_INERT_OUTPUTS = {"text/plain", "text/latex", "image/png", "image/jpeg", "image/gif",
                  "image/webp", "application/json"}
_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd",
    "del", "details", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s",
    "samp", "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
}  # ammonia's defaults without the ones that reorder text (bdo, bdi) or map areas
_ATTRIBUTES = {
    "a": {"href", "title"}, "img": {"src", "alt", "width", "height", "title"},
    "td": {"colspan", "rowspan", "align"}, "th": {"colspan", "rowspan", "align", "scope"},
    "col": {"span"}, "colgroup": {"span"}, "ol": {"start"}, "abbr": {"title"},
}
_URL_SCHEMES = {"http", "https", "mailto", "data"}  # data: kept for inline images only
_INLINE_IMAGE = re.compile(r"^data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*$",
                           re.IGNORECASE)


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "src":  # loaded as soon as it is shown: nothing from elsewhere
        return value if _INLINE_IMAGE.match(value.strip()) else None
    if re.sub(r"[\s\x00-\x1f]", "", value).lower().startswith("data:"):
        return None  # a data: link could open a page of the student's making
    return value


def clean_html(text: str) -> str:
    """Student HTML with only inert tags and attributes left (see the module's docstring)."""
    import nh3

    return nh3.clean(text, tags=_TAGS, attributes=_ATTRIBUTES,
                     clean_content_tags={"script", "style", "iframe", "object", "embed",
                                         "template", "noscript", "svg", "math", "textarea",
                                         "select", "title"},
                     url_schemes=_URL_SCHEMES, attribute_filter=_attribute_filter,
                     strip_comments=True, link_rel="noopener noreferrer nofollow")


# After clean_html, Markdown's own syntax can still make a link or load an image.
_DANGEROUS_SCHEME = re.compile(r"(?i)\b(javascript|vbscript|data|file)(\s*):")


def clean_markdown(text: str) -> str:
    """Student Markdown: its raw HTML cleaned as `clean_html` does (a bare "<" or "&" comes
    back escaped, which Markdown shows as the same character), every image defused (an image
    loads as soon as it is shown: `![x](http://...)` becomes literal text), and script-like
    URL schemes broken (`javascript :`), so no link can run anything."""
    text = clean_html(text)
    text = text.replace("![", "!\\[")
    return _DANGEROUS_SCHEME.sub(r"\1 :", text)


def _source(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def sanitize_notebook(notebook: Any, release: Any | None = None) -> Any:
    """`notebook` (an nbformat v4 NotebookNode) with student HTML and Markdown cleaned, in
    place. Markdown cells identical to one of `release`'s are the instructor's and kept."""
    trusted = set()
    if release is not None:
        trusted = {_source(cell.get("source", "")) for cell in release.get("cells", [])
                   if cell.get("cell_type") == "markdown"}
    # Widget state makes nbconvert load the widget manager's script from a CDN.
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook.get("cells", []):
        kind = cell.get("cell_type")
        source = _source(cell.get("source", ""))
        if kind == "markdown" and source not in trusted:
            cell["source"] = clean_markdown(source)
        elif kind == "raw":  # nbconvert's HTML passes raw cells through verbatim
            cell["source"] = clean_markdown(source)
        if "attachments" in cell:
            cell["attachments"] = {name: {mime: data for mime, data in bundle.items()
                                          if mime in _INERT_OUTPUTS and mime.startswith("image/")}
                                   for name, bundle in (cell.get("attachments") or {}).items()
                                   if isinstance(bundle, dict)}
        if kind == "code":
            cell["outputs"] = [_clean_output(output) for output in cell.get("outputs", [])
                               if _known_output(output)]
            # A count that is not a number makes nbconvert refuse the notebook: the TA could
            # not open it in formgrader.
            if type(cell.get("execution_count")) is not int:
                cell["execution_count"] = None
            for output in cell["outputs"]:
                if "execution_count" in output and type(output["execution_count"]) is not int:
                    output["execution_count"] = None
    return notebook


def _known_output(output: Any) -> bool:
    """An output of a known shape: nothing unvalidated reaches a renderer."""
    if not isinstance(output, dict):
        return False
    kind = output.get("output_type")
    if kind == "stream":  # text, shown escaped
        return isinstance(output.get("text"), str | list)
    if kind == "error":  # a traceback, shown escaped
        return isinstance(output.get("traceback"), list)
    return kind in ("display_data", "execute_result") and isinstance(output.get("data"), dict)


def _clean_output(output: Any) -> Any:
    data = output.get("data")
    if not isinstance(data, dict):
        return output  # stream and error outputs
    kept = {}
    for mime, value in data.items():
        if mime in _INERT_OUTPUTS:
            kept[mime] = value
        elif mime == "text/html":
            kept[mime] = clean_html(_source(value))
        elif mime == "text/markdown":
            kept[mime] = clean_markdown(_source(value))
    if not kept:  # an output that was only script still says that something was there
        kept["text/plain"] = "[output removed: not shown for safety]"
    output["data"] = kept
    if isinstance(output.get("metadata"), dict):
        output["metadata"] = {key: meta for key, meta in output["metadata"].items()
                              if key not in data or key in kept}
    return output
