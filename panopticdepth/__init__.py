"""panopticdepth: depth-aware panoptic segmentation (PanopticDepth, CVPR 2022) in plain PyTorch."""

__version__ = "0.1.0"
