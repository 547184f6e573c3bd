"""Seconds per training iteration and peak memory on the CPU (issue 6 benchmark).

Cases: the paper's R-50 DPS model (deformable convs, 256 channels) at 512x1024 with batch 1 and 2,
and the small CPU config (configs/synthetic/small_cpu.yaml) at its demo size. One iteration =
preprocess + forward + targets + losses + backward + value clipping + Adam step, exactly the
engine's step. Each case runs in a fresh process so that the peak resident memory is its own.

    OMP_NUM_THREADS=2 python benchmarks/train_step.py [--iters 3] [--threads 2] [--cases r50-b1 small]

Speed switches, side by side in one process (a shared machine's load then hits every variant alike;
the variants take turns, one step each, A B C A B C ...). A variant is `+`-joined switches: fp32 |
bf16 (solver.amp), cl (train.channels_last), fused (solver.fused_optimizer), dense (the depth loss
evaluated at every pixel with weights, the accelerator path, instead of only at the supervised ones):

    python benchmarks/train_step.py --compare fp32 bf16 bf16+cl bf16+cl+fused --iters 20

A variant `REV@switches` is the step of another commit of this repository (a temporary git worktree
at REV, in a child process that takes its turn like the others): the speed against the code of a
given day in the same run, e.g. the float32 step of the day issue 14 was filed against today's
bf16 step:

    python benchmarks/train_step.py --compare 740cb79@fp32 fp32 bf16+cl+fused --iters 20

`--keep-freed-memory` runs every variant (and every child process) with the heap settings that the
`panopticdepth` command applies at start (panopticdepth/utils/malloc.py), i.e. the step as the CLI
trains it.

Loss curve of the variants from one initialisation on one sequence of batches (the first variant
is the reference; a second float32 variant, e.g. fp32+cl, shows how far rounding alone moves it):

    python benchmarks/train_step.py --curve 300 --compare fp32 fp32+cl bf16+cl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    # name: (config file or None = defaults, overrides, height, width, batch)
    "r50-512x1024-b1": (None, [], 512, 1024, 1),
    "r50-512x1024-b2": (None, [], 512, 1024, 2),
    "small-128x256-b4": ("configs/synthetic/small_cpu.yaml", [], 128, 256, 4),
    "small-256x512-b4": ("configs/synthetic/small_cpu.yaml", [], 256, 512, 4),
    "demo-128x256-b4": ("configs/synthetic/demo_cpu.yaml", [], 128, 256, 4),
    "demo-frozen-128x256-b4": (
        "configs/synthetic/demo_cpu.yaml",
        ["model.backbone.freeze_at=5"],
        128,
        256,
        4,
    ),
}


def engine_step(cfg, samples: list[dict], seed: int = 0) -> Callable[[], None]:
    """One training step on `samples` the way the engine steps (preprocess, forward, targets,
    losses, backward, clipping by value, Adam, schedule), with a model built from `seed`.

    Uses only what every version of the package has had since the training engine, so that a
    child process running another commit's package (`serve`) builds its step with it too.
    """
    import torch

    from panopticdepth.modeling import build_model
    from panopticdepth.modeling.preprocess import preprocess
    from panopticdepth.training.engine import LossModule, default_criterion
    from panopticdepth.training.solver import build_lr_scheduler, build_optimizer, clip_gradients

    torch.manual_seed(seed)
    model = build_model(cfg.model)
    model.train()
    opt = build_optimizer(model, cfg.solver)
    sched = build_lr_scheduler(opt, cfg.solver)
    step_module = LossModule(model, default_criterion, cfg, torch.device("cpu"))

    def step() -> None:
        x, _ = preprocess([s["image"] for s in samples], cfg.model)
        losses = step_module(x, samples, (int(x.shape[-2]), int(x.shape[-1])))
        sum(losses.values()).backward()
        clip_gradients(model.parameters(), cfg.solver.clip_value)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    return step


def run_case(name: str, iters: int, threads: int) -> dict:
    import torch

    from panopticdepth.config import load_config
    from panopticdepth.data.sample import make_sample
    from panopticdepth.data.synthetic.writer import generate

    torch.set_num_threads(threads)
    cfg_file, overrides, h, w, batch = CASES[name]
    cfg = load_config(REPO / cfg_file if cfg_file else None, [*overrides, "model.backbone.pretrained="])
    frames = [generate(0, i, h, w) for i in range(batch)]
    samples = [
        make_sample(f.image, f.panoptic.astype("int64"), f.depth, {"image_id": str(i)})
        for i, f in enumerate(frames)
    ]
    step = engine_step(cfg, samples)
    step()  # warm-up (allocator, first-call overheads)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sec = (time.perf_counter() - t0) / iters
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": name, "batch": batch, "size": f"{h}x{w}", "sec_per_iter": sec, "peak_rss_mb": peak_mb}


SWITCHES = {
    "fp32": "solver.amp=none",
    "bf16": "solver.amp=bf16",
    "cl": "train.channels_last=true",
    "fused": "solver.fused_optimizer=true",
    "dense": "",  # the depth loss on every pixel, as on an accelerator (not a config key)
}


def variant_overrides(variant: str) -> list[str]:
    """Config overrides of a `+`-joined variant name such as `bf16+cl`."""
    parts = variant.split("+")
    unknown = [p for p in parts if p not in SWITCHES]
    if unknown:
        raise SystemExit(f"unknown switch {unknown[0]!r} in {variant!r} (known: {', '.join(SWITCHES)})")
    return [SWITCHES[p] for p in parts if SWITCHES[p]]


class Variant:
    """One training set-up: its own network (same seed for all), optimizer and LR schedule."""

    def __init__(self, name: str, case: str, seed: int = 0):
        import torch

        from panopticdepth.config import load_config
        from panopticdepth.modeling import build_model
        from panopticdepth.training.engine import LossModule, default_criterion
        from panopticdepth.training.memory_format import apply_channels_last
        from panopticdepth.training.solver import build_lr_scheduler, build_optimizer

        cfg_file, overrides, _h, _w, _batch = CASES[case]
        self.name = name
        self.cfg = load_config(
            REPO / cfg_file if cfg_file else None,
            [*overrides, *variant_overrides(name), "model.backbone.pretrained="],
        )
        torch.manual_seed(seed)
        self.model = apply_channels_last(build_model(self.cfg.model), self.cfg.train.channels_last)
        self.model.train()
        self.opt = build_optimizer(self.model, self.cfg.solver)
        self.sched = build_lr_scheduler(self.opt, self.cfg.solver)
        self.step_module = LossModule(self.model, default_criterion, self.cfg, torch.device("cpu"))
        self.compact_devices = () if "dense" in name.split("+") else ("cpu",)

    def step(self, samples: list[dict]) -> float:
        """One engine step on `samples`; returns the total loss."""
        from panopticdepth.modeling.preprocess import preprocess
        from panopticdepth.training import losses as loss_module
        from panopticdepth.training.solver import clip_gradients

        loss_module.COMPACT_DEPTH_DEVICES = self.compact_devices

        x, _ = preprocess([s["image"] for s in samples], self.cfg.model)
        losses = self.step_module(x, samples, (int(x.shape[-2]), int(x.shape[-1])))
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        total = sum(losses.values())
        total.backward()
        clip_gradients(self.model.parameters(), self.cfg.solver.clip_value)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return float(total.detach())

    def timed_step(self, samples: list[dict]) -> tuple[float, float]:
        """(wall s, process CPU s) of one step."""
        t0, c0 = time.perf_counter(), time.process_time()
        self.step(samples)
        return time.perf_counter() - t0, time.process_time() - c0

    def close(self) -> None:
        pass


class OtherCommitVariant:
    """`REV@switches`: the training step of commit REV, built by that commit's own code in a child
    process (a detached git worktree); each `timed_step` asks the child for one step on the same
    frames, so it takes its turn with the in-process variants while they wait, and vice versa.

    The child uses only what every version of the package has had since the training engine
    (`load_config`, `build_model`, `preprocess`, `LossModule`, `default_criterion`, the solver's
    builders and `clip_gradients`), the way the engine steps.
    """

    def __init__(self, name: str, case: str, threads: int, frames_npz: Path, seed: int = 0):
        self.name = name
        rev, _, switches = name.partition("@")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"train_step_{rev}_"))
        self.tree = self.tmp / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(self.tree), rev],
            check=True,
        )
        env = {**os.environ, "PYTHONPATH": str(self.tree)}
        cmd = [sys.executable, __file__, "--serve", json.dumps(CASES[case]), "--variant", switches or "fp32"]
        cmd += ["--repo", str(self.tree), "--frames", str(frames_npz)]
        cmd += ["--threads", str(threads), "--seed", str(seed)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            self.close()
            raise SystemExit(f"{name}: the child process of commit {rev} did not start ({ready.strip()!r})")
        self.package = ready.split(maxsplit=1)[1].strip()

    def timed_step(self, samples: list[dict]) -> tuple[float, float]:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return reply["wall"], reply["cpu"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(self.tree)], check=False)
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)


def serve(case: list, variant: str, repo: Path, frames_npz: Path, threads: int, seed: int) -> None:
    """Child side of `OtherCommitVariant`: build the step with the package on PYTHONPATH (the other
    commit's), print `ready PATH`, then one JSON line of timings per `step` line on stdin."""
    import numpy as np
    import torch

    import panopticdepth
    from panopticdepth.config import load_config
    from panopticdepth.data.sample import make_sample

    torch.set_num_threads(threads)
    cfg_file, overrides, _h, _w, _batch = case
    cfg = load_config(
        repo / cfg_file if cfg_file else None,
        [*overrides, *variant_overrides(variant), "model.backbone.pretrained="],
    )
    data = np.load(frames_npz)
    samples = [
        make_sample(data[f"image{i}"], data[f"panoptic{i}"], data[f"depth{i}"], {"image_id": str(i)})
        for i in range(int(data["count"]))
    ]
    step = engine_step(cfg, samples, seed)
    print(f"ready {Path(panopticdepth.__file__).parent}", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}), flush=True)


def make_samples(h: int, w: int, indices: list[int], save_npz: Path | None = None) -> list[dict]:
    """Synthetic frames `indices` (seed 0) as training Samples (`save_npz`: also the raw frames,
    for another commit's child process to build its own Samples from)."""
    import numpy as np

    from panopticdepth.data.sample import make_sample
    from panopticdepth.data.synthetic.writer import generate

    out, raw = [], {"count": np.array(len(indices))}
    for k, i in enumerate(indices):
        f = generate(0, i, h, w)
        raw.update({f"image{k}": f.image, f"panoptic{k}": f.panoptic.astype("int64"), f"depth{k}": f.depth})
        out.append(make_sample(f.image, f.panoptic.astype("int64"), f.depth, {"image_id": str(i)}))
    if save_npz is not None:
        np.savez(save_npz, **raw)
    return out


def compare(case: str, names: list[str], iters: int, threads: int) -> None:
    """s/iter of each variant, measured in turns (one step each per round) after one warm-up step."""
    import torch

    torch.set_num_threads(threads)
    _f, _o, h, w, batch = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.npz"
        samples = make_samples(h, w, list(range(batch)), save_npz=frames)
        variants: list = []
        try:
            for n in names:
                other = "@" in n
                variants.append(OtherCommitVariant(n, case, threads, frames) if other else Variant(n, case))
            _timed_rounds(case, variants, samples, iters, threads)
        finally:
            for v in variants:
                v.close()


def _timed_rounds(case: str, variants: list, samples: list[dict], iters: int, threads: int) -> None:
    names = [v.name for v in variants]
    for v in variants:
        v.timed_step(samples)  # warm-up (allocator, oneDNN primitive caches)
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(iters):
        for v in variants:
            wall, cpu_s = v.timed_step(samples)
            times[v.name].append(wall)
            cpu[v.name].append(cpu_s)
    load1 = os.getloadavg()
    print(f"{case}, {threads} threads, {iters} steps per variant in turns; load average (1/5/15 min)")
    print(
        "  before " + " ".join(f"{x:.2f}" for x in load0) + ", after " + " ".join(f"{x:.2f}" for x in load1)
    )
    base = statistics.median(times[names[0]])
    cpu_base = statistics.median(cpu[names[0]])
    # CPU s = the process's CPU time per step (all threads): with one thread it hardly depends on
    # the other jobs of a shared machine; with two it includes time spent spinning in waits.
    cols = ("median s", 9), ("min s", 7), ("mean s", 7), ("vs first", 9), ("CPU s", 7), ("vs first", 9)
    for v in variants:
        if isinstance(v, OtherCommitVariant):
            print(f"  {v.name}: the package at {v.package}")
    print(f"{'variant':<18}" + "".join(f" {c:>{wd}}" for c, wd in cols))
    for n in names:
        t, c = times[n], statistics.median(cpu[n])
        med = statistics.median(t)
        print(
            f"{n:<18} {med:>9.3f} {min(t):>7.3f} {statistics.mean(t):>7.3f} {med / base:>8.2f}x"
            f" {c:>7.3f} {c / cpu_base:>8.2f}x"
        )


def curve(
    case: str,
    names: list[str],
    iters: int,
    threads: int,
    every: int,
    pool: int,
    seed: int = 0,
    dump: str = "",
) -> None:
    """Train every variant from the same initial weights on the same batches; print the mean
    total loss of each window of `every` steps and its relative difference to the first variant
    (`dump`: also every step's loss terms per variant, as JSON)."""
    import random

    import torch

    torch.set_num_threads(threads)
    _f, _o, h, w, batch = CASES[case]
    variants = [Variant(n, case, seed) for n in names]
    frames = make_samples(h, w, list(range(seed * pool, (seed + 1) * pool)))
    order = random.Random(seed)
    losses: dict[str, list[float]] = {v.name: [] for v in variants}
    seconds: dict[str, float] = {v.name: 0.0 for v in variants}
    terms: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    print(f"{case}, {iters} steps, batches of {batch} from {pool} synthetic frames, {threads} threads")
    print(f"mean total loss per window of {every} steps; d = relative difference to {names[0]}")
    head = f"{'steps':>9} " + " ".join(f"{n:>14}" for n in names)
    print(head + " " + " ".join(f"{'d ' + n:>16}" for n in names[1:]), flush=True)
    load0 = os.getloadavg()
    for it in range(iters):
        samples = order.sample(frames, batch)
        for v in variants:
            t0 = time.perf_counter()
            losses[v.name].append(v.step(samples))
            seconds[v.name] += time.perf_counter() - t0
            terms[v.name].append(v.last_losses)
        if (it + 1) % every == 0 or it + 1 == iters:  # one row per finished window, as it ends
            start = it // every * every
            means = [statistics.mean(losses[n][start:]) for n in names]
            row = f"{start + 1:>4}-{it + 1:<4} " + " ".join(f"{m:>14.3f}" for m in means)
            print(row + " " + " ".join(f"{(m - means[0]) / means[0]:>+15.1%}" for m in means[1:]), flush=True)
    load1 = os.getloadavg()
    print(f"load average (1 min) before {load0[0]:.2f}, after {load1[0]:.2f}")
    print("s/iter: " + ", ".join(f"{n} {seconds[n] / iters:.3f}" for n in names))
    if dump:
        from panopticdepth.utils.files import atomic_write_text

        atomic_write_text(Path(dump), json.dumps({"case": case, "seed": seed, "steps": terms}) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--compare", nargs="*", help="variants to time side by side (fp32, bf16+cl, ...)")
    p.add_argument(
        "--case", default="small-128x256-b4", choices=list(CASES), help="case of --compare/--curve"
    )
    p.add_argument("--curve", type=int, default=0, help="train the --compare variants N steps, print losses")
    p.add_argument("--every", type=int, default=25, help="--curve: steps per printed window")
    p.add_argument("--pool", type=int, default=64, help="--curve: synthetic frames to draw batches from")
    p.add_argument(
        "--seed", type=int, default=0, help="--curve: initial weights, frames (seed*pool..) and batch order"
    )
    p.add_argument("--dump", default="", help="--curve: write every step's loss terms to this JSON file")
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory in the heap, as the panopticdepth CLI sets it (utils/malloc.py), "
        "in this process and every child (other commits, --cases) alike",
    )
    p.add_argument("--serve", help=argparse.SUPPRESS)  # child of a REV@switches variant: CASES entry
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--repo", help=argparse.SUPPRESS)
    p.add_argument("--frames", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.keep_freed_memory:
        from panopticdepth.utils.malloc import MMAP_THRESHOLD, TRIM_THRESHOLD, keep_freed_memory

        keep_freed_memory()
        # children read glibc's variables at start (another commit may not have utils/malloc.py)
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        os.environ["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    if args.serve:
        case = json.loads(args.serve)
        serve(case, args.variant, Path(args.repo), Path(args.frames), args.threads, args.seed)
        return
    if args.curve:
        names = args.compare or ["fp32", "bf16"]
        curve(args.case, names, args.curve, args.threads, args.every, args.pool, args.seed, args.dump)
        return
    if args.compare:
        compare(args.case, args.compare, args.iters, args.threads)
        return
    if args.one:
        print(json.dumps(run_case(args.one, args.iters, args.threads)))
        return
    rows = []
    for name in args.cases:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--iters",
            str(args.iters),
            "--threads",
            str(args.threads),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PANOPTICDEPTH_PROGRESS": "0"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{'case':<20} {'batch':>5} {'size':>9} {'s/iter':>8} {'peak RSS MB':>12}   ({args.threads} threads)"
    )
    for r in rows:
        sec, mb = r["sec_per_iter"], r["peak_rss_mb"]
        print(f"{r['case']:<20} {r['batch']:>5} {r['size']:>9} {sec:>8.2f} {mb:>12.0f}")


if __name__ == "__main__":
    main()
