"""DVC stage `backfill`: backfilling curves (random / uncertainty / oracle order) over seeds."""

import sys

from fct_registry.stages.backfill import backfill_stage
from fct_registry.stages.entry import run_stage

if __name__ == "__main__":
    sys.exit(run_stage(__doc__, lambda p, layout, _: backfill_stage(p, layout)))
