"""DVC stage `bct@NAME`: train the BCT baseline (new recipe + old frozen classifier)."""

import sys

from fct_registry.stages.bct import bct_stage
from fct_registry.stages.entry import run_stage

if __name__ == "__main__":
    sys.exit(
        run_stage(
            __doc__,
            lambda p, layout, a: bct_stage(p, layout, a.name),
            add_arguments=lambda ap: ap.add_argument(
                "--name", required=True, help="key under `bct:` in params.yaml"
            ),
            distributed_module="pipelines.train_bct",
        )
    )
