"""Host waits per training step and per post-processed image (`utils/host_sync.HostSyncCounter`).

Each counted call (`.item()`, `.tolist()`, `int(t)`, boolean-mask indexing, `nonzero`, ...) makes
the host wait for the GPU to finish all queued work. Counted on the CPU with the real network,
targets, losses and optimizer step; the same calls wait on a GPU.

    python benchmarks/host_syncs.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

NARROW = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=32",
    "model.heads.convs_dim=32",
    "model.heads.norm_groups=8",
    "model.backbone.freeze_at=0",
    "model.heads.deform_impl=torchvision",
]


def training_counts(root: Path, batch: int) -> tuple[int, dict]:
    from panopticdepth.config import load_config
    from panopticdepth.training.distributed import DistInfo
    from panopticdepth.training.engine import Trainer
    from panopticdepth.utils.host_sync import HostSyncCounter

    cfg = load_config(
        None,
        [f"data.root={root}", "data.dataset=synthetic", "data.num_workers=0", f"solver.ims_per_batch={batch}",
         "train.device=cpu", "train.tensorboard=false", *NARROW],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out, dist_info=DistInfo())
        samples = next(iter(trainer.build_loader(0)))
        with HostSyncCounter() as counter:
            trainer._step(iter([samples]), lambda: 0.0)
    return counter.count, dict(counter.by_op)


def postprocess_counts(root: Path) -> list[tuple[int, int, dict]]:
    from panopticdepth.config import load_config
    from panopticdepth.io.formats import read_image_rgb
    from panopticdepth.modeling import build_model
    from panopticdepth.modeling.postprocess import postprocess
    from panopticdepth.modeling.preprocess import preprocess
    from panopticdepth.utils.host_sync import HostSyncCounter

    cfg = load_config(None, NARROW)
    model = build_model(cfg.model).eval()
    rows = []
    for path in sorted(root.glob("**/*_leftImg8bit.png"))[:3]:
        image = torch.from_numpy(read_image_rgb(path)).permute(2, 0, 1).contiguous()
        x, sizes = preprocess([image], cfg.model)
        with torch.no_grad():
            out = model(x)
            for lv in out.levels:  # many centre peaks: an untrained network has none
                lv.center_logits.copy_(torch.rand(lv.center_logits.shape) * 8.0)
            with HostSyncCounter() as counter:
                result = postprocess(
                    out, model, cfg.model, sizes, with_instance_masks=False, with_sem_seg=False
                )
        rows.append((len(result[0].segments), counter.count, dict(counter.by_op)))
    return rows


def main() -> None:
    from panopticdepth.data.synthetic.writer import write_dataset

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, "train", 4, height=128, width=256, seed=0)
        print("| training step | host waits | by operation |\n|---|---|---|")
        for batch in (1, 2, 4):
            count, ops = training_counts(root, batch)
            print(f"| batch {batch} | {count} | {ops} |")
        print("\n| post-processing, one image | segments | host waits | by operation |\n|---|---|---|---|")
        for segments, count, ops in postprocess_counts(root):
            print(f"| 128x256 | {segments} | {count} | {ops} |")


if __name__ == "__main__":
    main()
