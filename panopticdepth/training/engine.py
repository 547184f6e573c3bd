"""The training loop: samples -> preprocess -> network -> targets -> losses -> Adam step.

One `Trainer` serves a single process and every rank of a `torchrun` job. It writes the resolved
`config.yaml`, `metrics.jsonl` (one JSON object per logged iteration, the original's loss names),
TensorBoard scalars, resumable checkpoints and the final `model/` directory into the output folder.
An optimizer step runs `solver.accumulation_steps` micro-batches, then one collective carries the
loss values and the NaN and stop flags; that is the step's only wait for the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, ConfigError, save_config
from ..config.labels import apply_label_space, configured_label_space
from ..errors import PanopticDepthError
from ..label_space import LabelSpace
from ..modeling.kernel_projection import KernelProjection, kernel_projection_of
from ..utils.files import atomic_write_text
from ..utils.progress import progress
from .backends import configure_backends
from .checkpointer import (
    DEPTH_MODULE_PREFIXES,
    Checkpointer,
    load_model_state,
    load_model_weights,
    rng_state,
    set_rng_state,
)
from .distributed import (
    DistInfo,
    EpochIndexedDataset,
    MicroBatchSampler,
    all_gather_object,
    all_reduce_sum,
    barrier,
    convert_sync_batchnorm,
    select_device,
    wrap_ddp,
)
from .memory_format import apply_channels_last, batch_memory_format
from .periodic_eval import evaluate_model
from .resume import agree_on_checkpoint
from .solver import autocast_context, build_grad_scaler, build_lr_scheduler, build_optimizer, clip_gradients
from .stop_signals import StopSignals

log = logging.getLogger(__name__)

# (samples, head outputs, padded (Hp, Wp), kernel projection, config) -> {loss name: scalar tensor}
Criterion = Callable[[list[dict], Any, tuple[int, int], KernelProjection, Config], dict[str, torch.Tensor]]


class TrainingDiverged(PanopticDepthError):
    """A loss term became NaN or infinite; the message names the term and the iteration."""


@dataclass
class TrainResult:
    iteration: int  # completed optimizer steps
    reason: str  # "completed" | "time_budget"
    final_dir: Path | None
    last_losses: dict[str, float]


def default_criterion(
    samples: list[dict],
    outputs: Any,
    padded_size: tuple[int, int],
    projection: KernelProjection | nn.Module,
    cfg: Config,
) -> dict[str, torch.Tensor]:
    """Targets from the batch's Samples (`build_targets`), then the loss dict (`compute_losses`).

    `projection` is the network's `kernel_projection` (a network is accepted and gives its own).
    """
    from .losses import compute_losses
    from .targets import build_targets

    targets = build_targets(samples, outputs, padded_size, cfg)
    return compute_losses(outputs, targets, kernel_projection_of(projection), cfg)


def _to_float(obj: Any) -> Any:
    """Cast the floating tensors of (nested dataclass) outputs to float32 after autocast, in the
    plain (NCHW) layout: the losses flatten and mix the maps with NCHW targets, which copies or
    slows down channels_last inputs (`train.channels_last`); one cast does both, same values."""
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point():
            return obj
        return obj.to(torch.float32, memory_format=torch.contiguous_format)
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
    """Network + criterion in one forward, so DDP sees every parameter use (the criterion applies
    the network's `kernel_projection` inside this forward) and reduces their gradients in the same
    backward."""

    def __init__(self, model: nn.Module, criterion: Criterion, cfg: Config, device: torch.device):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.cfg = cfg
        self.device = device

    def forward(
        self, batch_b3hw: torch.Tensor, samples: list[dict], padded_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        batch_b3hw = batch_memory_format(batch_b3hw, self.cfg.train.channels_last)
        with autocast_context(self.cfg.solver.amp, self.device):
            outputs = self.model(batch_b3hw)
        if self.cfg.solver.amp.lower() not in ("none", "", "fp32"):
            outputs = _to_float(outputs)
        # None for a network without kernel projections (a custom criterion's stand-in network).
        projection = getattr(self.model, "kernel_projection", None)
        return self.criterion(samples, outputs, padded_size, projection, self.cfg)


def samples_to(samples: list[dict], device: torch.device) -> list[dict]:
    """Sample tensors on the training device (`.to` returns the tensor itself when it is there)."""
    # Pinned host memory (the loader pins on CUDA) lets these copies overlap with the GPU's work.
    return [
        {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
        for s in samples
    ]


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


@dataclass
class StepStats:
    """Host copies of one optimizer step's reduced values (read once, after the collective)."""

    losses: dict[str, float]  # mean over micro-batches and ranks, plus "total_loss"
    diverged: bool
    stop: float  # 0 = go on; 1 = time budget (main rank); >= 2: a rank got SIGTERM / SIGINT
    data_time: float  # seconds spent waiting for the loader


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
        self.info = dist_info or DistInfo(device=select_device(cfg.train.device))
        self.criterion = criterion or default_criterion
        self.weights = weights
        self._train_dataset = train_dataset
        self._val_dataset = val_dataset
        self._val_failed = False
        self.checkpointer = Checkpointer(self.output_dir, cfg.train.keep_checkpoints)
        self.accumulation_steps, self.micro_batch = split_batch(cfg, self.info.world_size)
        configure_backends(cfg.train, self.info.device)
        self.label_space = self._settle_label_space()
        # Same initial weights on every rank (DDP also broadcasts rank 0's at wrap time).
        seed_all(cfg.train.seed)
        self.model = self._build_model(model, weights)
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
        # Called with the iteration number after every optimizer step. A hook may change
        # cfg.solver.max_iter (the loop and the LR schedule read it live), e.g. to re-plan the run
        # for a time budget; with several processes it must decide the same on every rank.
        self.step_hooks: list[Callable[[int], None]] = []
        self.last_checkpoint: Path | None = None
        # Per-rank randomness (if any piece draws random numbers) differs between ranks.
        seed_all(cfg.train.seed + 1000 * self.info.rank + 1)
        if resume:
            self._resume()

    # ----------------------------------------------------------------------------------- set-up
    def _settle_label_space(self) -> LabelSpace:
        """Train in the config's label space when it names one (a resumed run, a model folder's
        config), else in the training data's own; the two must agree. The model's class counts
        and the `labels` section written to config.yaml follow from it (docs/label_spaces.md)."""
        from ..data.build import check_label_space, dataset_label_space

        configured = configured_label_space(self.cfg.labels, "config")
        data_space = getattr(self._train_dataset, "label_space", None) or dataset_label_space(self.cfg.data)
        if configured is not None:
            check_label_space(configured, data_space, "config 'labels'", self.cfg.data)
        space = configured or data_space
        apply_label_space(self.cfg, space)
        log.info("label space %s", space.describe())
        return space

    def _build_model(self, model: nn.Module | None, weights: str | os.PathLike | None) -> nn.Module:
        if model is None:
            from ..modeling import build_model

            model = build_model(self.cfg.model)
        if weights is not None:
            load_model_weights(model, weights, allow_missing=DEPTH_MODULE_PREFIXES)
            log.info("initialised from %s", weights)
        model = convert_sync_batchnorm(model, self.cfg.model.backbone.norm, self.info)
        model = model.to(self.info.device)
        model = apply_channels_last(model, self.cfg.train.channels_last)
        model.train()
        return model

    def _resume(self) -> None:
        point = agree_on_checkpoint(self.checkpointer, self.info)
        if point is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", self.checkpointer.dir)
            return
        source = str(self.checkpointer.dir / point.name)
        load_model_state(self.model, point.weights, source)
        state = point.state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_iter = int(state["iteration"])
        rng = state.get("rng") or []
        same_split = (
            state.get("world_size") == self.info.world_size
            and state.get("accumulation_steps", 1) == self.accumulation_steps
        )
        if same_split and self.info.rank < len(rng):
            set_rng_state(rng[self.info.rank], self.info.device)
        else:
            log.warning(
                "checkpoint was written by %s process(es): RNG states not restored", state.get("world_size")
            )
        self.last_checkpoint = self.checkpointer.dir / point.name
        log.info("resumed from %s at iteration %d", source, self.start_iter)

    def _train_dataset_obj(self) -> Any:
        if self._train_dataset is None:
            from ..data.build import build_dataset

            self._train_dataset = build_dataset(self.cfg.data, self.cfg.data.train_split, train=True)
        return self._train_dataset

    def build_loader(self, start_iter: int) -> torch.utils.data.DataLoader:
        """Infinite, seeded, rank-sharded loader of micro-batches, positioned at step `start_iter`."""
        dataset = self._train_dataset_obj()
        sampler = MicroBatchSampler(
            len(dataset),
            self.micro_batch,
            seed=self.cfg.train.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
            accumulation_steps=self.accumulation_steps,
            start_iteration=start_iter,
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
            persistent_workers=workers > 0,
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
        return {
            "iteration": iteration,
            "sampler_batches": iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": all_gather_object(rng_state(self.info.device), self.info),
            "world_size": self.info.world_size,
            "accumulation_steps": self.accumulation_steps,
        }

    def save_checkpoint(self, iteration: int) -> None:
        """Collective (RNG states are gathered), rank 0 writes."""
        state = self._training_state(iteration)
        if self.info.is_main:
            self.last_checkpoint = self.checkpointer.save(iteration, self.model, self.cfg, state)
        barrier(self.info)

    def _run_eval(self, iteration: int, writer: Any) -> dict | None:
        """Collective: sharded evaluation; rank 0 records the merged summary."""
        dataset = self._val_dataset_obj()
        have = torch.tensor([0.0 if dataset is None else 1.0], device=self.info.device)
        if float(all_reduce_sum(have, self.info).item()) < self.info.world_size:
            return None
        summary = evaluate_model(self.model, self.cfg, dataset, self.cfg.train.eval_max_images, self.info)
        if summary is None:
            log.warning("periodic evaluation at iteration %d failed; training continues", iteration)
        elif self.info.is_main:
            self._record_eval(iteration, summary, writer)
        return summary

    def _record_eval(self, iteration: int, summary: dict, writer: Any) -> None:
        flat = _flatten_numbers({k: v for k, v in summary.items() if k != "classes"})
        with open(self.output_dir / "eval_metrics.jsonl", "a") as f:
            f.write(json.dumps({"iteration": iteration, **flat}) + "\n")
        if writer is not None:
            for k, v in flat.items():
                writer.add_scalar(f"eval/{k}", v, iteration)
        pq = summary.get("pq", {}).get("pq")
        dpq = summary.get("dpq", {}).get("mean", {}).get("dpq")
        log.info("iteration %d: val PQ %s, DPQ %s", iteration, pq, dpq)

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

    def _open_outputs(self) -> tuple[Any, Any]:
        """Rank 0: config.yaml, the metrics file (append) and the TensorBoard writer."""
        if not self.info.is_main:
            return None, None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.output_dir / "config.yaml")
        metrics_file = open(self._prepare_metrics_files(), "a")  # noqa: SIM115 - closed by train()
        writer = None
        if self.cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.output_dir / "tensorboard"))
        return metrics_file, writer

    def _log_banner(self) -> None:
        if self.info.is_main:
            log.info(
                "effective batch %d = %d process(es) x %d accumulation step(s) x %d image(s) per micro-batch",
                self.cfg.solver.ims_per_batch, self.info.world_size, self.accumulation_steps,
                self.micro_batch,
            )  # fmt: skip

    # ------------------------------------------------------------------------------------- step
    def _forward_backward(self, samples: list[dict], sync: bool) -> tuple[list[str], torch.Tensor]:
        """One micro-batch: losses and their backward (DDP reduces gradients only when `sync`)."""
        from ..modeling.preprocess import preprocess

        batch, _sizes = preprocess([s["image"] for s in samples], self.cfg.model)
        padded = (int(batch.shape[-2]), int(batch.shape[-1]))
        no_sync = getattr(self.loss_module, "no_sync", None)
        context = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with context:
            losses = self.loss_module(batch, samples, padded)
            names = sorted(losses)
            total = sum(losses[k] for k in names)
            scaled = total if self.accumulation_steps == 1 else total / self.accumulation_steps
            (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        values = torch.stack(
            [losses[k].detach().float().reshape(()) for k in names] + [total.detach().float()]
        )
        return names, values

    def _step(self, data_iter: Iterator, stop_code: Callable[[], float]) -> StepStats:
        """Accumulate the micro-batches, reduce the logged values and flags, update the weights."""
        steps = self.accumulation_steps
        names: list[str] = []
        summed = None
        data_time = 0.0
        for j in range(steps):
            t0 = time.perf_counter()
            samples = samples_to(next(data_iter), self.info.device)
            data_time += time.perf_counter() - t0
            names, values = self._forward_backward(samples, sync=j == steps - 1)
            summed = values if summed is None else summed + values
        device = self.info.device
        flags = torch.stack(
            [(~torch.isfinite(summed)).any().float(), torch.tensor(stop_code(), device=device)]
        )
        vec = all_reduce_sum(torch.cat([summed / steps, flags]), self.info)
        host = vec.tolist()  # the step's one device-to-host copy
        world = self.info.world_size
        losses = {k: host[i] / world for i, k in enumerate(names)}
        losses["total_loss"] = host[len(names)] / world
        stats = StepStats(losses, diverged=host[-2] > 0, stop=host[-1], data_time=data_time)
        if stats.diverged:
            return stats
        if self.scaler is not None:  # fp16 on CUDA: unscale before clipping by value
            self.scaler.unscale_(self.optimizer)
        clip_gradients(self.model.parameters(), self.cfg.solver.clip_value)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return stats

    # ------------------------------------------------------------------------------------- loop
    def train(self) -> TrainResult:
        """Steps until `solver.max_iter`, a time budget or a stop signal; then checkpoint and model."""
        t_start = time.monotonic()
        metrics_file, writer = self._open_outputs()
        barrier(self.info)
        self._log_banner()
        max_iter = self.cfg.solver.max_iter
        data_iter = iter(()) if self.start_iter >= max_iter else iter(self.build_loader(self.start_iter))
        bar_kwargs: dict[str, Any] = {} if self.info.is_main else {"disable": True}
        bar = progress(total=max_iter, initial=self.start_iter, desc="train", **bar_kwargs)
        last: dict[str, float] = {}
        reason = "completed"
        iteration = self.start_iter
        self.stop_signals = StopSignals().install()
        try:
            while iteration < self.cfg.solver.max_iter:
                t0 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                stats = self._step(data_iter, lambda: self._stop_code(t_start))
                if stats.diverged:
                    self._diverged(stats.losses, iteration + 1)
                iteration, last = iteration + 1, stats.losses
                self._report_step(iteration, lr, stats, time.perf_counter() - t0, bar, metrics_file, writer)
                reason = self._stop_reason(stats, iteration)
                if reason != "completed":
                    break
                if iteration < self.cfg.solver.max_iter:
                    self._periodic(iteration, writer)
        finally:
            self.stop_signals.restore()
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
        final_dir = self._finish(iteration, writer, reason)
        if writer is not None:
            writer.close()
        elapsed = time.monotonic() - t_start
        log.info("training %s at iteration %d after %.1f min", reason, iteration, elapsed / 60)
        return TrainResult(iteration=iteration, reason=reason, final_dir=final_dir, last_losses=last)

    def _report_step(
        self, iteration: int, lr: float, stats: StepStats, dt: float, bar: Any, metrics_file: Any, writer: Any
    ) -> None:
        """Step hooks (which may re-plan max_iter), the progress bar and the periodic log line."""
        for hook in self.step_hooks:
            hook(iteration)
        max_iter = self.cfg.solver.max_iter
        if bar.total != max_iter:
            bar.total = max_iter
        bar.update(1)
        bar.set_postfix(loss=f"{stats.losses['total_loss']:.3f}", lr=f"{lr:.2e}")
        period = max(self.cfg.train.log_period, 1)
        if metrics_file is not None and (iteration % period == 0 or iteration in (1, max_iter)):
            self._log_iteration(metrics_file, writer, iteration, lr, stats, dt)

    def _stop_reason(self, stats: StepStats, iteration: int) -> str:
        """ "interrupted" (a signal on any rank), "time_budget", or "completed" to go on."""
        if stats.stop >= 2:  # every rank agrees, whichever got the signal
            return "interrupted"
        if stats.stop > 0:
            log.info(
                "train.max_minutes=%s reached at iteration %d: stopping",
                self.cfg.train.max_minutes,
                iteration,
            )
            return "time_budget"
        return "completed"

    def _stop_code(self, t_start: float) -> float:
        """Read after a step's backward: 1 = time budget (main rank), +2 per rank that got SIGTERM
        or SIGINT (so a signal during a step stops after it)."""
        tcfg = self.cfg.train
        over = tcfg.max_minutes > 0 and (time.monotonic() - t_start) > tcfg.max_minutes * 60
        return (1.0 if over and self.info.is_main else 0.0) + (2.0 if self.stop_signals.requested else 0.0)

    def _periodic(self, iteration: int, writer: Any) -> None:
        tcfg = self.cfg.train
        if tcfg.checkpoint_period > 0 and iteration % tcfg.checkpoint_period == 0:
            self.save_checkpoint(iteration)
        if tcfg.eval_period > 0 and iteration % tcfg.eval_period == 0:
            self._run_eval(iteration, writer)

    def _finish(self, iteration: int, writer: Any, reason: str = "completed") -> Path | None:
        """Last checkpoint, the final model folder and a last evaluation (if anything was trained).

        An interrupted run writes its checkpoint only: it is not finished, `--resume` continues it.
        """
        if reason == "interrupted":
            self.save_checkpoint(iteration)
            return None
        if self.start_iter >= self.cfg.solver.max_iter and (self.output_dir / "model").is_dir():
            return self.output_dir / "model"
        final_dir = None
        self.save_checkpoint(iteration)
        if self.info.is_main:
            final_dir = self.checkpointer.save_final(self.model, self.cfg)
        barrier(self.info)
        if self.cfg.train.eval_period > 0 and iteration > self.start_iter:
            self._run_eval(iteration, writer)
        return final_dir

    def _log_iteration(
        self, metrics_file: Any, writer: Any, iteration: int, lr: float, stats: StepStats, dt: float
    ) -> None:
        max_iter = self.cfg.solver.max_iter
        last = stats.losses
        rec = {"iteration": iteration, "lr": lr, **last}
        rec.update({"time": dt, "data_time": stats.data_time, "eta_seconds": dt * (max_iter - iteration)})
        metrics_file.write(json.dumps(rec) + "\n")
        metrics_file.flush()
        if writer is not None:
            for k, v in last.items():
                writer.add_scalar(f"train/{k}", v, iteration)
            writer.add_scalar("train/lr", lr, iteration)
        # The bar is off outside a terminal: the log line is the progress report there.
        log.info(
            "iter %d/%d  total_loss %.4f  lr %.3e  %.2f s/it  eta %s",
            iteration, max_iter, last["total_loss"], lr, dt,
            time.strftime("%H:%M:%S", time.gmtime(rec["eta_seconds"])),
        )  # fmt: skip

    def _diverged(self, losses: dict[str, float], iteration: int) -> None:
        bad = [k for k, v in losses.items() if k != "total_loss" and not np.isfinite(v)]
        what = ", ".join(f"'{k}' = {losses[k]}" for k in bad) or "the total loss"
        ckpt = str(self.last_checkpoint) if self.last_checkpoint is not None else "none written yet"
        raise TrainingDiverged(
            f"loss {what} is not finite at iteration {iteration}; training stopped. "
            f"Last good checkpoint: {ckpt}"
        )


def split_batch(cfg: Config, world_size: int) -> tuple[int, int]:
    """(accumulation steps, images per micro-batch) for `solver.ims_per_batch` over `world_size`."""
    steps = int(cfg.solver.accumulation_steps)
    if steps < 1:
        raise ConfigError(f"solver.accumulation_steps must be >= 1, got {steps}")
    parts = world_size * steps
    if cfg.solver.ims_per_batch % parts != 0:
        raise ConfigError(
            f"solver.ims_per_batch={cfg.solver.ims_per_batch} is not divisible by {world_size} "
            f"process(es) x solver.accumulation_steps={steps}"
        )
    return steps, cfg.solver.ims_per_batch // parts
