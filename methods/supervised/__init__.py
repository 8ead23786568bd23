"""The supervised upper bound of the shape tables: a depth network trained on ground-truth depth."""

from .method import Supervised
from .training import SupervisedRecipe

__all__ = ["Supervised", "SupervisedRecipe"]
