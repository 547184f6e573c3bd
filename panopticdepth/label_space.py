"""A dataset's label space as data: classes, thing/stuff flags, colours, void id, evaluation protocol.

Three id spaces meet here (docs/label_spaces.md):

* **dataset ids**: the class ids in a dataset's files (Cityscapes train ids, SemKITTI classes
  0..18, the ids of a custom `classes.yaml`), and in the predictions written in that dataset's
  format;
* **train ids**: the model's class channels. Stuff classes come first, thing classes last, so the
  thing-centre head's channel k is train id `first_thing_id + k` (the original's layout,
  docs/original_implementation.md#class-ids);
* the library's **internal panoptic encoding** of samples and model outputs:
  `train_id * LABEL_DIVISOR + instance`, void = `VOID_ID` (`ids.py`).

A `LabelSpace` maps between the first two; training writes it into the model folder's
`config.yaml` (section `labels`), and targets, post-processing, writers, visualisation and
evaluation read it from there. Depends only on numpy and `ids.py`, so every subpackage can use it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .class_names import CITYSCAPES_CLASS_NAMES, SEMKITTI_CLASS_NAMES
from .errors import PanopticDepthError
from .ids import IGNORE_LABEL, LABEL_DIVISOR, VOID_ID

# The internal encoding keeps void at class VOID_ID // 1000 = 32 and the Cityscapes-DPS evaluator
# marks depth failures with class N, so at most 31 train ids fit.
MAX_TRAIN_CLASSES = 31
PROTOCOLS = ("cityscapes-dps", "semkitti-dps")


class LabelSpaceError(PanopticDepthError, ValueError):
    """A class list that cannot be a label space; the message names its source."""


@dataclass(frozen=True)
class LabelClass:
    """One class: its id in the dataset's files, the model channel it trains, how it is shown."""

    id: int
    name: str
    thing: bool
    train_id: int
    color: tuple[int, int, int]


@dataclass(frozen=True)
class LabelSpace:
    """The classes of one dataset, sorted by train id (stuff block, then thing block).

    `void_id`: the dataset class id of unlabelled pixels (Cityscapes 32, i.e. panoptic id 32000;
    SemKITTI 255). `ignored_ids`: dataset class ids that exist in the files but are neither trained
    nor evaluated (they become void). `protocol`: the official DPQ evaluator whose conventions
    apply to this data (`evaluation/protocol.py`).
    """

    name: str
    classes: tuple[LabelClass, ...]
    void_id: int
    protocol: str = "cityscapes-dps"
    ignored_ids: tuple[int, ...] = ()

    # ------------------------------------------------------------------ sizes
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_thing_classes(self) -> int:
        return sum(c.thing for c in self.classes)

    @property
    def first_thing_id(self) -> int:
        return self.num_classes - self.num_thing_classes

    @property
    def thing_train_ids(self) -> tuple[int, ...]:
        return tuple(range(self.first_thing_id, self.num_classes))

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in train-id order."""
        return tuple(c.name for c in self.classes)

    @property
    def colors(self) -> tuple[tuple[int, int, int], ...]:
        return tuple(c.color for c in self.classes)

    def train_id(self, name: str) -> int:
        """Train id of the class called `name` (KeyError naming the label space otherwise)."""
        for c in self.classes:
            if c.name == name:
                return c.train_id
        raise KeyError(f"label space '{self.name}' has no class '{name}'")

    # ------------------------------------------------------------------ id maps
    @cached_property
    def id_to_train(self) -> np.ndarray:
        """Lookup table dataset class id -> train id; IGNORE_LABEL for void and ignored ids,
        -1 for ids the label space does not know."""
        size = max([c.id for c in self.classes] + [self.void_id, *self.ignored_ids]) + 1
        table = np.full(max(size, 256), -1, dtype=np.int64)
        table[self.void_id] = IGNORE_LABEL
        table[list(self.ignored_ids)] = IGNORE_LABEL
        for c in self.classes:
            table[c.id] = c.train_id
        table.flags.writeable = False
        return table

    @cached_property
    def train_to_id(self) -> np.ndarray:
        """(num_classes,) dataset class id of each train id."""
        table = np.array([c.id for c in self.classes], dtype=np.int64)
        table.flags.writeable = False
        return table

    def to_train_ids(self, class_ids: np.ndarray, source: str) -> np.ndarray:
        """Dataset class ids -> train ids (IGNORE_LABEL for void / ignored); unknown ids raise a
        `LabelSpaceError` naming `source` (a file)."""
        ids = np.asarray(class_ids, dtype=np.int64)
        inside = (ids >= 0) & (ids < len(self.id_to_train))
        train = np.where(inside, self.id_to_train[np.clip(ids, 0, len(self.id_to_train) - 1)], -1)
        if (train < 0).any():
            bad = np.unique(ids[train < 0])[:8].tolist()
            known = sorted(c.id for c in self.classes)
            raise LabelSpaceError(
                f"{source}: class ids {bad} are not in the label space '{self.name}' "
                f"(classes {known}, void {self.void_id}"
                + (f", ignored {list(self.ignored_ids)})" if self.ignored_ids else ")")
            )
        return train

    def panoptic_to_dataset(
        self, panoptic_hw: np.ndarray, divisor: int, void_class: int | None = None
    ) -> np.ndarray:
        """Internal ids (train_id * 1000 + instance, VOID_ID) -> dataset ids
        `class * divisor + instance`, void -> `void_class * divisor` (default: the dataset's void id)."""
        pan = np.asarray(panoptic_hw, dtype=np.int64)
        train, inst = pan // LABEL_DIVISOR, pan % LABEL_DIVISOR
        valid = (pan >= 0) & (pan != VOID_ID) & (train < self.num_classes)
        cls = self.train_to_id[np.where(valid, train, 0)]
        void = self.void_id if void_class is None else void_class
        return np.where(valid, cls * divisor + inst, void * divisor)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The `labels` section of a model folder's config.yaml."""
        return {
            "name": self.name,
            "void_id": self.void_id,
            "protocol": self.protocol,
            "ignored_ids": list(self.ignored_ids),
            "classes": [
                {"id": c.id, "name": c.name, "thing": c.thing, "train_id": c.train_id, "color": list(c.color)}
                for c in self.classes
            ],
        }

    def same_classes(self, other: LabelSpace) -> bool:
        """True when both map the same dataset ids to the same train ids with the same thing flags."""
        key = [(c.id, c.train_id, c.thing) for c in self.classes]
        return key == [(c.id, c.train_id, c.thing) for c in other.classes] and self.void_id == other.void_id

    def describe(self) -> str:
        things = ", ".join(c.name for c in self.classes if c.thing)
        return f"'{self.name}': {self.num_classes} classes (things: {things}), void id {self.void_id}"


def auto_color(index: int) -> tuple[int, int, int]:
    """A distinct colour per index (golden-ratio hue steps), for classes without one."""
    hue = (index * 0.6180339887498949) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def build_label_space(
    name: str,
    entries: list[dict[str, Any]],
    *,
    void_id: int,
    protocol: str = "cityscapes-dps",
    source: str = "label space",
) -> LabelSpace:
    """Validate a class list and assign train ids.

    Each entry has `id`, `name`, optional `thing` (default false), `color` ([r, g, b]) and
    `train_id`: omitted = automatic (stuff in list order, then things in list order); 255 (or
    `ignore: true`) = the class is ignored. Explicit train ids must put stuff first and number the
    classes 0..N-1. Errors name `source` (e.g. the classes.yaml path).
    """
    if protocol not in PROTOCOLS:
        raise LabelSpaceError(f"{source}: unknown evaluation protocol {protocol!r} (choose from {PROTOCOLS})")
    if not entries:
        raise LabelSpaceError(f"{source}: the class list is empty")
    kept, ignored, seen_ids, seen_names = [], [], set(), set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e or "name" not in e:
            raise LabelSpaceError(f"{source}: class entry {i} needs 'id' and 'name'")
        cid, cname = e["id"], str(e["name"])
        if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid <= 65535:
            raise LabelSpaceError(f"{source}: class '{cname}': id must be an integer 0..65535, got {cid!r}")
        if cid in seen_ids:
            raise LabelSpaceError(f"{source}: class id {cid} is listed twice (second: '{cname}')")
        if cid == void_id:
            raise LabelSpaceError(f"{source}: class '{cname}' uses the void id {void_id}")
        if cname in seen_names:
            raise LabelSpaceError(f"{source}: class name '{cname}' is listed twice")
        seen_ids.add(cid)
        seen_names.add(cname)
        if e.get("ignore", False) or e.get("train_id") == IGNORE_LABEL:
            ignored.append(cid)
        else:
            kept.append(e)
    classes = _assign_train_ids(kept, source)
    return LabelSpace(name, classes, int(void_id), protocol, tuple(ignored))


def _assign_train_ids(entries: list[dict[str, Any]], source: str) -> tuple[LabelClass, ...]:
    things = [bool(e.get("thing", False)) for e in entries]
    if not any(things):
        raise LabelSpaceError(
            f"{source}: no thing class (mark countable classes with 'thing: true'); "
            "the model needs at least one"
        )
    if len(entries) > MAX_TRAIN_CLASSES:
        raise LabelSpaceError(
            f"{source}: {len(entries)} trained classes; "
            f"at most {MAX_TRAIN_CLASSES} fit the panoptic id encoding"
        )
    explicit = [e.get("train_id") for e in entries]
    if all(t is None for t in explicit):
        order = [i for i, t in enumerate(things) if not t] + [i for i, t in enumerate(things) if t]
        train = {i: k for k, i in enumerate(order)}
    elif any(t is None for t in explicit):
        raise LabelSpaceError(f"{source}: give 'train_id' for every class or for none")
    else:
        train = dict(enumerate(int(t) for t in explicit))
        if sorted(train.values()) != list(range(len(entries))):
            raise LabelSpaceError(
                f"{source}: train ids must number the trained classes 0..{len(entries) - 1}, "
                f"got {sorted(train.values())}"
            )
        n_stuff = things.count(False)
        wrong = [entries[i]["name"] for i, t in train.items() if (t >= n_stuff) != things[i]]
        if wrong:
            raise LabelSpaceError(
                f"{source}: stuff classes need train ids 0..{n_stuff - 1} and things {n_stuff}.."
                f"{len(entries) - 1}; wrong for {wrong}"
            )
    classes = []
    for i, e in enumerate(entries):
        color = e.get("color") or auto_color(train[i])
        if len(color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
            raise LabelSpaceError(f"{source}: class '{e['name']}': color must be [r, g, b] in 0..255")
        classes.append(LabelClass(int(e["id"]), str(e["name"]), things[i], train[i], tuple(color)))
    return tuple(sorted(classes, key=lambda c: c.train_id))


def label_space_from_dict(doc: dict[str, Any], source: str) -> LabelSpace:
    """Inverse of `LabelSpace.to_dict` (the `labels` section of config.yaml)."""
    entries = [dict(c) for c in doc.get("classes", [])]
    for e in entries:
        if e.get("train_id", 0) < 0:
            e.pop("train_id")
    ignored = [{"id": i, "name": f"ignored_{i}", "ignore": True} for i in doc.get("ignored_ids", [])]
    return build_label_space(
        str(doc.get("name") or "custom"),
        entries + ignored,
        void_id=int(doc["void_id"]),
        protocol=str(doc.get("protocol") or "cityscapes-dps"),
        source=source,
    )


# ---------------------------------------------------------------------- the two benchmark spaces
# Cityscapes: dataset ids are the train ids themselves (stuff 0..10, things 11..18, void 32 = 32000).
# Colours are the Cityscapes label colours of cityscapesscripts' table (checked in data/classes.py).
_CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
CITYSCAPES = build_label_space(
    "cityscapes",
    [
        {"id": i, "name": n, "thing": i >= 11, "train_id": i, "color": list(_CITYSCAPES_COLORS[i])}
        for i, n in enumerate(CITYSCAPES_CLASS_NAMES)
    ],
    void_id=VOID_ID // 1000,
    protocol="cityscapes-dps",
    source="the Cityscapes label space",
)

# SemKITTI-DVPS: things 0..7, stuff 8..18, 255 = void (docs/evaluation_protocol.md#semkitti). Each
# class trains the channel of the Cityscapes class of the same meaning (car 13, bicycle 18,
# motorcycle 17, truck 14, other-vehicle -> bus 15, person 11, bicyclist -> rider 12,
# motorcyclist -> 16; road 0, sidewalk 1, building 2, fence 4, vegetation 8, terrain 9, pole 5,
# traffic-sign 7; parking, trunk and other-ground take the remaining stuff slots 6, 3 and 10), so
# a Cityscapes-trained model fine-tunes class by class (paper section 4.3) and shows the same colours.
_SEMKITTI_TRAIN_IDS = (13, 18, 17, 14, 15, 11, 12, 16, 0, 6, 1, 10, 2, 4, 8, 3, 9, 5, 7)
SEMKITTI = build_label_space(
    "semkitti",
    [
        {"id": i, "name": n, "thing": i < 8, "train_id": t, "color": list(_CITYSCAPES_COLORS[t])}
        for i, (n, t) in enumerate(zip(SEMKITTI_CLASS_NAMES, _SEMKITTI_TRAIN_IDS, strict=True))
    ],
    void_id=255,
    protocol="semkitti-dps",
    source="the SemKITTI label space",
)

BUILTIN = {"cityscapes": CITYSCAPES, "semkitti": SEMKITTI}


def builtin_label_space(name: str) -> LabelSpace:
    try:
        return BUILTIN[name]
    except KeyError:
        raise LabelSpaceError(f"unknown label space {name!r} (built in: {sorted(BUILTIN)})") from None
