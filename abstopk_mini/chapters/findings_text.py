"""The headline findings as markdown: README's "What we measured" and the landing page's verdict,
claims table and folded findings box, each between ``<!-- findings:start -->`` and
``<!-- findings:end -->``, rendered from :func:`abstopk_mini.chapters.findings.compute` only.

    python -m abstopk_mini.chapters.findings_text --check   # exit 1 and name the stale pages
    python -m abstopk_mini.chapters.findings_text --write   # regenerate the blocks in place

The paper's claims are cited to arXiv 2510.00404 (its abstract and Figure 1; we quote no number
of the paper that we could not read there).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .findings import compute

__all__ = ["START", "END", "PAGES", "pct", "render_readme", "render_intro", "replace_block", "stale", "write", "main"]

START, END = "<!-- findings:start -->", "<!-- findings:end -->"
#: the pages with a generated block, relative to the repository root, and their renderer's name
PAGES = {"README.md": "render_readme", "book/intro.md": "render_intro"}


def pct(x: float, signed: bool = True, digits: int = 1) -> str:
    """``x`` (a fraction) in percent with a true minus sign: ``pct(-0.0078) == "−0.8 %"``."""
    s = f"{100 * x:+.{digits}f}" if signed else f"{100 * x:.{digits}f}"
    return s.replace("-", "−") + " %"


def _n(x: int) -> str:
    return f"{x:,}"


def _mtok(x: int) -> str:
    return f"{x / 1e6:.2f}M"


def _num(x: float, digits: int = 2, signed: bool = False) -> str:
    return (f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}").replace("-", "−")


def _of(n: int, total: str, first: bool = False) -> str:
    """``"none of <total>"`` for 0, else ``"<n> of <total>"`` (capitalised when ``first``)."""
    out = f"none of {total}" if n == 0 else f"{n} of {total}"
    return out[0].upper() + out[1:] if first else out


def _none(n: int) -> str:
    return "none" if n == 0 else f"{n} of them"


def _main_job(v: dict) -> str:
    """Which optimiser trained the main job's SAEs (its report's ``settings.optimiser``; none before clipping)."""
    if v["ch6_optimiser"]:
        return f"With the gradient clipped to norm 1 (the package's default, `{v['ch6_optimiser']}`; the main job's report)"
    return "In the main job's report (trained without gradient clipping)"


def _verdict(gaps: list[float]) -> str:
    """How AbsTopK compares with TopK over the gaps (AbsTopK's FVU over TopK's, minus 1) of several k."""
    if all(g < 0 for g in gaps):
        return "better than TopK at every k"
    if all(g > 0 for g in gaps):
        return "worse than TopK at every k"
    return "better than TopK at some k and worse at others"


def _items(v: dict, doc) -> list[str]:
    """The findings as bullet lines; ``doc(n)`` names chapter ``n`` (a link in the book, text in README)."""
    s = v
    return [
        f"- **Toy data with signed ground truth** ({doc(4)}; {s['toy_axes']} signed axes): AbsTopK recovers every axis "
        f"with {s['toy_axes']} latents (MCC {s['toy_abstopk_mcc']:.3f}). TopK needs {2 * s['toy_axes']} latents, and "
        f"then splits {s['toy_topk_split']} of the {s['toy_axes']} axes into ± pairs.",
        f"- **Reconstruction** ({doc(6)}, {doc(9)}, {doc(10)}; layer 6, 4,096 latents, k = 32):",
        f"  - *{_main_job(s)}, AbsTopK reconstructs {_verdict([s[f'ch6_gap_k{k}'] for k in s['ch6_ks']])}.* Its "
        "held-out FVU is " + ", ".join(pct(s[f'ch6_gap_k{k}']) for k in s["ch6_ks"]) + " from TopK's at k = "
        + ", ".join(str(k) for k in s["ch6_ks"]) + f" after {s['ch6_steps']} steps of batch {_n(s['ch6_batch'])} (seed 0); "
        "its next-token KL with the SAE spliced in is " + " / ".join(f"{s[f'ch6_kl_abstopk_k{k}']:.3f}" for k in s["ch6_ks"])
        + " against TopK's " + " / ".join(f"{s[f'ch6_kl_topk_k{k}']:.3f}" for k in s["ch6_ks"])
        + f" ({_n(s['ch6_splice_tokens'])} predictions)."
        + (" The sweep below was trained without clipping, which at the bench budget helped AbsTopK more than TopK "
           "(`results/grad_clip.txt`); its numbers hold for that recipe." if s["ch6_optimiser"] else ""),
        f"  - *Without clipping the gap is a matter of optimiser steps.* AbsTopK's held-out FVU is "
        f"{pct(s['short_gap_s0'])} and {pct(s['short_gap_s1'])} from TopK's after {s['short_steps']} steps of batch "
        f"{_n(s['short_batch'])} (seeds 0 and 1), "
        f"{pct(s['mid1024_gap'])} after {_n(s['mid1024_steps'])} steps of batch 1,024 and {pct(s['ch9_2344_gap'])} after "
        f"{_n(s['ch9_2344_steps'])} (seed 0, {doc(9)}), {pct(s['mid256_gap'])} after {_n(s['mid256_steps'])} steps of "
        f"batch 256 (seed 0), and {pct(s['long_gap_s0'])} / {pct(s['long_gap_s1'])} after {_n(s['long_steps'])} steps "
        f"of batch {s['long_batch']} (seeds 0 / 1), where its next-token KL with the SAE spliced in is "
        f"{pct(s['long_kl_lower_s0'], False, 0)} / {pct(s['long_kl_lower_s1'], False, 0)} lower than TopK's "
        f"({s['long_kl_abstopk_s0']:.3f} / {s['long_kl_abstopk_s1']:.3f} against {s['long_kl_topk_s0']:.3f} / "
        f"{s['long_kl_topk_s1']:.3f}; {_n(s['long_splice_tokens'])} predictions). With few steps AbsTopK is ahead only "
        f"with a small dictionary ({pct(s['small_gap'])} at {s['small_d_sae']} latents, "
        f"{_n(s['mid1024_steps'])} steps, seed 0).",
        f"  - *The paper's protocol can make a win.* At equal steps, from 2,344 to {_n(s['long_steps'])}, neither "
        f"SAE wins by more than {pct(s['equal_steps_max_gap'], False)} (two seeds); with TopK stopped at 3,125 steps "
        f"and AbsTopK at 9,375 (the comparison the evaluation script attributed to the authors seems to make) AbsTopK "
        f"looks {pct(-s['protocol_gap_s0'], False)} and {pct(-s['protocol_gap_s1'], False)} better (seeds 0 and 1).",
        f"  - *The paper's recipe widens the gap, and training as long as the paper does not close it.* Its choices one "
        f"at a time ({_n(s['ladder_steps'])} steps, seed 0) leave AbsTopK {pct(s['ladder_min'])} to "
        f"{pct(s['ladder_max'])} from TopK (our recipe: {pct(s['ladder_ours'])}), except batch-level selection "
        f"({pct(s['ladder_batch_select'])}) and b_dec initialised at 0 ({pct(s['ladder_b_dec_zeros'])}, both SAEs far "
        f"worse); all at once they multiply TopK's FVU by {s['ladder_all_ratio_topk']:.2f} and AbsTopK's by "
        f"{s['ladder_all_ratio_abstopk']:.2f}. After {_n(s['long_ladder_steps'])} steps all of them together "
        f"leave BatchAbsTopK {pct(s['long_all_gap_s0'])} and {pct(s['long_all_gap_s1'])} from BatchTopK (seeds 0 "
        f"and 1), and after the paper's own {_n(s['p30k_steps'])} steps ({_mtok(s['p30k_tokens'])} tokens, seed 0) "
        f"{pct(s['p30k_gap'])} (FVU {s['p30k_fvu_abstopk']:.4f} against {s['p30k_fvu_topk']:.4f}; spliced KL "
        f"{s['p30k_kl_abstopk']:.3f} against {s['p30k_kl_topk']:.3f}, {pct(s['p30k_kl_gap'])}): the gap stops moving "
        f"after ~10,000 steps ({pct(s['p30k_gap_10938'])} at 10,938, {pct(s['p30k_gap_20000'])} at 20,000). Alone "
        f"({_n(s['long_ladder_steps'])} steps, seed 0), per-token standardisation leaves AbsTopK "
        f"{pct(s['long_paper_unit_norm'])} from TopK, the paper's Adam {pct(s['long_paper_adam'])}, its AuxK "
        f"{pct(s['long_paper_auxk'])}, no encoder bias {pct(s['long_paper_no_b_enc'])} and its encoder "
        f"initialisation {pct(s['long_paper_enc_init'])}.",
        f"  - *The paper's AuxK window kills AbsTopK's latents.* Dead after 5 batches (not its 512 auxiliary latents) "
        f"leaves {pct(s['window_dead_abstopk_s0'], False)} and {pct(s['window_dead_abstopk_s1'], False)} of AbsTopK's "
        f"latents dead on held-out text (seeds 0 and 1; TopK {pct(s['window_dead_topk'], False)}, seed 0; "
        f"{_n(s['auxk_steps'])} steps): TopK's dead latents turn negative, AbsTopK's shrink. Scored by ReLU(u) as "
        f"TopK's is, the same AuxK keeps them alive ({pct(s['positive_dead_s0'], False)} and "
        f"{pct(s['positive_dead_s1'], False)} dead) but leaves only {pct(s['positive_bidir_s0'], False, 0)} and "
        f"{pct(s['positive_bidir_s1'], False, 0)} of them two-sided.",
        f"  - *BatchAbsTopK* (batch-level selection, our other choices) is {pct(s['batch_early_gap_s0'], True, 0)} "
        f"and {pct(s['batch_early_gap_s1'], True, 0)} from BatchTopK after 1,172 steps of batch 128 (seeds 0 and 1), "
        f"while its signed batch rule piles the budget on the largest tokens, and {pct(s['batch_gap_s0'])} and "
        f"{pct(s['batch_gap_s1'])} after {_n(s['long_ladder_steps'])}; with per-token standardisation too, "
        f"{pct(s['batch_unit_norm_gap'])} (seed 0).",
        f"- **Dead latents** ({doc(9)}; k ≥ 32, 1,172 steps): at most {pct(s['dead_max_abstopk'], False)} of AbsTopK's "
        f"latents are dead in any of its {s['dead_n_abstopk']} SAEs of the sweep, against up to "
        f"{pct(s['dead_max_topk'], False)} for TopK ({pct(s['dead_max_topk_default'], False)} with our default b_dec).",
        f"- **Gender** ({doc(7)}, {doc(9)}, {doc(10)}): across the {s['sweep_n']} SAEs of the sweep (width, k, layer, "
        f"tokens, decoder-bias variants; {s['sweep_signed']} of them with signed codes), {_none(s['sweep_bidirectional'])} "
        f"has a latent that carries male ↔ female in both directions on held-out words; the best puts opposite signs "
        f"on the two words of {pct(s['sweep_best_pair_share'], False, 0)} of test pairs. In running text, "
        f"{s['bidirectional_ge_08']} of the 4,096 latents of either {_n(s['long_steps'])}-step AbsTopK SAE "
        f"({s['bidirectional_seeds']} seeds) put opposite signs on ≥ 80 % of held-out pairs. Trained on a "
        f"gender-balanced text (every document followed by its gender-swapped copy; two seeds), "
        f"{s['balanced_female_detectors']} of the {s['balanced_n']} SAEs still learn a one-sided female detector, and "
        f"{s['bidirectional_balanced_ge_08']} AbsTopK latents reach 80 %: the male-heavy corpus is not what kept the "
        f"latent one-sided.",
        f"- **Steering** ({doc(8)}, {doc(10)}; the {_n(s['long_steps'])}-step SAEs, {s['n_prompts']} prompts): one "
        f"AbsTopK latent clamped negative or positive moves the female-vs-male log-odds both ways, and so does TopK's "
        f"female latent added with a negative sign. At matched norm and ∓2q the AbsTopK clamp moves them by "
        f"{_num(s['clamp_lo_s0'], signed=True)} / {_num(s['clamp_hi_s0'], signed=True)} (seed 0) and "
        f"{_num(s['clamp_lo_s1'], signed=True)} / {_num(s['clamp_hi_s1'], signed=True)} (seed 1), less than random "
        f"directions of the same norm ({_num(s['random_hi_min_s0'], signed=True)} to "
        f"{_num(s['random_hi_max_s0'], signed=True)} at +2q, seed 0), TopK's latent with a sign "
        f"({_num(s['topk_add_lo_s0'], signed=True)} / {_num(s['topk_add_hi_s0'], signed=True)}) and "
        f"Difference-in-Means ({_num(s['dim_lo_s0'], signed=True)} / {_num(s['dim_hi_s0'], signed=True)}): steering "
        f"both ways does not need a signed latent.",
        f"- **Two sides of a latent** ({doc(11)}; the {_n(s['long_steps'])}-step SAEs): among the "
        f"{s['opposite_n']} most bidirectional latents of each of {s['opposite_saes']} SAEs ({s['opposite_seeds']} "
        f"seeds), {s['opposite_rules']} have opposite meanings on their two sides by fixed rules; read blind, "
        f"{s['reading_opposite']} of {s['reading_n_per_sae']} per SAE do (seed {s['reading_seed']} only). An AbsTopK "
        f"latent's two sides mostly hold two unrelated features.",
        f"- **The field's yardstick** ({doc(12)}; SAEBench's metrics, offline, on our {_n(s['long_steps'])}-step "
        f"TopK and AbsTopK, seed 0 / seed 1): feature absorption on the first-letter task ({_n(s['bench_words'])} "
        f"words, {s['bench_letters']} letters the probe reads; lower is better) is {_pair_s(s, 'bench_absorption_topk_split')} "
        f"for TopK and {_pair_s(s, 'bench_absorption_abstopk_split')} for AbsTopK with each sign read as its own latent "
        f"({_pair_s(s, 'bench_absorption_abstopk_signed')} with its signed codes read as SAEBench reads codes). "
        f"TPP at 20 ablated latents ({s['bench_tpp_classes']} classes from both text sets; higher is better) is "
        f"{_pair_s(s, 'bench_tpp20_topk_split')} for TopK and {_pair_s(s, 'bench_tpp20_abstopk_split')} for AbsTopK "
        f"in the split view ({_pair_s(s, 'bench_tpp20_abstopk_signed')} by SAEBench's rule, which never ablates a "
        f"latent whose code falls on the class). Sparse probing with one latent (seed 0, mean of "
        f"{s['bench_splits']} text splits) reaches "
        f"{s['bench_k1_topk_sentiment']:.2f} / {s['bench_k1_topk_newsgroups']:.2f} for TopK and "
        f"{s['bench_k1_abstopk_sentiment']:.2f} / {s['bench_k1_abstopk_newsgroups']:.2f} for AbsTopK "
        f"({s['bench_k1abs_abstopk_sentiment']:.2f} / {s['bench_k1abs_abstopk_newsgroups']:.2f} pooling |z|) on "
        f"sentiment / newsgroup topic, where the residual stream's best channel reaches "
        f"{s['bench_k1_residual_sentiment']:.2f} / {s['bench_k1_residual_newsgroups']:.2f}. "
        f"With the signs read as latents of their own, {_bench_verdict(s)}",
    ]


def _pair_s(s: dict, key: str) -> str:
    """"0.173 / 0.160": seed 0's value and seed 1's."""
    return f"{s[key]:.3f} / {s[key + '_s1']:.3f}"


def _bench_verdict(s: dict) -> str:
    """Whether absorption (lower better) and TPP (higher better) favour AbsTopK or TopK by more than two
    standard errors on both seeds, in words."""
    said = []
    for metric, key, better in (("absorption", "bench_absorption_diff", -1), ("TPP", "bench_tpp20_diff", 1)):
        z = [better * s[key + end] / s[key + "_se" + end] for end in ("", "_s1")]
        winner = "AbsTopK" if all(v > 2 for v in z) else "TopK" if all(v < -2 for v in z) else None
        said.append(f"{winner} is better on {metric} on both seeds" if winner else f"{metric} does not separate the two SAEs")
    if all("does not separate" in x for x in said):
        said = ["neither absorption nor TPP separates the two SAEs"]
    return ("; ".join(said) + " (a difference counts when it exceeds two standard errors on each seed: across "
            "letters for absorption, across text splits for TPP).")


def _readme_doc(n: int) -> str:
    return f"chapter {n}"


def _book_doc(n: int) -> str:
    return f"{{doc}}`ch. {n} <{_CHAPTERS[n]}>`"


_CHAPTERS = {4: "../notebooks/04_toy_bidirectional", 6: "../notebooks/06_training_saes",
             7: "../notebooks/07_bidirectional_features", 8: "../notebooks/08_probing_and_steering",
             9: "../notebooks/09_when_bidirectional", 10: "../notebooks/10_is_the_verdict_ours",
             11: "../notebooks/11_two_sides_of_a_latent", 12: "../notebooks/12_the_fields_yardstick"}


def _head(v: dict, where: str) -> str:
    return (f"On the embedded Gemma-3-270M, on a CPU, with {_mtok(v['train_tokens_min'])} to "
            f"{_mtok(v['train_tokens_max'])} training tokens per SAE ({where}):")


def render_readme(v: dict) -> str:
    """README's "What we measured" list (plain markdown)."""
    return "\n".join([_head(v, "details, settings and figures in the book; raw numbers in `results/`, from which "
                                "`python -m abstopk_mini.chapters.findings_text --write` generates this list"),
                      "", *_items(v, _readme_doc)])


def render_intro(v: dict) -> str:
    """The landing page's verdict, claims table and folded findings (MyST)."""
    d = _book_doc
    cite = "{cite}`zhu2025abstopk`"
    saes = f"{v['sweep_n']} SAEs"
    balanced = "the latents of the AbsTopK SAEs trained on a gender-balanced text"
    top = f"the {v['opposite_n']} most bidirectional latents of {v['opposite_saes']} SAEs"
    verdict = [
        "**Verdict, in five lines** (Gemma-3-270M, layer 6, 4,096 latents, k = 32, trained on a CPU):",
        "",
        f"1. The derivation holds: AbsTopK is the ℓ0 proximal map without the sign constraint, and on toy data it "
        f"recovers all {v['toy_axes']} signed axes with one latent each, where TopK splits {v['toy_topk_split']} of "
        f"them in two ({d(4)}).",
        f"2. {_main_job(v)}, AbsTopK's held-out FVU is "
        + " / ".join(pct(v[f'ch6_gap_k{k}']) for k in v["ch6_ks"]) + " from TopK's at k = "
        + " / ".join(str(k) for k in v["ch6_ks"]) + f" after {v['ch6_steps']} steps. Without "
        f"clipping, trained long enough ({_n(v['long_steps'])} steps), it reconstructs like TopK "
        f"({pct(v['long_gap_s0'])} / {pct(v['long_gap_s1'])} FVU, two seeds) with a "
        f"{pct(v['long_kl_lower_s0'], False, 0)} / {pct(v['long_kl_lower_s1'], False, 0)} lower spliced KL; with few "
        f"steps it is behind ({d(9)}, {d(10)}).",
        f"3. The paper's training recipe leaves its BatchAbsTopK {pct(v['p30k_gap'], False)} behind BatchTopK after the "
        f"paper's {_n(v['p30k_steps'])} steps (one seed), mostly through batch-level selection and its AuxK window "
        f"({d(10)}).",
        f"4. {_of(v['sweep_bidirectional'], saes, True)} has a latent carrying male ↔ female in "
        f"both signs on held-out words; {_of(v['bidirectional_balanced_ge_08'], balanced)} "
        f"does so in running text; and {_of(v['opposite_rules'], top)} "
        f"has opposite meanings on its two sides ({d(7)}, {d(10)}, {d(11)}).",
        f"5. Steering both ways does not need a signed latent: at matched norm the AbsTopK clamp moves the log-odds "
        f"less than random directions do ({_num(v['clamp_lo_s0'], signed=True)} / {_num(v['clamp_hi_s0'], signed=True)} at "
        f"∓2q against {_num(v['random_hi_min_s0'], signed=True)} to {_num(v['random_hi_max_s0'], signed=True)} at +2q, "
        f"seed 0; {d(8)}, {d(10)}).",
    ]
    table = [
        "| claim | paper | this book | chapter |",
        "|---|---|---|---|",
        f"| Non-negative codes split a bidirectional concept into two features | {cite}, abstract | toy data: "
        f"AbsTopK 1 latent per signed axis (MCC {v['toy_abstopk_mcc']:.3f}); TopK splits {v['toy_topk_split']} of "
        f"{v['toy_axes']} axes | {d(4)} |",
        f"| AbsTopK improves reconstruction fidelity | {cite}, abstract | main job "
        f"({'clipped' if v['ch6_optimiser'] else 'unclipped'}): "
        f"{pct(v['ch6_gap'])} at k = 32 after {v['ch6_steps']} steps; the sweep (unclipped): equal within "
        f"{pct(v['equal_steps_max_gap'], False)} at equal steps from 2,344 steps on; behind at 293 steps "
        f"({pct(v['short_gap_s0'])} / {pct(v['short_gap_s1'])}); the paper's recipe: {pct(v['p30k_gap'])} at "
        f"{_n(v['p30k_steps'])} steps | {d(6)}, {d(10)} |",
        f"| Single latents encode contrasting concepts (male vs female) | {cite}, abstract and Figure 1 | "
        f"{_of(v['sweep_bidirectional'], saes)} with a male ↔ female latent; best {pct(v['sweep_best_pair_share'], False, 0)} of test pairs; "
        f"{v['opposite_rules']} of {v['opposite_n']} latents with opposite sides ({v['opposite_saes']} SAEs) | "
        f"{d(7)}, {d(9)}, {d(11)} |",
        f"| AbsTopK matches or surpasses Difference-in-Means on probing and steering | {cite}, abstract | steers "
        f"both ways, as a TopK latent with a sign does; at matched norm the clamp moves the log-odds "
        f"{_num(v['clamp_lo_s0'], signed=True)} / {_num(v['clamp_hi_s0'], signed=True)} against DiM's "
        f"{_num(v['dim_lo_s0'], signed=True)} / {_num(v['dim_hi_s0'], signed=True)} | {d(8)}, {d(10)} |",
    ]
    box = [":::{admonition} What we found, in full", ":class: dropdown important", "",
           _head(v, "raw numbers in `results/`; seeds and optimiser steps beside each number"), "", *_items(v, d), ":::"]
    return "\n".join([*verdict, "", *table, "", *box])


def replace_block(text: str, body: str, where: str = "page") -> str:
    """``text`` with what lies between :data:`START` and :data:`END` replaced by ``body``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{where} must hold {START!r} once, then {END!r} once; add them around the findings")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{body}\n{END}{tail}"


def _expected(root: Path) -> dict[str, str]:
    v = compute(root)
    out = {}
    for rel, fn in PAGES.items():
        path = root / rel
        out[rel] = replace_block(path.read_text(encoding="utf-8"), globals()[fn](v), rel)
    return out


def stale(root) -> list[str]:
    """The pages of :data:`PAGES` under ``root`` whose generated block differs from the records."""
    root = Path(root)
    return [rel for rel, text in _expected(root).items() if (root / rel).read_text(encoding="utf-8") != text]


def write(root) -> list[str]:
    """Regenerate the blocks under ``root`` in place (temp file + rename); the pages changed."""
    root = Path(root)
    expected = _expected(root)       # everything computed before anything is written
    changed = []
    for rel, text in expected.items():
        path = root / rel
        if path.read_text(encoding="utf-8") == text:
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        changed.append(rel)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m abstopk_mini.chapters.findings_text", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="exit 1 when README or the intro differ from the records")
    g.add_argument("--write", action="store_true", help="regenerate the blocks in place")
    p.add_argument("--root", default=None, help="the repository checkout (default: the one around the current folder)")
    a = p.parse_args(argv)
    from ..repo import find
    try:
        root = Path(a.root) if a.root else find("results").parent
        if not (root / "results").is_dir():
            raise FileNotFoundError(f"--root {str(root)!r} has no results/ folder; pass a checkout of the repository")
        if a.check:
            bad = stale(root)
            for rel in bad:
                print(f"stale: {rel} (run python -m abstopk_mini.chapters.findings_text --write)", file=sys.stderr)
            return 1 if bad else 0
        for rel in write(root):
            print(f"wrote {rel}")
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
