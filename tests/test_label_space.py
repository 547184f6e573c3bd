"""Label spaces: validation of class lists, the id maps, serialisation, the two built-in spaces and
the evaluation protocol each one selects."""

from __future__ import annotations

import numpy as np
import pytest

from panopticdepth.class_names import SEMKITTI_CLASS_NAMES
from panopticdepth.config import load_config
from panopticdepth.config.labels import apply_label_space, configured_label_space, model_label_space
from panopticdepth.evaluation.protocol import protocol_for, protocol_ids
from panopticdepth.label_space import (
    CITYSCAPES,
    SEMKITTI,
    LabelSpaceError,
    build_label_space,
    label_space_from_dict,
)

FIVE = [
    {"id": 7, "name": "vehicle", "thing": True},
    {"id": 0, "name": "ground"},
    {"id": 3, "name": "person", "thing": True},
    {"id": 5, "name": "structure"},
    {"id": 9, "name": "sky"},
    {"id": 4, "name": "junk", "ignore": True},
]


def test_automatic_train_ids_put_stuff_first_in_list_order():
    space = build_label_space("five", FIVE, void_id=32)
    assert space.names == ("ground", "structure", "sky", "vehicle", "person")
    assert (space.num_classes, space.num_thing_classes, space.first_thing_id) == (5, 2, 3)
    assert space.id_to_train[[0, 5, 9, 7, 3, 4, 32]].tolist() == [0, 1, 2, 3, 4, 255, 255]
    assert space.train_to_id.tolist() == [0, 5, 9, 7, 3]
    assert space.id_to_train[1] == -1  # unknown id


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"id": 1, "name": "a", "thing": True}, {"id": 1, "name": "b"}], "listed twice"),
        ([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "no thing class"),
        ([{"id": 32, "name": "a", "thing": True}], "void id"),
        ([{"id": 1, "name": "a", "thing": True}, {"id": 2, "name": "a"}], "name 'a' is listed twice"),
        (
            [{"id": 1, "name": "a", "thing": True, "train_id": 0}, {"id": 2, "name": "b", "train_id": 1}],
            "stuff",
        ),
        ([{"id": 1, "name": "a", "thing": True, "train_id": 0}, {"id": 2, "name": "b"}], "for every class"),
        ([{"id": i + 100, "name": f"c{i}", "thing": True} for i in range(40)], "at most 31"),
        ([{"name": "a"}], "needs 'id' and 'name'"),
    ],
)
def test_bad_class_lists_name_their_source(entries, message):
    with pytest.raises(LabelSpaceError, match=message) as err:
        build_label_space("x", entries, void_id=32, source="/data/classes.yaml")
    assert str(err.value).startswith("/data/classes.yaml")


def test_unknown_ids_are_an_error_naming_the_file():
    with pytest.raises(LabelSpaceError, match=r"a\.png: class ids \[1, 2\]"):
        build_label_space("five", FIVE, void_id=32).to_train_ids(np.array([[0, 1], [2, 32]]), "a.png")


def test_round_trip_through_config():
    space = build_label_space("five", FIVE, void_id=32)
    assert label_space_from_dict(space.to_dict(), "x") == space
    cfg = load_config(None)
    apply_label_space(cfg, space)
    assert (cfg.model.num_classes, cfg.model.num_thing_classes, cfg.model.first_thing_id) == (5, 2, 3)
    assert configured_label_space(cfg.labels) == space
    assert model_label_space(cfg) == space


def test_a_config_without_labels_is_cityscapes_and_must_agree_with_the_model():
    cfg = load_config(None)
    assert model_label_space(cfg) is CITYSCAPES
    cfg.model.num_classes = 20
    with pytest.raises(LabelSpaceError, match="model.yaml: the model has 20 classes"):
        model_label_space(cfg, "model.yaml")


def test_cityscapes_is_the_identity_and_semkitti_matches_cityscapes_meanings():
    assert CITYSCAPES.train_to_id.tolist() == list(range(19))
    assert CITYSCAPES.thing_train_ids == tuple(range(11, 19))
    by_name = {c.name: c for c in SEMKITTI.classes}
    assert [by_name[n].id for n in SEMKITTI_CLASS_NAMES] == list(range(19))
    assert all(by_name[n].thing == (i < 8) for i, n in enumerate(SEMKITTI_CLASS_NAMES))
    # each SemKITTI class trains the channel of the Cityscapes class of the same meaning
    same = {"car": "car", "person": "person", "bicyclist": "rider", "road": "road", "pole": "pole",
            "traffic-sign": "traffic sign", "vegetation": "vegetation", "other-vehicle": "bus"}  # fmt: skip
    for kitti, city in same.items():
        assert by_name[kitti].train_id == CITYSCAPES.train_id(city)
        assert by_name[kitti].color == CITYSCAPES.colors[CITYSCAPES.train_id(city)]


def test_protocols_follow_the_label_space():
    city = protocol_for(CITYSCAPES)
    assert city.name == "cityscapes-dps" and city.thing_classes == tuple(range(11, 19))
    kitti = protocol_for(SEMKITTI)
    assert kitti.name == "semkitti-dps" and kitti.thing_classes == tuple(range(8))
    assert kitti.class_names == SEMKITTI_CLASS_NAMES and kitti.void_category == 255
    five = protocol_for(build_label_space("five", FIVE, void_id=32))
    assert five.num_classes == 5 and five.thing_classes == (3, 4) and five.depth_failed_category == 5


def test_protocol_ids_for_semkitti():
    car, road = CITYSCAPES.train_id("car"), CITYSCAPES.train_id("road")  # SemKITTI car / road channels
    internal = np.array([[car * 1000 + 4, road * 1000], [32000, car * 1000 + 2]])
    gt = protocol_ids(SEMKITTI, internal)
    assert gt.tolist() == [[0 * 2**20 + 4, 8 * 2**20], [255 * 2**20, 0 * 2**20 + 2]]
    pred = protocol_ids(SEMKITTI, internal, prediction=True)
    assert pred[1, 0] == 19 * 2**20  # unassigned predictions: category N, accepted and never matched
    assert (
        protocol_ids(CITYSCAPES, internal) is not None
        and (protocol_ids(CITYSCAPES, internal) == internal).all()
    )


def test_a_model_in_another_label_space_is_refused_with_a_hint():
    from panopticdepth.config import DataConfig
    from panopticdepth.data.build import check_label_space
    from panopticdepth.errors import DataError

    data = DataConfig(dataset="semkitti-dps", root="/data/kitti")
    with pytest.raises(DataError, match=r"m/config.yaml: .*differs.*/data/kitti.*labels.name=semkitti"):
        check_label_space(CITYSCAPES, SEMKITTI, "m/config.yaml", data)
    check_label_space(SEMKITTI, SEMKITTI, "m/config.yaml", data)  # the same classes pass
