"""DVC stage entry points: each a thin `python -m pipelines.NAME` shell over fct_registry."""
