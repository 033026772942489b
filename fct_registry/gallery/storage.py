"""Moved to :mod:`fct_registry.storage`. Temporary: the job modules still import these names
from here; this module goes once their imports point at ``fct_registry.storage``."""

from fct_registry.storage import TMP_SUFFIX, LocalStorage, S3Storage, Storage, pid_alive

__all__ = ["TMP_SUFFIX", "LocalStorage", "S3Storage", "Storage", "pid_alive"]
