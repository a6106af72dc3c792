"""An HTML template for `dvc plots show` that draws its charts with no network.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so an offline machine shows
empty boxes. This template inlines the three libraries, bundled by the `vl-convert-python`
package (a project dependency), as one classic <script> that sets `window.vegaEmbed`, `vega` and
`vegaLite`, which is what the `vegaEmbed('#id', spec)` calls of DVC's plot divs need.
`.dvc/config` names it once: `[plots] html_template = plots_template.html` (relative to .dvc/).
It is committed (about 0.9 MB), so `dvc plots show` works in any clone
however it was set up: DVC takes a missing template's path for the template's text and stops with
"HTML template has to contain '{plot_divs}'". The text depends only on the vl-convert-python
version: after upgrading it, `vitbench plots-template` regenerates the file (a test compares).
`vitbench init` writes it into a new project and commits it with the other files.
"""

from __future__ import annotations

from pathlib import Path

from vitbench.core.fsutil import atomic_file

TEMPLATE_NAME = "plots_template.html"  # in .dvc/, as .dvc/config's plots.html_template says
VEGALITE_VERSION = "5.21"  # DVC's plot templates are Vega-Lite v5 specs
# dvc-render's placeholders; {scripts} is left out on purpose: it is where the CDN tags would go
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- vega {vega}, vega-lite {vegalite}, vega-embed {embed}: bundled by vl-convert-python {vlc},
         inlined so that the page draws with no network (vitbench plots-template) -->
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def html_template(vl_version: str = VEGALITE_VERSION) -> str:
    """The template's text: dvc-render's page with the libraries inlined instead of the CDN tags."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=vl_version)
    for marker in (*PLACEHOLDERS, "{scripts}", "</script"):
        if marker in bundle:  # dvc-render fills placeholders with str.replace; </script ends the tag
            raise RuntimeError(f"the vl-convert bundle contains {marker!r}; it cannot be inlined")
    page = PAGE.format(refresh_tag="{refresh_tag}", plot_divs="{plot_divs}", bundle="{bundle}",
                       vega=vl_convert.get_vega_version(), vegalite=vl_version,
                       embed=vl_convert.get_vega_embed_version(),
                       vlc=getattr(vl_convert, "__version__", "?"))
    return page.replace("{bundle}", bundle)


def write_html_template(dest: str | Path, vl_version: str = VEGALITE_VERSION) -> Path:
    """Write the offline template to `dest` (atomically) and return its path."""
    dest = Path(dest)
    text = html_template(vl_version)
    with atomic_file(dest, "wb") as fh:  # bytes: the bundle is UTF-8 whatever the locale
        fh.write(text.encode("utf-8"))
    return dest
