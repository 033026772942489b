"""DVC stage `transform@NAME`: train the FCT transformation NAME on stored embeddings."""

import sys

from fct_registry.stages.entry import run_stage
from fct_registry.stages.transformation import transformation_stage

if __name__ == "__main__":
    sys.exit(
        run_stage(
            __doc__,
            lambda p, layout, a: transformation_stage(p, layout, a.name),
            add_arguments=lambda ap: ap.add_argument(
                "--name", required=True, help="key under `transformations:` in params.yaml"
            ),
            distributed_module="pipelines.train_transformation",
        )
    )
