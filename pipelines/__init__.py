"""DVC stage entry points: each a thin `python -m pipelines.NAME` shell over fct_registry.

Python imports this package before the stage module, so a stage whose params ask for
``determinism: portable`` re-executes under the kernel pins here, before the stage module
imports torch (``fct_registry.stages.early``).
"""

from fct_registry.stages.early import pin_before_imports

pin_before_imports()
