"""``scripts/readme_results.py`` loaded as a module (scripts/ is not a package)."""

import importlib.util

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    "readme_results", ROOT / "scripts" / "readme_results.py"
)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

BEGIN, END = _module.BEGIN, _module.END
checks, replace_section = _module.checks, _module.replace_section
results_markdown, render, main = _module.results_markdown, _module.render, _module.main
BACKFILL_BEGIN, BACKFILL_END = _module.BACKFILL_BEGIN, _module.BACKFILL_END
BACKFILL_RUN, backfill_markdown = _module.BACKFILL_RUN, _module.backfill_markdown
ADOPT_BEGIN, ADOPT_END, adopt_markdown = (
    _module.ADOPT_BEGIN,
    _module.ADOPT_END,
    _module.adopt_markdown,
)
PAGE = _module.PAGE
FRONT_PAGE = _module.FRONT_PAGE
