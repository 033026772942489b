"""DVC stage `prepare`: validate params and materialise the dataset splits as safetensors."""

import sys

from fct_registry.stages.entry import run_stage
from fct_registry.stages.prepare import prepare_stage

if __name__ == "__main__":
    sys.exit(run_stage(__doc__, lambda p, layout, _: prepare_stage(p, layout)))
