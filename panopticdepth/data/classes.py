"""Class tables: Cityscapes (from `cityscapesscripts.helpers.labels`) and SemKITTI-DVPS.

The library's label space is the Cityscapes one (docs/original_implementation.md#class-ids): 19 train ids,
stuff 0..10, things 11..18, thing index = train id - 11. Other datasets are mapped into it at load time.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from ..class_names import CITYSCAPES_CLASS_NAMES, SEMKITTI_CLASS_NAMES
from ..io.formats import IGNORE_LABEL

NUM_CLASSES = 19
THING_TRAIN_IDS = tuple(range(11, 19))
STUFF_TRAIN_IDS = tuple(range(0, 11))
FIRST_THING_ID = 11

# trainId -> Label of the 19 evaluated Cityscapes classes, in train id order.
_TRAIN = sorted((lab for lab in _CS_LABELS if 0 <= lab.trainId < IGNORE_LABEL), key=lambda lab: lab.trainId)
assert tuple(lab.name for lab in _TRAIN) == CITYSCAPES_CLASS_NAMES  # one table, checked at import
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = tuple(tuple(lab.color) for lab in _TRAIN)
# Cityscapes label id -> train id (255 for ignored labels); used by the panoptic JSON reader
# (docs/original_implementation.md#cityscapes-panoptic).
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    lab.id: (lab.trainId if 0 <= lab.trainId < IGNORE_LABEL else IGNORE_LABEL)
    for lab in _CS_LABELS
    if lab.id >= 0
}
TRAIN_ID = {name: i for i, name in enumerate(CITYSCAPES_CLASS_NAMES)}

assert len(CITYSCAPES_CLASS_NAMES) == NUM_CLASSES
assert all(_TRAIN[t].hasInstances for t in THING_TRAIN_IDS)

# SemKITTI-DVPS (ViP-DeepLab release; docs/evaluation_protocol.md#semkitti): things 0..7, stuff 8..18, 255 =
# void.
# SemKITTI class -> library class id. Things go to the Cityscapes thing ids of the same meaning
# (car 13, bicycle 18, motorcycle 17, truck 14, other-vehicle -> bus 15, person 11,
# bicyclist -> rider 12, motorcyclist -> the unused train slot 16), stuff to the matching
# Cityscapes stuff ids (road 0, sidewalk 1, building 2, fence 4, vegetation 8, terrain 9, pole 5,
# traffic-sign 7); parking, trunk and other-ground take the remaining slots 6, 3 and 10. So
# "things are 11..18" holds for every dataset and a Cityscapes model transfers class by class.
SEMKITTI_TO_LIBRARY = np.full(256, IGNORE_LABEL, dtype=np.int64)
SEMKITTI_TO_LIBRARY[:19] = [13, 18, 17, 14, 15, 11, 12, 16, 0, 6, 1, 10, 2, 4, 8, 3, 9, 5, 7]
assert sorted(SEMKITTI_TO_LIBRARY[:19].tolist()) == list(range(19))
LIBRARY_TO_SEMKITTI = np.full(256, IGNORE_LABEL, dtype=np.int64)
LIBRARY_TO_SEMKITTI[SEMKITTI_TO_LIBRARY[:19]] = np.arange(19)


def semkitti_library_class_names() -> tuple[str, ...]:
    """SemKITTI names in library class order (stuff first, then things)."""
    return tuple(SEMKITTI_CLASS_NAMES[int(LIBRARY_TO_SEMKITTI[i])] for i in range(NUM_CLASSES))
