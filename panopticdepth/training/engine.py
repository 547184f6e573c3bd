"""The training loop: samples -> preprocess -> network -> targets -> losses -> Adam step (spec §7, §10.1).

One `Trainer` serves a single process and every rank of a `torchrun` job. It writes the resolved
`config.yaml`, `metrics.jsonl` (one JSON object per logged iteration, the original's loss names),
TensorBoard scalars, resumable checkpoints and the final `model/` directory into the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, ConfigError, save_config
from ..errors import CheckpointError, PanopticDepthError
from ..utils.files import atomic_write_text
from ..utils.progress import progress
from .checkpointer import DEPTH_MODULE_PREFIXES, Checkpointer, load_model_weights, rng_state, set_rng_state
from .distributed import (
    DistInfo,
    EpochIndexedDataset,
    InfiniteShardedBatchSampler,
    all_reduce_sum,
    barrier,
    convert_sync_batchnorm,
    wrap_ddp,
)
from .solver import autocast_context, build_grad_scaler, build_lr_scheduler, build_optimizer, clip_gradients
from .stop_signals import StopSignals

log = logging.getLogger(__name__)

# (samples, head outputs, padded (Hp, Wp), network, config) -> {loss name: scalar tensor}
Criterion = Callable[[list[dict], Any, tuple[int, int], nn.Module, Config], dict[str, torch.Tensor]]


class TrainingDiverged(PanopticDepthError):
    """A loss term became NaN or infinite; the message names the term and the iteration."""


@dataclass
class TrainResult:
    iteration: int  # completed optimizer steps
    reason: str  # "completed" | "time_budget"
    final_dir: Path | None
    last_losses: dict[str, float]


def default_criterion(
    samples: list[dict], outputs: Any, padded_size: tuple[int, int], model: nn.Module, cfg: Config
) -> dict[str, torch.Tensor]:
    """Contract 8: `build_targets` then `compute_losses` (training team A)."""
    from .losses import compute_losses
    from .targets import build_targets

    targets = build_targets(samples, outputs, padded_size, cfg)
    return compute_losses(outputs, targets, model, cfg)


def _to_float(obj: Any) -> Any:
    """Cast the floating tensors of (nested dataclass) outputs to float32 after autocast."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, list):
        return [_to_float(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_float(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj, **{f.name: _to_float(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        )
    return obj


class LossModule(nn.Module):
    """Network + criterion in one forward, so DDP sees every parameter use (the kernel projections
    are applied inside the losses) and reduces their gradients in the same backward."""

    def __init__(self, model: nn.Module, criterion: Criterion, cfg: Config, device: torch.device):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.cfg = cfg
        self.device = device

    def forward(
        self, batch_b3hw: torch.Tensor, samples: list[dict], padded_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        with autocast_context(self.cfg.solver.amp, self.device):
            outputs = self.model(batch_b3hw)
        if self.cfg.solver.amp.lower() not in ("none", "", "fp32"):
            outputs = _to_float(outputs)
        return self.criterion(samples, outputs, padded_size, self.model, self.cfg)


def samples_to(samples: list[dict], device: torch.device) -> list[dict]:
    if device.type == "cpu":
        return samples
    return [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in s.items()} for s in samples]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flatten_numbers(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten_numbers(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


@torch.no_grad()
def evaluate_model(model: nn.Module, cfg: Config, dataset: Any, max_images: int = 0) -> dict:
    """DPQ/PQ summary (contract 7) of `model` on `dataset`, one image at a time (batch 1, §9)."""
    from ..evaluation import DPSEvaluator
    from ..modeling.postprocess import postprocess
    from ..modeling.preprocess import preprocess

    m = cfg.model
    evaluator = DPSEvaluator(
        num_classes=m.num_classes,
        thing_ids=range(m.first_thing_id, m.num_classes),
        lambdas=tuple(cfg.eval.depth_thresholds),
        dataset="semkitti-dps" if cfg.data.dataset == "semkitti-dps" else "cityscapes-dps",
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    try:
        for i in progress(range(n), desc="eval", leave=False):
            sample = dataset[i]
            batch, sizes = preprocess([sample["image"].to(device)], m)
            outputs = model(batch)
            result = postprocess(outputs, model, m, sizes)[0]
            pred_depth = (
                result.depth.cpu().numpy() if (result.depth is not None and m.depth.enabled) else None
            )
            gt_depth = sample.get("depth")
            evaluator.update(
                result.panoptic.cpu().numpy(),
                pred_depth,
                sample["panoptic"].cpu().numpy(),
                gt_depth.cpu().numpy() if gt_depth is not None else None,
            )
    finally:
        model.train(was_training)
    return evaluator.summary()


class Trainer:
    """Trains `cfg` into `output_dir`. Every piece can be injected (tests use a tiny stand-in)."""

    def __init__(
        self,
        cfg: Config,
        output_dir: str | os.PathLike,
        *,
        model: nn.Module | None = None,
        criterion: Criterion | None = None,
        train_dataset: Any = None,
        val_dataset: Any = None,
        weights: str | os.PathLike | None = None,
        resume: bool = False,
        dist_info: DistInfo | None = None,
    ):
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.info = dist_info or DistInfo()
        self.criterion = criterion or default_criterion
        self.weights = weights
        self.resume = resume
        self._train_dataset = train_dataset
        self._val_dataset = val_dataset
        self._val_failed = False
        self.checkpointer = Checkpointer(self.output_dir, cfg.train.keep_checkpoints)
        world = self.info.world_size
        if cfg.solver.ims_per_batch % world != 0:
            raise ConfigError(
                f"solver.ims_per_batch={cfg.solver.ims_per_batch} is not divisible by the {world} processes"
            )
        self.per_rank_batch = cfg.solver.ims_per_batch // world
        # Same initial weights on every rank (DDP also broadcasts rank 0's at wrap time).
        seed_all(cfg.train.seed)
        if model is None:
            from ..modeling import build_model

            model = build_model(cfg.model)
        if weights is not None:
            load_model_weights(model, weights, allow_missing=DEPTH_MODULE_PREFIXES)
            log.info("initialised from %s", weights)
        model = convert_sync_batchnorm(model, cfg.model.backbone.norm, self.info)
        self.model = model.to(self.info.device)
        self.model.train()
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.solver)
        self.scaler = build_grad_scaler(cfg.solver.amp, self.info.device)
        self.loss_module = wrap_ddp(
            LossModule(self.model, self.criterion, cfg, self.info.device),
            self.info,
            cfg.train.find_unused_parameters,
        )
        self.start_iter = 0
        self.stop_signals = StopSignals()  # replaced by an installed one while train() runs
        self.last_checkpoint: Path | None = None
        # Per-rank randomness (if any piece draws random numbers) differs between ranks.
        seed_all(cfg.train.seed + 1000 * self.info.rank + 1)
        if resume:
            self._resume()

    # ----------------------------------------------------------------------------------- set-up
    def _resume(self) -> None:
        ckpt = self.checkpointer.latest()
        if ckpt is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", self.checkpointer.dir)
            return
        state, ckpt = self._load_readable_checkpoint(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_iter = int(state["iteration"])
        rng = state.get("rng") or []
        if state.get("world_size") == self.info.world_size and self.info.rank < len(rng):
            set_rng_state(rng[self.info.rank])
        else:
            log.warning(
                "checkpoint was written by %s process(es): RNG states not restored", state.get("world_size")
            )
        self.last_checkpoint = ckpt
        log.info("resumed from %s at iteration %d", ckpt, self.start_iter)

    def _load_readable_checkpoint(self, newest: Path) -> tuple[dict, Path]:
        """Training state of `newest`, its weights loaded; an unreadable one falls back to the
        previous checkpoint with a warning naming the bad file."""
        older = [p for p in reversed(self.checkpointer.checkpoints()) if p.name < newest.name]
        first_error = None
        for ckpt in [newest, *older]:
            try:
                state = Checkpointer.load_state(ckpt)
                load_model_weights(self.model, ckpt)
                return state, ckpt
            except CheckpointError as err:
                first_error = first_error or err
                log.warning("--resume: %s; trying the previous checkpoint", err)
        raise CheckpointError(
            f"{first_error}; no older readable checkpoint in {self.checkpointer.dir} "
            "(delete it and start again with --overwrite)"
        )

    def _train_dataset_obj(self) -> Any:
        if self._train_dataset is None:
            from ..data.build import build_dataset

            self._train_dataset = build_dataset(self.cfg.data, self.cfg.data.train_split, train=True)
        return self._train_dataset

    def build_loader(self, start_iter: int) -> torch.utils.data.DataLoader:
        """Infinite, seeded, rank-sharded loader positioned at batch `start_iter`."""
        dataset = self._train_dataset_obj()
        sampler = InfiniteShardedBatchSampler(
            len(dataset),
            self.per_rank_batch,
            seed=self.cfg.train.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start_batch=start_iter,
        )
        g = torch.Generator()
        g.manual_seed(self.cfg.train.seed)
        workers = self.cfg.data.num_workers
        return torch.utils.data.DataLoader(
            EpochIndexedDataset(dataset),
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=list,
            generator=g,
            pin_memory=self.info.device.type == "cuda",
            prefetch_factor=2 if workers > 0 else None,
        )

    def _val_dataset_obj(self) -> Any:
        if self._val_dataset is None and not self._val_failed:
            from ..data.build import build_dataset

            try:
                self._val_dataset = build_dataset(self.cfg.data, self.cfg.data.val_split, train=False)
            except PanopticDepthError as err:
                log.warning("periodic evaluation disabled: %s", err)
                self._val_failed = True
        return self._val_dataset

    def _training_state(self, iteration: int) -> dict:
        rng = [rng_state()]
        if self.info.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        return {
            "iteration": iteration,
            "sampler_batches": iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "world_size": self.info.world_size,
        }

    def save_checkpoint(self, iteration: int) -> None:
        """Collective (RNG states are gathered), rank 0 writes."""
        state = self._training_state(iteration)
        if self.info.is_main:
            self.last_checkpoint = self.checkpointer.save(iteration, self.model, self.cfg, state)
        barrier(self.info)

    def _run_eval(self, iteration: int, writer: Any) -> dict | None:
        summary = None
        if self.info.is_main:
            dataset = self._val_dataset_obj()
            if dataset is not None:
                try:
                    summary = evaluate_model(self.model, self.cfg, dataset, self.cfg.train.eval_max_images)
                except ImportError as err:
                    log.warning("periodic evaluation skipped (%s)", err)
                    self._val_failed = True
                except Exception:  # noqa: BLE001 - a failing evaluation must not lose the training run
                    log.exception("periodic evaluation at iteration %d failed; training continues", iteration)
            if summary is not None:
                flat = _flatten_numbers({k: v for k, v in summary.items() if k != "classes"})
                with open(self.output_dir / "eval_metrics.jsonl", "a") as f:
                    f.write(json.dumps({"iteration": iteration, **flat}) + "\n")
                if writer is not None:
                    for k, v in flat.items():
                        writer.add_scalar(f"eval/{k}", v, iteration)
                pq = summary.get("pq", {}).get("pq")
                dpq = summary.get("dpq", {}).get("mean", {}).get("dpq")
                log.info("iteration %d: val PQ %s, DPQ %s", iteration, pq, dpq)
        barrier(self.info)
        return summary

    def _prepare_metrics_files(self) -> Path:
        """Drop lines past the resume point (a killed run may have logged beyond its checkpoint)."""
        for name in ("metrics.jsonl", "eval_metrics.jsonl"):
            path = self.output_dir / name
            if path.is_file():
                keep = []
                for line in path.read_text().splitlines():
                    try:
                        if json.loads(line).get("iteration", 0) <= self.start_iter:
                            keep.append(line)
                    except ValueError:
                        continue
                atomic_write_text(path, "".join(k + "\n" for k in keep))
        return self.output_dir / "metrics.jsonl"

    # ------------------------------------------------------------------------------------- loop
    def train(self) -> TrainResult:
        cfg = self.cfg
        tcfg = cfg.train
        max_iter = cfg.solver.max_iter
        t_start = time.monotonic()
        writer = None
        metrics_path = self.output_dir / "metrics.jsonl"
        if self.info.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")
            metrics_path = self._prepare_metrics_files()
            if tcfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.output_dir / "tensorboard"))
        barrier(self.info)
        if self.start_iter >= max_iter:
            log.info("nothing to do: iteration %d >= solver.max_iter %d", self.start_iter, max_iter)
            data_iter = iter(())
        else:
            data_iter = iter(self.build_loader(self.start_iter))
        from ..modeling.preprocess import preprocess

        bar_kwargs: dict[str, Any] = {} if self.info.is_main else {"disable": True}
        bar = progress(total=max_iter, initial=self.start_iter, desc="train", **bar_kwargs)
        last: dict[str, float] = {}
        reason = "completed"
        iteration = self.start_iter
        metrics_file = open(metrics_path, "a") if self.info.is_main else None  # noqa: SIM115
        self.stop_signals = StopSignals().install()
        try:
            for it in range(self.start_iter, max_iter):
                t0 = time.perf_counter()
                samples = samples_to(next(data_iter), self.info.device)
                t_data = time.perf_counter() - t0
                lr = self.optimizer.param_groups[0]["lr"]
                images = [s["image"] for s in samples]
                batch, _sizes = preprocess(images, cfg.model)
                padded = (int(batch.shape[-2]), int(batch.shape[-1]))
                losses = self.loss_module(batch, samples, padded)
                names = sorted(losses)
                total = sum(losses[k] for k in names)
                # One small collective per iteration: loss values (for logging), NaN and stop flags.
                values = torch.stack(
                    [losses[k].detach().float().reshape(()) for k in names] + [total.detach().float()]
                )
                local_bad = 0.0 if bool(torch.isfinite(values).all()) else 1.0
                over_budget = tcfg.max_minutes > 0 and (time.monotonic() - t_start) > tcfg.max_minutes * 60
                # stop flag: 1 = time budget (main rank), +2 per rank that got SIGTERM / SIGINT
                stop = (1.0 if over_budget and self.info.is_main else 0.0) + (
                    2.0 if self.stop_signals.requested else 0.0
                )
                vec = torch.cat([values.cpu(), torch.tensor([local_bad, stop])])
                vec = all_reduce_sum(vec, self.info)
                if vec[-2] > 0:
                    self._diverged(losses, names, it + 1)
                if self.scaler is None:
                    total.backward()
                else:  # fp16 on CUDA: unscale before clipping by value
                    self.scaler.scale(total).backward()
                    self.scaler.unscale_(self.optimizer)
                clip_gradients(self.model.parameters(), cfg.solver.clip_value)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                iteration = it + 1
                avg = (vec[:-2] / self.info.world_size).tolist()
                last = {k: avg[i] for i, k in enumerate(names)}
                last["total_loss"] = avg[-1]
                bar.update(1)
                bar.set_postfix(loss=f"{last['total_loss']:.3f}", lr=f"{lr:.2e}")
                if self.info.is_main and (
                    iteration % max(tcfg.log_period, 1) == 0 or it == 0 or iteration == max_iter
                ):
                    dt = time.perf_counter() - t0
                    rec = {"iteration": iteration, "lr": lr, "total_loss": last["total_loss"]}
                    rec.update({k: last[k] for k in names})
                    rec.update({"time": dt, "data_time": t_data, "eta_seconds": dt * (max_iter - iteration)})
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                    if writer is not None:
                        for k in ["total_loss", *names]:
                            writer.add_scalar(f"train/{k}", last[k], iteration)
                        writer.add_scalar("train/lr", lr, iteration)
                    # The bar is off outside a terminal: the log line is the progress report there.
                    log.info(
                        "iter %d/%d  total_loss %.4f  lr %.3e  %.2f s/it  eta %s",
                        iteration, max_iter, last["total_loss"], lr, dt,
                        time.strftime("%H:%M:%S", time.gmtime(rec["eta_seconds"])),
                    )  # fmt: skip
                stopping = vec[-1] > 0
                if vec[-1] >= 2:  # every rank agrees, whichever got the signal
                    reason = "interrupted"
                    break
                if stopping:
                    reason = "time_budget"
                    log.info(
                        "train.max_minutes=%s reached at iteration %d: stopping", tcfg.max_minutes, iteration
                    )
                    break
                if (
                    tcfg.checkpoint_period > 0
                    and iteration % tcfg.checkpoint_period == 0
                    and iteration < max_iter
                ):
                    self.save_checkpoint(iteration)
                if tcfg.eval_period > 0 and iteration % tcfg.eval_period == 0 and iteration < max_iter:
                    self._run_eval(iteration, writer)
        finally:
            self.stop_signals.restore()
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
        final_dir = None
        if reason == "interrupted":  # checkpoint only: the run is not finished, --resume continues it
            self.save_checkpoint(iteration)
        elif self.start_iter < max_iter or not (self.output_dir / "model").is_dir():
            self.save_checkpoint(iteration)
            if self.info.is_main:
                final_dir = self.checkpointer.save_final(self.model, cfg)
            barrier(self.info)
            if tcfg.eval_period > 0 and iteration > self.start_iter:
                self._run_eval(iteration, writer)
        else:
            final_dir = self.output_dir / "model"
        if writer is not None:
            writer.close()
        elapsed = time.monotonic() - t_start
        log.info("training %s at iteration %d after %.1f min", reason, iteration, elapsed / 60)
        return TrainResult(iteration=iteration, reason=reason, final_dir=final_dir, last_losses=last)

    def _diverged(self, losses: dict[str, torch.Tensor], names: list[str], iteration: int) -> None:
        bad = [k for k in names if not bool(torch.isfinite(losses[k].detach()).all())]
        what = ", ".join(f"'{k}' = {float(losses[k].detach().float().reshape(-1)[0])}" for k in bad)
        if not what:
            what = "a loss term on another process"
        ckpt = str(self.last_checkpoint) if self.last_checkpoint is not None else "none written yet"
        raise TrainingDiverged(
            f"loss {what} is not finite at iteration {iteration}; training stopped. "
            f"Last good checkpoint: {ckpt}"
        )
