"""Synthetic street scenes in the Cityscapes-DPS layout (what the demo trains on).

`scene.sample_scene` draws a 3D street (boxes and planes), `render.render` ray casts it,
`writer.generate` / `writer.write_dataset` tie both to a seed and write the files;
`motion` moves the camera and the things for `writer.generate_sequence` / `writer.write_sequences`.
"""

from .camera import Camera
from .render import Rendered
from .scene import Scene, sample_scene
from .writer import generate, generate_sequence, sequence_prefix, synth_prefix, write_dataset, write_sequences

__all__ = [
    "Camera",
    "Rendered",
    "Scene",
    "generate",
    "generate_sequence",
    "sample_scene",
    "sequence_prefix",
    "synth_prefix",
    "write_dataset",
    "write_sequences",
]
