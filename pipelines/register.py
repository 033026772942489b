"""DVC stage `register`: log and register every model in MLflow; write outputs/registry.json."""

import logging
import sys

from fct_registry.registry.register import register_all
from fct_registry.registry.summary import write_summary
from fct_registry.stages.entry import run_stage


def _register(params, layout, _args) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("fct_registry.registry").setLevel(logging.INFO)
    summary, _ = register_all(params, layout)
    write_summary(summary, layout.root / "registry.json")


if __name__ == "__main__":
    sys.exit(run_stage(__doc__, _register))
