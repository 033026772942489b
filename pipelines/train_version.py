"""DVC stage `train@N`: train version N of the family and embed both splits with it."""

import sys

from fct_registry.stages.entry import run_stage
from fct_registry.stages.version import version_stage

if __name__ == "__main__":
    sys.exit(
        run_stage(
            __doc__,
            lambda p, layout, a: version_stage(p, layout, a.version),
            add_arguments=lambda ap: ap.add_argument(
                "--version", type=int, required=True, help="version number declared in params.yaml"
            ),
            distributed_module="pipelines.train_version",
        )
    )
