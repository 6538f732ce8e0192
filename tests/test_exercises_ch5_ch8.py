"""am.exercises of chapters 5 and 8: the truncated forward, the mean share, the clamp of one latent,
the matched-norm control and the steering log-odds (issue 29).

The right answers are written here from the definitions (a hook of their own, a loop, the formula),
not with the package, so a check that only compared with the package could not pass them by sharing
its bug. Each check meets the wrong implementations a learner plausibly writes and must reject each
with an AssertionError whose message names the mistake.
"""

import pytest
import torch

import abstopk_mini as am
from abstopk_mini import exercises as ex
from abstopk_mini.exercises import lm_hooks as exh
from abstopk_mini.exercises import steering as exs

from conftest import check_rejects, mutation_cases, readers_lines

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- right answers, written here
class _Stop(Exception):
    pass


def right_residual_stream(model, input_ids, layer, *, block_offset=0, stop=True, remove=True, unwrap=True,
                          pre_hook=False):
    lm = model.model
    block = lm.model.layers[layer + block_offset]
    box = {}

    def hook(module, args, output=None):
        if pre_hook:
            box["x"] = args[0]
        else:
            box["x"] = output[0] if (unwrap and isinstance(output, tuple)) or not unwrap else output
        if stop:
            raise _Stop

    handle = block.register_forward_pre_hook(hook) if pre_hook else block.register_forward_hook(hook)
    try:
        with torch.no_grad():
            lm(input_ids=input_ids)
    except _Stop:
        pass
    finally:
        if remove:
            handle.remove()
    return box["x"]


def _hidden(model, input_ids, index):
    with torch.no_grad():
        return model.model(input_ids=input_ids, output_hidden_states=True).hidden_states[index]


def right_mean_share(x):
    x = x.double()
    N = x.shape[0]
    mu = [sum(float(x[n, j]) for n in range(N)) / N for j in range(x.shape[1])]
    second = sum(float((x[n] ** 2).sum()) for n in range(N)) / N
    return sum(m * m for m in mu) / second


def right_clamp_edit(sae, latent, value, x, *, sign=1.0, keep_error=True, scale_power=-1, use_code=True,
                     subtract=True, row=None):
    s = sae.cfg.input_scale
    u = (s * x - sae.b_dec) @ sae.W_enc + sae.b_enc
    top = u.abs().topk(sae.cfg.k, dim=-1).indices
    z = torch.zeros_like(u).scatter(-1, top, u.gather(-1, top))
    z_i = z[:, latent] if use_code else u[:, latent]
    d = (sae.W_dec[latent] if row is None else row) * s ** scale_power
    if not keep_error:
        z2 = z.clone()
        z2[:, latent] = value
        return (z2 @ sae.W_dec + sae.b_dec) / s
    return x + sign * (value - (z_i if subtract else 0.0 * z_i))[:, None] * d


def right_match_norm(direction, sae, latent, *, row=None, scale_power=-1, normalise=True, sign=1.0):
    d = (sae.W_dec[latent] if row is None else row) * sae.cfg.input_scale ** scale_power
    length = (d ** 2).sum().sqrt()
    return sign * direction * length / ((direction ** 2).sum().sqrt() if normalise else 1.0)


def right_log_odds(logits, attention_mask, female_ids, male_ids, *, pos=None, sign=1.0, probs=False, dim=-1,
                   reduce=None):
    P = logits.shape[0]
    last = attention_mask.sum(1) - 1 if pos is None else pos(attention_mask, logits)
    out = torch.zeros(P, len(female_ids), dtype=torch.float64)
    norm = torch.log_softmax(logits.double(), dim)
    for p in range(P):
        row = norm[p, int(last[p])]
        for k in range(len(female_ids)):
            f, m = row[female_ids[k]], row[male_ids[k]]
            out[p, k] = sign * ((f.exp() - m.exp()) if probs else (f - m))
    return out if reduce is None else reduce(out)


def test_right_answers_written_here_pass(capsys):
    ex.check_residual_stream(right_residual_stream)
    ex.check_mean_share(right_mean_share)
    ex.check_clamp_edit(right_clamp_edit)
    ex.check_match_norm(right_match_norm)
    ex.check_log_odds(right_log_odds)
    readers_lines(capsys, 5)


def test_independent_references_on_hand_worked_cases():
    import numpy as np

    # two tokens ±e1 around the mean (0, 2): ‖μ‖² = 4, mean ‖x‖² = 5
    assert exh.mean_share_reference(np.array([[1.0, 2.0], [-1.0, 2.0]])) == pytest.approx(0.8, abs=1e-15)
    # a one-latent-per-row SAE by hand: clamping to the current code changes nothing, to 0 removes it
    sae = exs.steering_sae()
    x = torch.randn(5, sae.cfg.d_in, dtype=torch.float64)
    z = sae.encode(x)
    i = int(z.abs().sum(0).argmax())
    row = int(z[:, i].abs().argmax())
    same = exs.clamp_reference(sae, i, float(z[row, i]), x[row:row + 1].numpy())
    assert np.allclose(same, x[row:row + 1].numpy(), atol=1e-12)
    gone = exs.clamp_reference(sae, i, 0.0, x.numpy())
    assert np.allclose(gone, (x - z[:, i:i + 1] * sae.W_dec[i] / sae.cfg.input_scale).numpy(), atol=1e-12)


# ----------------------------------------------------------------------------- mutations (issue 29, item 2)
def _leaves_hook(model, ids, layer):
    return right_residual_stream(model, ids, layer, remove=False)


MUTATIONS = {
    "check_residual_stream": [
        ("hidden_states[L]", lambda m, ids, L: _hidden(m, ids, L), r"layer off by one.*input of block"),
        ("pre-hook on block L", lambda m, ids, L: right_residual_stream(m, ids, L, pre_hook=True),
         r"layer off by one.*forward hook"),
        ("hidden_states[-1]", lambda m, ids, L: _hidden(m, ids, -1), "final norm"),
        ("block L + 1", lambda m, ids, L: right_residual_stream(m, ids, L, block_offset=1) if L + 1 < 4 else _hidden(m, ids, -1),
         r"hidden_states\[3\], the output of block 2"),
        ("forward not stopped", lambda m, ids, L: right_residual_stream(m, ids, L, stop=False),
         r"did not stop after block 1: blocks 2\.\.3 and the LM head ran"),
        ("full forward, hidden_states[L + 1]", lambda m, ids, L: _hidden(m, ids, L + 1) if L + 1 < 4 else
         right_residual_stream(m, ids, L), r"did not stop after block 1.*Raise an exception"),
        ("hook left registered", _leaves_hook, r"still registered on model\.layers\.1.*handle\.remove\(\)"),
        ("output[0] of a tensor", lambda m, ids, L: right_residual_stream(m, ids, L, unwrap=False),
         r"one sequence.*output\[0\] of a tensor"),
        ("tuple returned", lambda m, ids, L: (right_residual_stream(m, ids, L),), r"returned a tuple.*unwrap output\[0\]"),
    ],
    "check_mean_share": [
        ("mean over dim 1", lambda x: float((x.double().mean(1) ** 2).sum() / (x.double() ** 2).sum(1).mean()),
         "wrong dimension.*x.mean\\(0\\)"),
        ("norms not squared", lambda x: float(x.double().mean(0).norm() / x.double().norm(dim=1).mean()), "not squared"),
        ("ratio per token", lambda x: float(((x.double().mean(0) ** 2).sum() / (x.double() ** 2).sum(1)).mean()),
         "per-token ratios"),
        ("square of mean norm", lambda x: float((x.double().mean(0) ** 2).sum() / x.double().norm(dim=1).mean() ** 2),
         r"square of the mean norm"),
        ("sum over tokens", lambda x: float((x.double().mean(0) ** 2).sum() / (x.double() ** 2).sum()), r"divide by N"),
        ("variance share", lambda x: 1.0 - right_mean_share(x), r"1 − m.*share of the variance"),
        ("a vector", lambda x: x.double().mean(0) ** 2 / (x.double() ** 2).sum(1).mean(), "one number"),
    ],
    "check_clamp_edit": [
        ("error term dropped", lambda sae, i, c, x: right_clamp_edit(sae, i, c, x, keep_error=False),
         r"drops the SAE's error term"),
        ("b_dec forgotten", lambda sae, i, c, x: (lambda z: z @ sae.W_dec / sae.cfg.input_scale)(
            sae.encode(x).index_fill(1, torch.tensor([i]), c)), r"decoder bias b_dec is missing"),
        ("sign flipped", lambda sae, i, c, x: right_clamp_edit(sae, i, c, x, sign=-1.0), "sign of the edit is flipped"),
        ("input scale ignored", lambda sae, i, c, x: right_clamp_edit(sae, i, c, x, scale_power=0), "input scale is ignored"),
        ("scale multiplied", lambda sae, i, c, x: right_clamp_edit(sae, i, c, x, scale_power=1), r"multiplied W_dec\[i\]"),
        ("current code not subtracted", lambda sae, i, c, x: right_clamp_edit(sae, i, c, x, subtract=False),
         r"added c·d_i whatever"),
        ("pre-activation", lambda sae, i, c, x: right_clamp_edit(sae, i, c, x, use_code=False), "not its pre-activation"),
        ("encoder column", lambda sae, i, c, x: right_clamp_edit(sae, i, c, x, row=sae.W_enc[:, i]), "encoder column"),
        ("in place", lambda sae, i, c, x: x.add_(right_clamp_edit(sae, i, c, x.clone()) - x), "in place"),
    ],
    "check_match_norm": [
        ("not normalised", lambda u, sae, i: right_match_norm(u, sae, i, normalise=False), "not normalised"),
        ("encoder column", lambda u, sae, i: right_match_norm(u, sae, i, row=sae.W_enc[:, i]), "encoder column"),
        ("input scale ignored", lambda u, sae, i: right_match_norm(u, sae, i, scale_power=0), "input scale is ignored"),
        ("scale multiplied", lambda u, sae, i: right_match_norm(u, sae, i, scale_power=1), "multiplied by the input scale"),
        ("unit norm", lambda u, sae, i: u / u.norm(), "has norm 1"),
        ("decoder row itself", lambda u, sae, i: sae.W_dec[i] / sae.cfg.input_scale, "decoder row d_i itself"),
        ("sign flipped", lambda u, sae, i: right_match_norm(u, sae, i, sign=-1.0), "sign is flipped"),
    ],
    "check_log_odds": [
        ("last column", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, pos=lambda m, lg: [lg.shape[1] - 1] * len(m)),
         r"last column, logits\[:, -1\].*pad position"),
        ("first pad", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, pos=lambda m, lg: m.sum(1)), r"position after"),
        ("after BOS", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, pos=lambda m, lg: [0] * len(m)), "after BOS"),
        ("sign flipped", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, sign=-1.0), "sign is flipped"),
        ("probabilities", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, probs=True), "subtracted probabilities"),
        ("log-softmax over positions", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, dim=1), r"over the positions \(dim=1\)"),
        ("mean over pairs", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, reduce=lambda t: t.mean(1)),
         "averaged over the pairs"),
        ("transposed", lambda lg, m, f, ml: right_log_odds(lg, m, f, ml, reduce=lambda t: t.T), "transposed"),
    ],
}


@pytest.mark.parametrize("check, wrong, says", mutation_cases(MUTATIONS))
def test_defect29_02_check_names_the_mistake(check, wrong, says):
    check_rejects(check, wrong, says)


def test_a_hook_left_behind_is_removed_from_the_shared_tiny_model():
    loaded = ex.tiny.tiny_gemma3()
    ex.check_residual_stream(right_residual_stream)  # transformers installs its own capturing hooks once
    before = {n: (list(m._forward_hooks), list(m._forward_pre_hooks)) for n, m in loaded.model.named_modules()}
    with pytest.raises(AssertionError, match="still registered"):
        ex.check_residual_stream(_leaves_hook)
    assert {n: (list(m._forward_hooks), list(m._forward_pre_hooks)) for n, m in loaded.model.named_modules()} == before
    ex.check_residual_stream(right_residual_stream)  # the model works as before


# ----------------------------------------------------------------------------- the package disagreeing
def test_package_disagreeing_with_the_reference_is_not_blamed_on_the_reader(monkeypatch):
    monkeypatch.setattr(am.lm.hooks, "residual_stream", lambda model, ids, layer: _hidden(model, ids, layer))
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_residual_stream(right_residual_stream)
    monkeypatch.setattr(am.lm.stats, "mean_share", lambda x: 0.5)
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_mean_share(right_mean_share)
    real = am.lm.steering.clamp_latent
    monkeypatch.setattr(am.lm.steering, "clamp_latent",
                        lambda sae, i, c, layer=None: real(sae, i, -c, layer))  # the sign flipped
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_clamp_edit(right_clamp_edit)
    monkeypatch.setattr(am.lm.steering, "match_norm", lambda u, sae, i, x=None: u / u.norm())
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_match_norm(right_match_norm)
    monkeypatch.setattr(am.lm.steering, "_prompt_log_odds", lambda loaded, seqs, f, m: torch.zeros(len(seqs), len(f)))
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_log_odds(right_log_odds)


def test_a_stub_stops_with_its_hint():
    def my_clamp_edit(sae, latent, value, x):
        raise NotImplementedError("hint: x + (value - z_i) * d_i")

    with pytest.raises(ex.NotWrittenYet, match=r"your my_clamp_edit is not written yet — hint: x \+"):
        ex.check_clamp_edit(my_clamp_edit)
