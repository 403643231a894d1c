"""Structure analysis: where the transformer is in a graph (:class:`ModelMap`)."""

from parekit.analysis.discover import discover
from parekit.analysis.modelmap import AttentionSite, LayerMap, MlpSite, ModelMap

__all__ = ["AttentionSite", "LayerMap", "MlpSite", "ModelMap", "discover"]
