"""Training loops: supervised (+ BCT influence), SimCLR side-info, FCT transformations."""

from fct_registry.training.classifier import BctInfluence, train_classifier
from fct_registry.training.contrastive import nt_xent, train_side_info
from fct_registry.training.embed import apply_transformation, embed_images
from fct_registry.training.loop import run_training, write_history
from fct_registry.training.transformation import train_transformation

__all__ = [
    "BctInfluence",
    "apply_transformation",
    "embed_images",
    "nt_xent",
    "run_training",
    "train_classifier",
    "train_side_info",
    "train_transformation",
    "write_history",
]
