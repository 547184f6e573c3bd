"""The one place that knows on-disk encodings (ids, depth PNGs, prediction PNGs, PLY)."""
