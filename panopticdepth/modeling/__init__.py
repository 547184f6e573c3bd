"""The PanopticDepth network (plain nn.Modules) and its pure post-processing. Knows no files."""

from .network import PanopticDepthNet, build_model
from .preprocess import preprocess

__all__ = ["PanopticDepthNet", "build_model", "preprocess"]
