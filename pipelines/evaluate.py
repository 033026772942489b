"""DVC stage `evaluate`: score every compatibility case; write metrics, table and heatmap."""

import sys

from fct_registry.stages.entry import run_stage
from fct_registry.stages.evaluate import evaluate_stage

if __name__ == "__main__":
    sys.exit(run_stage(__doc__, lambda p, layout, _: evaluate_stage(p, layout)))
