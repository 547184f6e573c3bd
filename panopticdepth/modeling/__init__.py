"""The PanopticDepth network (plain nn.Modules) and its pure post-processing. Knows no files."""
