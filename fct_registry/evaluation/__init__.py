"""Retrieval evaluation: pairwise distances and CMC / mAP metrics over (query, gallery) tensors.

Nothing is re-exported here: importing one module must not import its siblings, so each DVC
stage depends only on the code it runs (``scripts/stage_deps.py``). Import from the defining
module.
"""
