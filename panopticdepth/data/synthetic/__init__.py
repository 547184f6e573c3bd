"""Synthetic street scenes in the Cityscapes-DPS layout (what the demo trains on), or in the
SemKITTI-DVPS layout with a KITTI-like camera and LiDAR-sparse labels (`semkitti`).

`scene.sample_scene` draws a 3D street (boxes and planes), `render.render` ray casts it,
`writer.generate` / `writer.write_dataset` tie both to a seed and write the files;
`motion` moves the camera and the things for `writer.generate_sequence` / `writer.write_sequences`.
"""

from .camera import Camera
from .render import Rendered
from .scene import Scene, sample_scene
from .semkitti import (
    SemKITTIFrame,
    generate_semkitti,
    generate_semkitti_sequence,
    write_semkitti_dataset,
    write_semkitti_sequences,
)
from .writer import generate, generate_sequence, sequence_prefix, synth_prefix, write_dataset, write_sequences

__all__ = [
    "Camera",
    "Rendered",
    "Scene",
    "SemKITTIFrame",
    "generate",
    "generate_semkitti",
    "generate_semkitti_sequence",
    "generate_sequence",
    "sample_scene",
    "sequence_prefix",
    "synth_prefix",
    "write_dataset",
    "write_semkitti_dataset",
    "write_semkitti_sequences",
    "write_sequences",
]
