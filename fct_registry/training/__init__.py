"""Training loops: supervised (+ BCT influence), SimCLR side-info, FCT transformations.

Nothing is re-exported here: importing one module must not import its siblings, so each DVC
stage depends only on the code it runs (``scripts/stage_deps.py``). Import from the defining
module.
"""
