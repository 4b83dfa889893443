"""Model composition: chains, parallel ensembles and confidence routing over named values."""

from .aggregate import mean, stacking, vote, weighted
from .graph import Chain, Graph, Node, Parallel, Result, Route, Step

__all__ = ["Chain", "Graph", "Node", "Parallel", "Result", "Route", "Step", "mean", "stacking", "vote", "weighted"]
