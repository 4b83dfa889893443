"""Model composition: chains, parallel ensembles and confidence routing and switches over named values."""

from .aggregate import mean, stacking, vote, weighted
from .graph import Chain, Graph, Node, Parallel, Result, Route, Step, Switch

__all__ = ["Chain", "Graph", "Node", "Parallel", "Result", "Route", "Step", "Switch", "mean", "stacking",
           "vote", "weighted"]
