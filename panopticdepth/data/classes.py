"""Cityscapes label-id tables (from `cityscapesscripts.helpers.labels`) for the readers.

The label spaces themselves (class names, thing flags, colours, train ids) live in
`panopticdepth/label_space.py`; this module checks the built-in Cityscapes one against
cityscapesscripts' table and holds the label id -> train id map of the Cityscapes panoptic JSON.
"""

from __future__ import annotations

from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from ..ids import IGNORE_LABEL
from ..label_space import CITYSCAPES

# trainId -> Label of the 19 evaluated Cityscapes classes, in train id order.
_TRAIN = sorted((lab for lab in _CS_LABELS if 0 <= lab.trainId < IGNORE_LABEL), key=lambda lab: lab.trainId)
assert tuple(lab.name for lab in _TRAIN) == CITYSCAPES.names  # one table, checked at import
assert tuple(tuple(lab.color) for lab in _TRAIN) == CITYSCAPES.colors
assert tuple(lab.hasInstances for lab in _TRAIN) == tuple(c.thing for c in CITYSCAPES.classes)
# Cityscapes label id -> train id (255 for ignored labels); used by the panoptic JSON reader
# (docs/original_implementation.md#cityscapes-panoptic).
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    lab.id: (lab.trainId if 0 <= lab.trainId < IGNORE_LABEL else IGNORE_LABEL)
    for lab in _CS_LABELS
    if lab.id >= 0
}
# Cityscapes class name -> train id (the synthetic scenes are labelled in the Cityscapes label space).
TRAIN_ID: dict[str, int] = {c.name: c.train_id for c in CITYSCAPES.classes}
