"""The `labels` section: the label space a model is trained in (docs/label_spaces.md).

Empty (the default) means "the dataset's own": training fills it with the full class list of the
data it trains on, so a model folder's config.yaml carries its label space; a config without one
(a converted original checkpoint, an older model folder) is the Cityscapes label space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ids import VOID_ID
from ..label_space import CITYSCAPES, LabelSpace, LabelSpaceError, builtin_label_space, label_space_from_dict
from .checks import at_least, between, each, length, rules

if TYPE_CHECKING:
    from .schema import Config


@dataclass
class ClassConfig:
    id: int = field(default=0, metadata=rules(between(0, 65535)))
    name: str = ""
    thing: bool = False
    # model channel; -1 = automatic (stuff in list order, then things)
    train_id: int = field(default=-1, metadata=rules(at_least(-1)))
    # [r, g, b]; [] = automatic colour
    color: list[int] = field(default_factory=list, metadata=rules(length(0, 3), each(between(0, 255))))


@dataclass
class LabelsConfig:
    # cityscapes | semkitti | a custom name; "" = the training data's own label space
    name: str = ""
    # dataset class id of unlabelled pixels (Cityscapes 32 = panoptic id 32000, SemKITTI 255); -1 = unset
    void_id: int = field(default=-1, metadata=rules(at_least(-1)))
    # official evaluator conventions: cityscapes-dps | semkitti-dps ("" = cityscapes-dps)
    protocol: str = ""
    # dataset class ids that are neither trained nor evaluated (void)
    ignored_ids: list[int] = field(default_factory=list)
    classes: list[ClassConfig] = field(default_factory=list)


def labels_config(space: LabelSpace) -> LabelsConfig:
    """The full `labels` section of a label space (what training writes into config.yaml)."""
    doc = space.to_dict()
    classes = [ClassConfig(**c) for c in doc.pop("classes")]
    return LabelsConfig(classes=classes, **doc)


def configured_label_space(labels: LabelsConfig, source: str = "config") -> LabelSpace | None:
    """The label space a `labels` section names or lists; None when it is empty."""
    if labels.classes:
        doc = {
            "name": labels.name or "custom",
            "void_id": labels.void_id if labels.void_id >= 0 else VOID_ID // 1000,
            "protocol": labels.protocol or "cityscapes-dps",
            "ignored_ids": list(labels.ignored_ids),
            "classes": [
                {"id": c.id, "name": c.name, "thing": c.thing, "train_id": c.train_id, "color": list(c.color)}
                for c in labels.classes
            ],
        }
        return label_space_from_dict(doc, f"{source}: labels")
    if labels.name:
        try:
            return builtin_label_space(labels.name)
        except LabelSpaceError as err:
            raise LabelSpaceError(f"{source}: labels.name: {err}") from None
    return None


def model_label_space(cfg: Config, source: str = "config") -> LabelSpace:
    """The label space of a model's config: its `labels` section, or Cityscapes when it has none
    (converted original checkpoints and model folders written before label spaces were stored)."""
    space = configured_label_space(cfg.labels, source) or CITYSCAPES
    m = cfg.model
    if (m.num_classes, m.num_thing_classes, m.first_thing_id) != (
        space.num_classes,
        space.num_thing_classes,
        space.first_thing_id,
    ):
        raise LabelSpaceError(
            f"{source}: the model has {m.num_classes} classes ({m.num_thing_classes} things from train id "
            f"{m.first_thing_id}) but the label space {space.describe()}; set the 'labels' section"
        )
    return space


def apply_label_space(cfg: Config, space: LabelSpace) -> None:
    """Make `cfg` train in `space`: the class counts of the model and the full `labels` section."""
    cfg.labels = labels_config(space)
    cfg.model.num_classes = space.num_classes
    cfg.model.num_thing_classes = space.num_thing_classes
    cfg.model.first_thing_id = space.first_thing_id
