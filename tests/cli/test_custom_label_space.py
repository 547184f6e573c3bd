"""A dataset with its own 5 classes (2 things, listed first, non-contiguous ids) goes through
`train` -> `predict` -> `evaluate` from the command line, and the model folder remembers the classes.

The data are synthetic street scenes relabelled into the custom class list, written in the custom
folder format (docs/custom_dataset.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from panopticdepth.cli.main import main
from panopticdepth.data.classes import TRAIN_ID
from panopticdepth.data.synthetic.writer import generate
from panopticdepth.io.formats import encode_depth, read_panoptic_rgb

# Custom class id per Cityscapes class name of the synthetic scenes; things first, ids not 0..N-1.
CUSTOM = {"vehicle": 7, "person": 3, "ground": 0, "structure": 5, "sky": 9}
THINGS = {"vehicle", "person"}
GROUPS = {
    "vehicle": ("car", "truck", "bus", "train", "motorcycle", "bicycle"),
    "person": ("person", "rider"),
    "ground": ("road", "sidewalk", "terrain"),
    "structure": ("building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation"),
    "sky": ("sky",),
}
H, W = 64, 128


def _relabel(panoptic: np.ndarray) -> np.ndarray:
    """Cityscapes-space ids -> custom ids (class * 1000 + instance, void 32000)."""
    out = np.full(panoptic.shape, 32000, np.int64)
    cls, inst = panoptic // 1000, panoptic % 1000
    for group, names in GROUPS.items():
        for name in names:
            sel = cls == TRAIN_ID[name]
            # instances of different Cityscapes classes must not merge: offset by class
            offset = (TRAIN_ID[name] % 8) * 100 if group in THINGS else 0
            out[sel] = CUSTOM[group] * 1000 + (inst[sel] + offset if group in THINGS else 0)
    return out


def _write_custom(root, split, num, seed):
    for sub in ("images", "panoptic", "depth"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num):
        f = generate(seed, i, H, W)
        Image.fromarray(f.image).save(root / split / "images" / f"f{i:03d}.png")
        Image.fromarray(_relabel(f.panoptic).astype(np.uint16)).save(
            root / split / "panoptic" / f"f{i:03d}.png"
        )
        Image.fromarray(encode_depth(f.depth)).save(root / split / "depth" / f"f{i:03d}.png")


@pytest.fixture(scope="module")
def custom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom5")
    classes = [{"id": CUSTOM[n], "name": n, "thing": n in THINGS} for n in CUSTOM]
    (root / "classes.yaml").write_text(yaml.safe_dump({"classes": classes}))
    _write_custom(root, "train", 4, seed=0)
    _write_custom(root, "val", 2, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(custom_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "out"
    args = [
        "train", "--config", "configs/synthetic/small_cpu.yaml", "--output", str(run),
        "data.dataset=custom", f"data.root={custom_root}", "data.num_workers=0",
        "solver.max_iter=2", "solver.ims_per_batch=2", "train.log_period=1", "train.tensorboard=false",
        "train.checkpoint_period=0", "train.eval_period=0",
    ]  # fmt: skip
    assert main(args) == 0
    return run / "model"


def test_model_folder_keeps_the_custom_label_space(trained):
    cfg = yaml.safe_load((trained / "config.yaml").read_text())
    labels = cfg["labels"]
    assert [(c["name"], c["id"], c["thing"]) for c in labels["classes"]] == [
        ("ground", 0, False), ("structure", 5, False), ("sky", 9, False),
        ("vehicle", 7, True), ("person", 3, True),
    ]  # fmt: skip
    assert [c["train_id"] for c in labels["classes"]] == [0, 1, 2, 3, 4]
    m = cfg["model"]
    assert (m["num_classes"], m["num_thing_classes"], m["first_thing_id"]) == (5, 2, 3)


def test_predict_writes_the_dataset_class_ids(trained, custom_root, tmp_path):
    out = tmp_path / "pred"
    images = str(custom_root / "val" / "images")
    assert main(["predict", "--weights", str(trained), "--input", images, "--output", str(out), "--vis"]) == 0
    ids = read_panoptic_rgb(out / "f000_panoptic.png")
    classes = set(np.unique(ids // 1000).tolist())
    assert classes <= set(CUSTOM.values()) | {32}, classes  # file ids, never train ids 1, 2, 4
    assert (out / "f000_vis.png").is_file()


def test_evaluate_scores_in_the_custom_label_space(trained, custom_root, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--weights", str(trained), "--data", str(custom_root), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert [(c["name"], c["isthing"]) for c in summary["classes"]] == [
        ("ground", False), ("structure", False), ("sky", False), ("vehicle", True), ("person", True),
    ]  # fmt: skip


def test_evaluating_on_data_of_another_label_space_is_refused(trained, tmp_path, capsys):
    from panopticdepth.data.synthetic import write_dataset

    write_dataset(tmp_path / "cs", "val", 1, height=H, width=W, seed=2)
    code = main(
        ["evaluate", "--weights", str(trained), "--data", str(tmp_path / "cs"), "--dataset", "synthetic"]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "config.yaml" in err and "differs from the data" in err and "cityscapes" in err
