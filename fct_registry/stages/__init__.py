"""The DVC pipeline's stages as library functions; where outputs live: ``fct_registry.layout``."""
