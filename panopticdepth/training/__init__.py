"""Training: targets and losses, solver, engine, checkpoints and distributed set-up.

Heavy pieces are imported from their modules (`panopticdepth.training.engine.Trainer`, ...), so
importing this package stays cheap.
"""
