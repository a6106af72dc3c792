"""User-provided text (class names, folder names, model names) made safe for markdown and HTML.

A class folder may be called `<img src=x onerror=alert(1)>` or `**bold**`: everything a user
named is passed through `escape_text` before it is written into markdown (compare.md, summaries,
model cards) or an HTML page, so it shows as the literal text and never as markup or script.
"""

from __future__ import annotations

import html
import re
from typing import Any

# characters that start markdown inline syntax anywhere in a line (emphasis, code, links, images,
# tables, strikethrough); `<`, `>` and `&` become HTML entities instead
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def escape_html(value: Any) -> str:
    """`value` as HTML text: `&`, `<`, `>` and quotes as entities."""
    return html.escape(str(value), quote=True)


def escape_text(value: Any) -> str:
    """`value` as literal text inside markdown that may be rendered as HTML: HTML entities for
    `& < > " '`, a backslash before every markdown punctuation character, line breaks as <br>.
    Safe in a paragraph, a list item and a table cell."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))
    text = html.escape(text, quote=True)
    return re.sub(r"\r\n|\r|\n", "<br>", text)
