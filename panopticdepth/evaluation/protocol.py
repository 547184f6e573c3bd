"""The constants that distinguish the official DPQ evaluators (docs/evaluation_protocol.md#evaluators).

Everything the matching code needs to know about a dataset's evaluator is here, so the algorithm
in `matching.py` is written once: the id encoding (category * divisor + instance), which GT id is
"void" (subtracted from unions), which GT category is "ignore" (no FN, FP excusal), the prediction
void category, the depth-failed category, the PQ epsilon, the thing/stuff split and the window rule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..label_space import CITYSCAPES, SEMKITTI, LabelSpace, LabelSpaceError


@dataclass(frozen=True)
class Protocol:
    """One official evaluator's conventions.

    `epsilon=None` means PD-city's `max(x, 1)` denominators; a float means ViP-kitti's `x + eps`.
    `windows_cross_sequences`: ViP-kitti slides its k-frame windows over the globally sorted file
    list (docs/evaluation_protocol.md#semkitti); PD-city windows stay inside a sequence
    (docs/evaluation_protocol.md#windows).
    `abs_rel_unit`: the unit over which the evaluator's internal abs_rel side value is pooled
    ("sequence" for PD-city, "window" for ViP-kitti) before the unweighted mean over units.
    """

    name: str
    label_divisor: int
    void_category: int
    num_classes: int
    thing_classes: tuple[int, ...]
    class_names: tuple[str, ...]
    epsilon: float | None
    no_depth_lambda: float
    windows_cross_sequences: bool
    abs_rel_unit: str
    depth_failed_category: int = 19  # = num_classes of the two benchmarks; `protocol_for` sets N

    @property
    def void_id(self) -> int:
        """The one GT id whose overlap is subtracted from unions (docs/evaluation_protocol.md#void-union)."""
        return self.void_category * self.label_divisor

    @property
    def stuff_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_classes) if c not in self.thing_classes)

    @property
    def valid_pred_categories(self) -> frozenset[int]:
        """Prediction categories the official evaluator accepts without crashing
        (docs/evaluation_protocol.md#encodings)."""
        extra = {self.depth_failed_category}
        if self.name != "semkitti-dps":
            extra.add(self.void_category)  # PD-city skips category 32 in matching and FP counting
        return frozenset(range(self.num_classes)) | extra

    @property
    def valid_gt_categories(self) -> frozenset[int]:
        return frozenset(range(self.num_classes)) | {self.depth_failed_category, self.void_category}


CITYSCAPES_DPS = Protocol(
    name="cityscapes-dps",
    label_divisor=1000,
    void_category=CITYSCAPES.void_id,
    num_classes=CITYSCAPES.num_classes,
    thing_classes=CITYSCAPES.thing_train_ids,
    class_names=CITYSCAPES.names,
    epsilon=None,
    no_depth_lambda=-1.0,
    windows_cross_sequences=False,
    abs_rel_unit="sequence",
)

SEMKITTI_DPS = Protocol(
    name="semkitti-dps",
    label_divisor=2**20,
    void_category=SEMKITTI.void_id,
    num_classes=SEMKITTI.num_classes,
    thing_classes=tuple(sorted(c.id for c in SEMKITTI.classes if c.thing)),
    class_names=tuple(c.name for c in sorted(SEMKITTI.classes, key=lambda c: c.id)),
    epsilon=1e-10,
    no_depth_lambda=0.0,
    windows_cross_sequences=True,
    abs_rel_unit="window",
)

PROTOCOLS = {p.name: p for p in (CITYSCAPES_DPS, SEMKITTI_DPS)}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown DPQ protocol {name!r}; choose from {sorted(PROTOCOLS)}") from None


def protocol_for(space: LabelSpace) -> Protocol:
    """The evaluator conventions for data in `space`, sized to its classes.

    SemKITTI-protocol data is scored in its dataset ids (what `predict --format semkitti` writes);
    every other label space in train ids with the Cityscapes-DPS conventions, where the internal
    encoding (train id * 1000 + instance, void 32000) is the official Cityscapes-DPS one.
    """
    if space.protocol == "semkitti-dps":
        ids = sorted(c.id for c in space.classes)
        if ids != list(range(space.num_classes)):
            raise LabelSpaceError(f"label space '{space.name}': the SemKITTI protocol needs class ids 0..N-1")
        by_id = {c.id: c for c in space.classes}
        return replace(
            SEMKITTI_DPS,
            num_classes=space.num_classes,
            thing_classes=tuple(i for i in ids if by_id[i].thing),
            class_names=tuple(by_id[i].name for i in ids),
            void_category=space.void_id,
            depth_failed_category=space.num_classes
            if space.num_classes != space.void_id
            else space.void_id + 1,
        )
    return replace(
        CITYSCAPES_DPS,
        num_classes=space.num_classes,
        thing_classes=space.thing_train_ids,
        class_names=space.names,
        depth_failed_category=space.num_classes,
    )


def protocol_ids(space: LabelSpace, panoptic_hw: np.ndarray, prediction: bool = False) -> np.ndarray:
    """Internal panoptic ids (samples, model outputs) -> the ids `protocol_for(space)` scores.

    SemKITTI: ground-truth void is category 255; unassigned predicted pixels get category N, which
    the evaluator accepts and never matches (what `predict --format semkitti` writes)."""
    if space.protocol == "semkitti-dps":
        void = space.num_classes if prediction else None
        return space.panoptic_to_dataset(panoptic_hw, SEMKITTI_DPS.label_divisor, void_class=void)
    return np.asarray(panoptic_hw)


def lambda_key(lam: float) -> str:
    """'0.5', '0.25', '0.1', '-1', '0': the keys of expected.json and of the JSON summary."""
    return f"{lam:g}"
