"""DVC stage `gate`: the release gate's report (never promotes; see fct_registry.gate.stage)."""

import sys

from fct_registry.gate.stage import gate_stage
from fct_registry.stages.entry import run_stage

if __name__ == "__main__":
    sys.exit(run_stage(__doc__, lambda p, layout, _: gate_stage(p, layout)))
