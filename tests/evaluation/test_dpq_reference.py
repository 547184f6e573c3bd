"""The vectorised evaluator against a brute-force, pixel-by-pixel transcription of
docs/evaluation_protocol.md."""

from __future__ import annotations

import numpy as np
import pytest

from panopticdepth.evaluation import DPSEvaluator

# --------------------------------------------------------------------------- brute-force reference
CITY = dict(div=1000, void_cat=32, eps=None, things=list(range(11, 19)), pred_void_skipped=True)
KITTI = dict(div=2**20, void_cat=255, eps=1e-10, things=list(range(8)), pred_void_skipped=False)


def ref_window(gts, preds, gdeps, pdeps, lam, spec):
    """Sections 4-5 literally: per-pixel depth check, dict counts, loops over segment pairs."""
    div, vcat = spec["div"], spec["void_cat"]
    gt_px, pred_px = [], []
    for gt, pred, gd, pd in zip(gts, preds, gdeps, pdeps):
        for i in range(len(gt)):
            p = int(pred[i])
            if lam > 0 and int(gd[i]) > 0:
                err = abs(int(pd[i]) - int(gd[i])) / int(gd[i])
                if err > lam:
                    p = 19 * div
            gt_px.append(int(gt[i]))
            pred_px.append(p)
    gt_area, pred_area, inter = {}, {}, {}
    for g, p in zip(gt_px, pred_px):
        gt_area[g] = gt_area.get(g, 0) + 1
        pred_area[p] = pred_area.get(p, 0) + 1
        inter[(g, p)] = inter.get((g, p), 0) + 1
    tp, fn, fp, iou_sum = ([0.0] * 256 for _ in range(4))
    void_id = vcat * div
    gm, pm = set(), set()
    for (g, p), k in sorted(inter.items()):
        if g // div != p // div or p // div == vcat:
            continue
        union = gt_area[g] + pred_area[p] - k - inter.get((void_id, p), 0)
        iou = k / union
        if iou > 0.5:
            tp[g // div] += 1
            iou_sum[g // div] += iou
            gm.add(g)
            pm.add(p)
    for g in gt_area:
        if g not in gm and g // div != vcat:
            fn[g // div] += 1
    for p, area in pred_area.items():
        if p in pm or (spec["pred_void_skipped"] and p // div == vcat):
            continue
        ign = sum(k for (g, q), k in inter.items() if q == p and g // div == vcat)
        if ign / area > 0.5:
            continue
        fp[p // div] += 1
    return tp, fn, fp, iou_sum


def ref_evaluate(frames, k, lam, spec):
    """frames: list of (sequence, gt, pred, gt_depth, pred_depth) flat lists, in order."""
    tot = [[0.0] * 256 for _ in range(4)]
    if spec is CITY:
        streams = {}
        for f in frames:
            streams.setdefault(f[0], []).append(f)
        streams = list(streams.values())
    else:
        # ViP-kitti: windows over the whole sorted list (docs/evaluation_protocol.md#semkitti)
        streams = [frames]
    for stream in streams:
        for i in range(len(stream) - k + 1):
            w = stream[i : i + k]
            res = ref_window(
                [f[1] for f in w], [f[2] for f in w], [f[3] for f in w], [f[4] for f in w], lam, spec
            )
            for a, b in zip(tot, res):
                for c in range(256):
                    a[c] += b[c]
    pq = []
    for c in range(19):
        tp, fn, fp, iou = tot[0][c], tot[1][c], tot[2][c], tot[3][c]
        if spec["eps"] is None:
            sq, rq = iou / max(tp, 1), tp / max(tp + 0.5 * fn + 0.5 * fp, 1)
        else:
            sq, rq = iou / (tp + spec["eps"]), tp / (tp + 0.5 * fn + 0.5 * fp + spec["eps"])
        pq.append(sq * rq)
    th = [pq[c] for c in spec["things"]]
    st = [pq[c] for c in range(19) if c not in spec["things"]]
    return (
        100 * sum(pq) / 19,
        100 * sum(th) / len(th),
        100 * sum(st) / len(st),
        [tot[i][:19] for i in range(4)],
    )


# --------------------------------------------------------------------------- random cases
def random_frames(rng, spec, n_frames, n_seq, h=10, w=14):
    """Blocky GT with things, stuff, void (exact 32000 and other void ids); perturbed predictions."""
    div, vcat = spec["div"], spec["void_cat"]
    things = spec["things"]
    stuff = [c for c in range(19) if c not in things]
    frames = []
    for s in range(n_seq):
        base = rng.integers(0, 6, size=(3, 4))
        labels = [rng.choice(stuff) * div for _ in range(3)] + [
            rng.choice(things) * div + rng.integers(0, 3) for _ in range(2)
        ] + [vcat * div]  # fmt: skip
        for _ in range(n_frames):
            cell = np.kron(base, np.ones((4, 4), int))[:h, :w] if h <= 12 else None
            gt = np.array(labels)[cell]
            noise = rng.random((h, w))
            gt = np.where(noise < 0.05, vcat * div + rng.integers(0, 2, (h, w)), gt)
            pred = gt.copy()
            pred = np.where(pred // div == vcat, rng.choice(stuff) * div, pred)
            flip = rng.random((h, w)) < 0.2
            pred = np.where(flip, np.array(labels[:5] + [19 * div])[rng.integers(0, 6, (h, w))], pred)
            if spec is CITY:
                pred = np.where(rng.random((h, w)) < 0.03, vcat * div, pred)
            pred = np.where(rng.random((h, w)) < 0.02, rng.integers(0, 19) * div + 7, pred)  # pred-only class
            gd = rng.integers(1, 30, (h, w)) * 10
            gd[rng.random((h, w)) < 0.2] = 0
            choice = rng.integers(0, 5, (h, w))
            pdp = np.select(
                [choice == 0, choice == 1, choice == 2, choice == 3],
                [gd, gd * 11 // 10, gd * 3 // 2, gd * 5 // 4],
                rng.integers(0, 400, (h, w)),
            )
            frames.append((f"{s:06d}", gt.ravel(), pred.ravel(), gd.ravel(), pdp.ravel()))
            base = np.roll(base, 1, axis=int(rng.integers(0, 2)))
    return frames


@pytest.mark.parametrize("spec_name", ["cityscapes-dps", "semkitti-dps"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_matches_bruteforce(spec_name, seed):
    spec = CITY if spec_name == "cityscapes-dps" else KITTI
    rng = np.random.default_rng(seed)
    frames = random_frames(rng, spec, n_frames=4, n_seq=2)
    ks = (1, 2, 3)
    ev = DPSEvaluator(dataset=spec_name, frames=ks)
    for seq, gt, pred, gd, pdp in frames:
        shape = (10, 14)
        ev.update(pred.reshape(shape), pdp.reshape(shape), gt.reshape(shape), gd.reshape(shape), sequence=seq)
    out = ev.summary()
    no_depth = "-1" if spec is CITY else "0"
    for k in ks:
        for lam_key, lam in ((no_depth, -1.0), ("0.5", 0.5), ("0.25", 0.25), ("0.1", 0.1)):
            pq, th, st, (tp, fn, fp, iou) = ref_evaluate(frames, k, lam, spec)
            run = out["runs"][f"k={k},lambda={lam_key}"]
            assert run["averages"]["pq"] == pytest.approx(pq, abs=1e-12)
            assert run["averages"]["pq_th"] == pytest.approx(th, abs=1e-12)
            assert run["averages"]["pq_st"] == pytest.approx(st, abs=1e-12)
            assert [c["tp"] for c in run["classes"]] == tp
            assert [c["fn"] for c in run["classes"]] == fn
            assert [c["fp"] for c in run["classes"]] == fp
            np.testing.assert_allclose([c["iou_sum"] for c in run["classes"]], iou, rtol=0, atol=1e-12)
    # The single-frame table and its mean over lambdas.
    means = [out["dpq"][key]["dpq"] for key in ("0.5", "0.25", "0.1")]
    assert out["dpq"]["mean"]["dpq"] == pytest.approx(np.mean(means), abs=1e-12)


def test_cases_that_matter_are_exercised():
    """The random cases really contain TPs, FNs, FPs, excused FPs and depth failures."""
    rng = np.random.default_rng(0)
    frames = random_frames(rng, CITY, n_frames=4, n_seq=2)
    _, _, _, (tp, fn, fp, _) = ref_evaluate(frames, 1, -1.0, CITY)
    assert sum(tp) > 5 and sum(fn) > 0 and sum(fp) > 0
    _, _, _, (tp01, *_rest) = ref_evaluate(frames, 1, 0.1, CITY)
    assert sum(tp01) < sum(tp)


def test_exact_threshold_and_signed_difference():
    """|p-g|/g == lambda is kept (strict >); under-estimates do not wrap around
    (docs/evaluation_protocol.md#depth-test, docs/evaluation_protocol.md#uint16-wraparound)."""
    gt = np.full((4, 4), 13001)
    gd = np.full((4, 4), 200, np.uint16)
    pd = np.full((4, 4), 220, np.uint16)  # err = 0.1 exactly -> kept at lambda 0.1
    pd[0, :] = 180  # under-estimate by 0.1: kept (uint16 subtraction would wrap and fail)
    ev = DPSEvaluator()
    ev.update(gt, pd, gt, gd)
    cls = ev.summary()["runs"]["k=1,lambda=0.1"]["classes"][13]
    assert (cls["tp"], cls["fn"], cls["fp"]) == (1.0, 0.0, 0.0)
    wrapped = DPSEvaluator(wrap_uint16_depth=True)
    wrapped.update(gt, pd, gt, gd)
    cls = wrapped.summary()["runs"]["k=1,lambda=0.1"]["classes"][13]
    assert cls["pq"] == pytest.approx(75.0)  # 12/16 pixels left: IoU 0.75


def test_merge_equals_single_pass():
    rng = np.random.default_rng(5)
    frames = random_frames(rng, CITY, n_frames=3, n_seq=4)
    whole = DPSEvaluator(frames=(1, 2))
    parts = [DPSEvaluator(frames=(1, 2)) for _ in range(2)]
    for seq, gt, pred, gd, pdp in frames:
        args = (pred.reshape(10, 14), pdp.reshape(10, 14), gt.reshape(10, 14), gd.reshape(10, 14))
        whole.update(*args, sequence=seq)
        parts[int(seq) % 2].update(*args, sequence=seq)
    merged = parts[0].merge(parts[1]).summary()
    ref = whole.summary()
    for key in ref["runs"]:
        assert merged["runs"][key]["averages"] == pytest.approx(ref["runs"][key]["averages"], abs=1e-12)
    assert merged["depth"] == pytest.approx(ref["depth"])
