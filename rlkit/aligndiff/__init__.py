"""AlignDiff: attribute strength model, behaviour-customisable diffusion planner, and its goal-conditioned BC baseline."""

from rlkit.aligndiff.aligndiff import AlignDiff, AttributeBC
from rlkit.aligndiff.attributes import ATTRIBUTES, AttributeAnnotator, AttributeStrengthModel, area_over_thresholds

__all__ = ["ATTRIBUTES", "AlignDiff", "AttributeAnnotator", "AttributeBC", "AttributeStrengthModel", "area_over_thresholds"]
