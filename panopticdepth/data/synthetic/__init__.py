"""Synthetic street scenes in the Cityscapes-DPS layout (what the demo trains on).

`scene.sample_scene` draws a 3D street (boxes and planes), `render.render` ray casts it,
`writer.generate` / `writer.write_dataset` tie both to a seed and write the files.
"""

from .camera import Camera
from .render import Rendered
from .scene import Scene, sample_scene
from .writer import generate, synth_prefix, write_dataset

__all__ = ["Camera", "Rendered", "Scene", "generate", "sample_scene", "synth_prefix", "write_dataset"]
