"""Sphinx configuration of the fastml documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``).
The build reads nothing from the network: no intersphinx inventories, no theme switcher JSON,
and every font, icon and script of pydata-sphinx-theme is bundled with the theme.
"""

import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# Document the working tree's fastml, also when the build runs outside an editable install.
sys.path.insert(0, str(ROOT))

import fastml  # noqa: E402

project = "fastml"
author = "fastml developers"
copyright = "fastml developers"
version = release = fastml.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]

# Markdown: ":::" fences for directives, definition lists, and heading anchors so that links
# such as [text](page.md#section) resolve.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one generated page per public function and class, listed by hand in docs/api/.
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"

# numpydoc renders the Parameters/Returns sections. Its automatic "Methods" table of a class
# would repeat what autodoc's :members: already lists, so it is off.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"fastml {release}"
html_theme_options = {
    # Every option that makes the theme (or the browser) fetch something stays empty: no
    # version switcher, no analytics, no icon links to external hosts.
    "navigation_with_keys": False,
    # Four page names fit the header's width at 1280 pixels; the rest go to its "More" menu.
    "header_links_before_dropdown": 4,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_show_sourcelink = False
# The user-guide pages have no subpages, so their left sidebar would be empty: leave it out and
# give the text the width. The API pages under api/ keep it to list the module's functions.
html_sidebars = {"*": []}
html_static_path = ["_static"] if (DOCS / "_static").is_dir() else []

# The log-log plots that `fastml compare PRIMITIVE --plot FILE` draws, one per benchmarked
# primitive. They are build products, so a missing one is reported on the page, not as an error.
PLOTS_DIR = DOCS / "_static" / "plots"
PLOT_NAMES = ("kmeans", "knn", "attention", "kv_cache", "sampling", "bpe", "bpe_encode", "mlp")


class FastmlPlot(Directive):
    """Insert ``_static/plots/<name>.png`` as a figure, or the command that draws it when absent.

    Usage in a Markdown page::

        ```{fastml-plot} kmeans
        ```
    """

    required_arguments = 1
    has_content = False
    option_spec = {"width": directives.unchanged}

    def run(self):
        name = self.arguments[0]
        if name not in PLOT_NAMES:
            raise self.error(f"unknown plot {name!r}: expected one of {', '.join(PLOT_NAMES)}")

        path = PLOTS_DIR / f"{name}.png"
        command = f"fastml compare {name} --plot docs/_static/plots/{name}.png"
        if not path.is_file():
            return [self._missing_note(command)]

        # A leading "/" makes the path relative to the source directory, whatever the page.
        image = nodes.image(
            uri=f"/_static/plots/{name}.png",
            alt=f"Log-log plot of {name} time over input size for every backend",
            width=self.options.get("width", "100%"),
        )
        caption = nodes.caption("", "", *self._caption_text(command))
        return [nodes.figure("", image, caption)]

    @staticmethod
    def _caption_text(command):
        # The plot comes from whatever run drew it, so the caption makes no claim about load.
        return [
            nodes.Text("Time over input size on log-log axes, with the fitted exponent of each "
                       "backend, from one run of "),
            nodes.literal(text=command),
            nodes.Text(" on a machine whose load this page does not record. Figures from quiet "
                       "runs are on the benchmarks page."),
        ]

    @staticmethod
    def _missing_note(command):
        paragraph = nodes.paragraph()
        paragraph += nodes.Text("This build has no plot for this primitive. Draw it with ")
        paragraph += nodes.literal(text=command)
        paragraph += nodes.Text(" and build the docs again.")
        return nodes.note("", paragraph)


def skip_metadata_requests(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods that scikit-learn adds to every estimator subclass.

    scikit-learn generates them for metadata routing, and their docstrings refer to its own
    glossary, which this site does not have.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.add_directive("fastml-plot", FastmlPlot)
    app.connect("autodoc-skip-member", skip_metadata_requests)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
