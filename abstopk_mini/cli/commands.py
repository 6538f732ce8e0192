"""The commands of ``python -m abstopk_mini``: for each, the job's config dataclass (its flags are
generated from it, :mod:`abstopk_mini.config_flags`), the job's ``run(cfg)`` and the readable summary
of its JSON result. Nothing here holds a setting's default: the configs do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from ..runs import bidirectional, budget, dead, opposites, saebench
from ..runs.jobs_model import NULL_NOTE, ConceptsJob, EvalJob, SteerJob, run_concepts, run_eval, run_steer
from ..runs.jobs_report import DashboardJob, ReproduceJob, SweepJob, run_dashboard, run_reproduce
from ..runs.jobs_store import HarvestJob, ToyJob, TrainJob, run_harvest, run_toy, run_train

__all__ = ["Command", "COMMANDS"]


class Command(NamedTuple):
    config: type                     # the job's config dataclass
    run: Callable                    # run(cfg) -> the JSON result
    summary: Callable                # summary(cfg, result) -> the readable text
    aliases: dict = {}               # {field: its flag's legacy spelling, e.g. "--tokens"}


def _f(value, spec: str) -> str:
    """``value`` formatted, a null (a non-finite number) as nan."""
    return format(float("nan") if value is None else value, spec)


def _null_notes(result: dict) -> str:
    return "".join(f"\nnote: {n}" for n in result["notes"] if n.endswith(NULL_NOTE))


def _toy(cfg, r) -> str:
    from ..coding.toy import format_table

    return format_table(r["rows"])


def _train(cfg, r) -> str:
    last = {k: r[f"final_{k}"] for k in ("fvu", "l0", "dead_frac")}
    return (f"{r['activation']} d_sae={r['d_sae']} k={r['k']}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if v is not None) + f" -> {r['dir']}")


def _eval(cfg, r) -> str:
    return (f"FVU {_f(r['fvu'], '.4f')}, L0 {_f(r['l0'], '.1f')}, dead {_f(100 * r['dead_frac'], '.1f')} %, loss "
            f"recovered {_f(r['splice_loss_recovered_zero'], '.3f')} (zero) / "
            f"{_f(r['splice_loss_recovered_mean'], '.3f')} (mean)") + _null_notes(r)


def _concepts(cfg, r) -> str:
    text = (f"{r['concept']}: best latent {r['best_latent']} — sign accuracy {_f(r['test_accuracy'], '.3f')}, "
            f"DiM accuracy {_f(r['dim_test_accuracy'], '.3f')} on {len(r['test_pairs'])} test pairs")
    nat = r["natural"]
    if nat is not None:
        text += ("\nnatural text: " + nat["skipped"] if "skipped" in nat else
                 f"\nnatural text: best latent {nat['best_latent']} — sign accuracy {_f(nat['sign_accuracy'], '.3f')}, "
                 f"pair share {_f(nat['pair_share'], '.3f')}, DiM accuracy {_f(nat['dim_test_accuracy'], '.3f')} on "
                 f"{nat['n_test']} held-out occurrences")
    return text + _null_notes(r)


def _steer(cfg, r) -> str:
    lines = [f"c = {c:+g}: " + ("log-odds null (not finite)" if lo is None else f"log-odds {lo:+.3f}")
             for c, lo in zip(r["values"], r["log_odds"])]
    return "\n".join(lines + [f"note: {n}" for n in r["notes"]])


def _dashboard(cfg, r) -> str:
    text = f"{len(r['latents'])} latent(s) -> {r['out']} ({r['size_bytes'] / 1024:.1f} kB)"
    if "verdicts" in r:
        text += "\n" + ", ".join(f"{k} {v}" for k, v in r["verdicts"].items())
    return "\n".join([text] + [f"note: {n}" for n in r["notes"]])


def _bidirectional(cfg, r) -> str:
    def best(rec, a, key):
        return rec["natural"][a].get(key, float("nan"))

    return "\n".join(f"seed {rec['seed']}: AbsTopK latent {rec['natural']['abstopk'].get('best_latent')} sign accuracy "
                     f"{best(rec, 'abstopk', 'sign_accuracy'):.3f}, held-out pair share "
                     f"{best(rec, 'abstopk', 'pair_share'):.2f}; TopK best pair "
                     f"{rec['scan']['topk'].get('best_pair', {}).get('test_pair_share', float('nan')):.2f}"
                     for rec in r["records"])


def _opposites(cfg, r) -> str:
    return "\n".join(f"{rec['activation']} seed {rec['seed']}: " + ", ".join(f"{k} {v}" for k, v in rec["verdicts"].items())
                     + f"; {len(rec['gender_sides'])} gendered side(s)" for rec in r["records"])


def _budget(cfg, r) -> str:
    lines = []
    for rec in r["records"]:
        last = rec["steps"][-1]
        b = last["batch"]
        lines.append(f"{rec['activation']} {rec['variant']} seed {rec['seed']} ({last['step']:,} steps): FVU batch "
                     f"{b['fvu']:.4f} / threshold {last['threshold']['fvu']:.4f} / row {last['row']['fvu']:.4f}; "
                     f"tokens with no latent (batch) {100 * b['share_zero']:.1f} %, "
                     f"top 10 % of tokens hold {100 * b['top_decile_share']:.0f} % of the non-zeros")
    return "\n".join(lines)


def _dead(cfg, r) -> str:
    lines = []
    for rec in r["records"]:
        last = rec["steps"][-1]
        alive, gone = last["alive"], last["dead"]
        scale = ("-" if gone["n"] == 0 else
                 f"{gone['mean_abs_u_median'] / alive['mean_abs_u_median']:.2f} of the live ones', "
                 f"{100 * gone['positive_share']:.0f} % ever positive, reach {gone['reach_median']:.2f}")
        lines.append(f"{rec['activation']} {rec['variant']} seed {rec['seed']} ({last['step']:,} steps): "
                     f"{100 * last['dead_frac']:.1f} % dead; dead latents' E|u| {scale}")
    return "\n".join(lines)


TOKENS = {"n_tokens": "--tokens"}
def _reproduce_with_figures(cfg: ReproduceJob) -> dict:
    """The reproduce job with the report's figures drawn by the book's plotting (the CLI is the one
    floor that may join runs/ and chapters/)."""
    from ..chapters.plots_lm import report_figures

    return run_reproduce(cfg, figures=report_figures)


COMMANDS = {
    "toy": Command(ToyJob, run_toy, _toy),
    "harvest": Command(HarvestJob, run_harvest, lambda cfg, r: f"{r['tokens']:,} tokens of {r['model']} "
                                                                 f"{r['hook_name']} in {r['dir']}",
                       TOKENS | {"context_length": "--context", "chunk_offsets": "--offsets"}),
    "train": Command(TrainJob, run_train, _train, TOKENS),
    "eval": Command(EvalJob, run_eval, _eval),
    "concepts": Command(ConceptsJob, run_concepts, _concepts),
    "steer": Command(SteerJob, run_steer, _steer),
    "reproduce": Command(ReproduceJob, _reproduce_with_figures, lambda cfg, r: (Path(cfg.out) / "summary.md").read_text(), TOKENS),
    "sweep": Command(SweepJob, None, None),  # run by runs.sweep.run_cli (it can detach itself): see cli.main
    "dashboard": Command(DashboardJob, run_dashboard, _dashboard),
    "bidirectional": Command(bidirectional.BidirectionalJob, bidirectional.run, _bidirectional),
    "opposites": Command(opposites.OppositesJob, opposites.run, _opposites),
    "budget": Command(budget.BudgetJob, budget.run, _budget),
    "dead": Command(dead.DeadJob, dead.run, _dead),
    "bench": Command(saebench.BenchJob, saebench.run, saebench.summary),
}
