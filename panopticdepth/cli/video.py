"""Video options shared by `predict` and `evaluate --weights`: tracking and panel videos.

Frames reach the CLI in order, tagged with a sequence key (a video, a frame folder, a
Cityscapes-DVPS sequence). `SequenceTracking` keeps one `modeling.tracking.Tracker` for the running
sequence and starts afresh when the key changes, so ids stay the same within a sequence and never
leak into the next one; `PanelVideos` writes one mp4 of `--vis` panels per sequence.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_tracking_arguments(p: argparse.ArgumentParser, panels: bool = False) -> None:
    """`--no-track`, `--track-memory` (and `--vis-video` with `panels`)."""
    g = p.add_argument_group("video (frames of one video, frame folder or dataset sequence)")
    g.add_argument(
        "--no-track",
        action="store_true",
        help="label every frame on its own (default: thing ids follow objects through each sequence)",
    )
    g.add_argument("--track-memory", type=int, default=3, metavar="N",
                   help="frames a lost object is remembered and can get its id back (default 3)")  # fmt: skip
    g.add_argument("--track-low-score", type=float, default=0.05, metavar="S",
                   help="an object scored below the merge threshold but >= S keeps its track for the "
                        "frame (score hysteresis; default 0.05, 0 = off)")  # fmt: skip
    if panels:
        g.add_argument("--vis-video", action="store_true",
                       help="write <sequence>_vis.mp4: panels of each video / frame sequence")  # fmt: skip
        g.add_argument("--vis-fps", type=float, default=5.0, metavar="HZ",
                       help="frame rate of the --vis-video files (default 5)")  # fmt: skip


class SequenceTracking:
    """Relabel results with track ids, one tracker per sequence key (None: no tracking)."""

    def __init__(
        self,
        enabled: bool = True,
        memory: int = 3,
        intrinsics_spec: str | None = None,
        low_score: float = 0.05,
    ) -> None:
        from ..errors import PanopticDepthError
        from ..modeling.tracking import TrackerConfig

        if memory < 0:
            raise PanopticDepthError(f"--track-memory must be >= 0, got {memory}")
        if low_score < 0:
            raise PanopticDepthError(f"--track-low-score must be >= 0, got {low_score}")
        self.enabled = enabled
        self.config = TrackerConfig(memory=memory, low_score=low_score if low_score > 0 else None)
        self.intrinsics_spec = intrinsics_spec
        self._key: Hashable = None
        self._tracker: Any = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SequenceTracking:
        return cls(
            not args.no_track, args.track_memory, getattr(args, "intrinsics", None), args.track_low_score
        )

    def prepare(self, predictor: Any, sequences: Iterable[Hashable]) -> None:
        """Have `predictor` attach the low-score instances the tracker may admit to the results of
        the next frames, from `sequences` (None: a lone image), when any of them is tracked. The
        candidates keep the batch's head outputs alive (for the re-merge), so lone images skip them."""
        tracked = any(s is not None for s in sequences)
        wanted = self.enabled and self.config.low_score is not None and tracked
        predictor.candidate_score = self.config.low_score if wanted else None

    def __call__(self, sequence: Hashable, result: Any) -> Any:
        if not self.enabled or sequence is None or getattr(result, "segments", None) is None:
            return result  # nothing to track (no sequence, or a result without a segment list)
        from ..io.pointcloud import parse_intrinsics
        from ..modeling.tracking import Tracker

        if self._tracker is None or sequence != self._key:
            self._tracker, self._key = Tracker(self.config), sequence
        h, w = result.panoptic.shape[-2:]
        return self._tracker.update(result, parse_intrinsics(self.intrinsics_spec, int(h), int(w)))


class PanelVideos:
    """One `<name>_vis.mp4` of panels per sequence in `out_dir` (a no-op unless enabled)."""

    def __init__(self, out_dir: Path, enabled: bool, fps: float = 5.0, label_space: Any = None) -> None:
        self.out_dir = Path(out_dir)
        self.label_space = label_space  # colours and legend of the model's classes (None: Cityscapes)
        self.enabled = enabled
        self.fps = fps
        self._key: Hashable = None
        self._writer: Any = None
        self._max_depth: float | None = None
        self._names: set[str] = set()

    @classmethod
    def from_args(cls, out_dir: Path, args: argparse.Namespace, label_space: Any = None) -> PanelVideos:
        return cls(out_dir, getattr(args, "vis_video", False), getattr(args, "vis_fps", 5.0), label_space)

    def _name(self, frame: Any) -> str:
        base = frame.source.stem if frame.frame is not None else str(frame.sequence or frame.stem)
        name, n = base, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def add(self, frame: Any, result: Any) -> None:
        """Append the panel of `frame` (an `io.inputs.InputFrame`) to its sequence's video."""
        if not self.enabled:
            return
        from ..io.video import VideoWriter
        from ..visualization import auto_max_depth, panel_image

        key = frame.sequence if frame.sequence is not None else ("image", frame.stem)
        if self._writer is None or key != self._key:
            self.close()
            self._key = key
            self._writer = VideoWriter(self.out_dir / f"{self._name(frame)}_vis.mp4", self.fps)
            depth = None if result.depth is None else result.depth.float().cpu().numpy()
            self._max_depth = auto_max_depth(depth)  # one colour scale for the whole video
        extra = {} if self.label_space is None else {"label_space": self.label_space}
        self._writer.write(panel_image(frame.image, result, max_depth=self._max_depth, **extra))

    def close(self) -> None:
        if self._writer is not None:
            path = self._writer.close()
            if path is not None:
                logger.info("wrote %s (%d frames)", path, self._writer.frames)
            self._writer = None
