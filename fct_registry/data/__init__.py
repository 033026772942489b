"""Datasets: sources on disk -> prepared safetensors splits -> batches with augmentations;
image sources (folders, manifests, tar shards, S3) streamed through DataLoader workers.

Nothing is re-exported here: importing one module must not import its siblings, so each DVC
stage depends only on the code it runs (``scripts/stage_deps.py``). Import from the defining
module.
"""
