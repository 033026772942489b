"""DVC stage `side_info`: train the SimCLR side-info extractor and embed both splits with it."""

import sys

from fct_registry.stages.entry import run_stage
from fct_registry.stages.side_info import side_info_stage

if __name__ == "__main__":
    sys.exit(
        run_stage(
            __doc__,
            lambda p, layout, _: side_info_stage(p, layout),
            distributed_module="pipelines.train_side_info",
        )
    )
