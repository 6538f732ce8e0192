r"""Check of the comparison-protocol exercise (chapter 10): the AbsTopK − TopK gap at equal steps and
with TopK stopped ``ratio`` times earlier, from the snapshots of one pair of runs.

For the held-out FVU of AbsTopK and TopK after S optimiser steps (same batch size, seed and harvest),

.. math::  \mathrm{gap}_{=}(S) = 100\left(\frac{\mathrm{FVU}_{\mathrm{AbsTopK}}(S)}{\mathrm{FVU}_{\mathrm{TopK}}(S)} - 1\right),
           \qquad
           \mathrm{gap}_{1:r}(S) = 100\left(\frac{\mathrm{FVU}_{\mathrm{AbsTopK}}(S)}{\mathrm{FVU}_{\mathrm{TopK}}(S/r)} - 1\right),

in percent (positive: TopK reconstructs better), for every AbsTopK snapshot S that is a multiple of r and
for which TopK has snapshots at both S and S/r. The first is a fair comparison; the second replays the
protocol that compares TopK at an earlier checkpoint. The package computes both in
:func:`abstopk_mini.chapters.plots_steps.protocol_rows` from the sweep's records; the check builds such
records from seeded curves, and compares the reader's answer with it and with a loop written here.
"""

from __future__ import annotations

import numbers

import torch

from .harness import PackageDisagrees, call, passed, reader_name

__all__ = ["check_protocol_gaps", "protocol_gaps_loop", "as_records"]


def protocol_gaps_loop(fvu_abstopk: dict, fvu_topk: dict, ratio: int) -> dict:
    """{S: (gap at equal steps %, gap against TopK at S/ratio %)} by a plain loop over AbsTopK's snapshots."""
    out = {}
    for step in sorted(fvu_abstopk):
        if step % ratio == 0 and step in fvu_topk and step // ratio in fvu_topk:
            a = fvu_abstopk[step]
            out[step] = (100 * (a / fvu_topk[step] - 1), 100 * (a / fvu_topk[step // ratio] - 1))
    return out


def as_records(fvu_abstopk: dict, fvu_topk: dict, batch: int = 128, seed: int = 0) -> list[dict]:
    """Two sweep records (``results/steps_vs_tokens.jsonl`` layout) whose snapshots hold these curves; the
    final SAE sits one step past the last snapshot, with the last snapshot's FVU."""
    recs = []
    for act, curve in (("abstopk", fvu_abstopk), ("topk", fvu_topk)):
        last = max(curve)
        recs.append({"activation": act, "seed": seed, "batch_size": batch, "stage": "exercise",
                     "snapshots": [{"step": s, "tokens": s * batch, "heldout": {"fvu": v}} for s, v in sorted(curve.items())],
                     "train": {"n_steps": last + 1, "n_tokens": (last + 1) * batch}, "heldout": {"fvu": curve[last]}})
    return recs


def _package(fvu_abstopk: dict, fvu_topk: dict, ratio: int) -> dict:
    from ..chapters.plots_steps import protocol_rows

    return {r["AbsTopK steps"]: (r["gap % equal"], r[f"gap % 1:{ratio}"])
            for r in protocol_rows(as_records(fvu_abstopk, fvu_topk), ratio=ratio)}


def _same(got: dict, want: dict, tol: float = 1e-9) -> bool:
    return got.keys() == want.keys() and all(
        abs(g - w) <= tol * max(1.0, abs(w)) for s in want for g, w in zip(got[s], want[s]))


def _read(fn, out, where: str) -> dict:
    if not isinstance(out, dict):
        raise AssertionError(f"{where}: {reader_name(fn)} must return a dict {{step: (gap at equal steps %, gap at "
                             f"1:ratio %)}}; it returned {type(out).__name__}")
    clean = {}
    for step, pair in out.items():
        if isinstance(pair, torch.Tensor):
            pair = pair.tolist()
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in pair)):
            raise AssertionError(f"{where}: the value at step {step!r} is {pair!r}; each value is a pair of numbers "
                                 "(gap at equal steps %, gap with TopK at S/ratio %)")
        clean[int(step)] = (float(pair[0]), float(pair[1]))
    return clean


def _gaps_mistake(a: dict, t: dict, ratio: int, got: dict, want: dict) -> str:
    extra, missing = sorted(got.keys() - want.keys()), sorted(want.keys() - got.keys())
    if extra:
        s = extra[0]
        if s % ratio:
            return (f"step {s} is not a multiple of ratio = {ratio} ({s} // {ratio} = {s // ratio} is another step); "
                    f"keep only S with S % ratio == 0 and TopK snapshots at S and S // ratio")
        return f"step {s} has no TopK snapshot at S = {s} or at S/ratio = {s // ratio}; leave it out"
    if missing:
        return (f"step {missing[0]} is missing: TopK has snapshots at {missing[0]} and {missing[0] // ratio}, so both "
                "gaps exist there")

    def rule(f):
        return {s: (f(a[s], t[s]), f(a[s], t[s // ratio])) for s in want}

    for cand, said in (
            (rule(lambda x, y: x / y - 1), "the gaps are fractions; give them in percent: 100·(FVU_AbsTopK / FVU_TopK − 1)"),
            (rule(lambda x, y: 100 * (y / x - 1)), "the ratio is upside down: the gap is 100·(FVU_AbsTopK / FVU_TopK − 1) "
                                                   "(positive: TopK reconstructs better)"),
            (rule(lambda x, y: 100 * (x - y)), "a difference of FVUs is not a relative gap: divide by TopK's FVU, "
                                               "100·(FVU_AbsTopK / FVU_TopK − 1)"),
            (rule(lambda x, y: x - y), "a difference of FVUs is not a relative gap: divide by TopK's FVU, "
                                       "100·(FVU_AbsTopK / FVU_TopK − 1)"),
            ({s: (100 * (a[s] / t[s] - 1), 100 * (a.get(s // ratio, float("nan")) / t[s] - 1)) for s in want},
             "you stopped AbsTopK early; the protocol under test stops TopK early: AbsTopK at S against TopK at S/ratio"),
            ({s: want[s][::-1] for s in want}, "the two gaps are swapped: (equal steps, TopK at S/ratio), in that order")):
        if _same(got, cand):
            return said
    s = next(s for s in want if not _same({s: got[s]}, {s: want[s]}))
    return f"at step {s}: got {got[s]}, expected ({want[s][0]:+.3f}, {want[s][1]:+.3f})"


def check_protocol_gaps(fn) -> None:
    """``fn(fvu_abstopk, fvu_topk, ratio)``: from two learning curves {step: held-out FVU} of one pair of runs,
    {S: (gap at equal steps %, gap with TopK at S/ratio %)} for every AbsTopK step S with S % ratio == 0 and
    TopK snapshots at S and S // ratio; gap = 100·(FVU_AbsTopK / FVU_TopK − 1)."""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    g = torch.Generator().manual_seed(13)

    def curve(steps, start, noise):
        return {s: float(start * s ** -0.5 * (1 + noise * torch.rand(1, generator=g, dtype=torch.float64)))
                for s in steps}

    paper = [293, 586, 1172, 2344, 3125, 4688, 9375]  # the snapshots of chapter 10's long runs
    cases = [({100: 0.30, 300: 0.20, 900: 0.10}, {100: 0.25, 300: 0.18, 900: 0.095}, 3),
             (curve(paper, 2.0, 0.1), curve(paper, 1.9, 0.1), 3),
             (curve(paper, 2.0, 0.1), curve(paper, 1.9, 0.1), 2),
             ({3: 0.5, 9: 0.4, 10: 0.39, 30: 0.3, 600: 0.1}, {1: 0.7, 3: 0.45, 9: 0.38, 10: 0.37, 30: 0.29, 200: 0.15}, 3)]
    for n, (a, t, ratio) in enumerate(cases, 1):
        want = _package(a, t, ratio)
        if not _same(want, protocol_gaps_loop(a, t, ratio), 1e-12):
            raise PackageDisagrees("the protocol gaps: the package (plots_steps.protocol_rows) and the independent loop "
                                   "differ — a bug in abstopk_mini, not in your code; please report it")
        where = f"case {n} (ratio {ratio}, AbsTopK steps {sorted(a)}, TopK steps {sorted(t)})"
        got = _read(fn, call(fn, dict(a), dict(t), ratio, what="protocol_gaps"), where)
        if not _same(got, want):
            raise AssertionError(f"{where}: {_gaps_mistake(a, t, ratio, got, want)}")
    passed(fn, "protocol_gaps", f"{len(cases)} pairs of curves (chapter 10's snapshot steps, ratios 3 and 2, steps that "
           "are not multiples of the ratio) give the gaps of plots_steps.protocol_rows and of a plain loop")
