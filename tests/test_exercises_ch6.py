"""am.exercises, chapter 6: the AbsTopK forward, the unit-norm decoder step, the FVU and the spliced CE.

The right answers are written here from the definitions (not the package's functions), each check
rejects the wrong implementations of MUTATIONS with a message naming the mistake, and a package that
disagrees with a check's independent reference raises PackageDisagrees, not a blame on the reader.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import abstopk_mini as am
from abstopk_mini import exercises as ex

from conftest import check_rejects, mutation_cases, readers_lines

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- right answers, written here
def right_sae_forward(sae, x, *, sub_bdec=True, scale_in=True, undo_scale=True, add_bdec=True, signed=True, dim=-1,
                      b_enc=True, sign_kept=True):
    s = sae.cfg.input_scale
    u = ((s if scale_in else 1.0) * x - (sae.b_dec if sub_bdec else 0.0)) @ sae.W_enc + (sae.b_enc if b_enc else 0.0)
    score = u.abs() if signed else u
    idx = score.topk(sae.cfg.k, dim=dim).indices
    vals = u.gather(dim, idx)
    vals = vals if signed else torch.relu(vals)
    z = torch.zeros_like(u).scatter(dim, idx, vals if sign_kept else vals.abs())
    x_hat = z @ sae.W_dec + (sae.b_dec if add_bdec else 0.0)
    return z, x_hat / (s if undo_scale else 1.0)


def right_fvu(x, x_hat):
    err = sum(((a - b) ** 2).sum().item() for a, b in zip(x, x_hat))
    mean = x.sum(0) / x.shape[0]
    return err / sum(((a - mean) ** 2).sum().item() for a in x)


def right_decoder_step(W, G, lr, *, project=True, renormalise=True, dim=1):
    rows = []
    for w, g in zip(W, G):
        if project:
            g = g - (g @ w) * w
        rows.append(w - lr * g)
    W_new = torch.stack(rows)
    return W_new / W_new.norm(dim=dim, keepdim=True) if renormalise else W_new


def right_spliced_ce(model, sae, ids, layer, *, replace_bos=False, count_bos=False, block=None, shift=True,
                     scaled=False, nats=True, mean=True, edit=True, swap=False):
    lm, bos = model.model, model.info.bos_token_id
    keep = torch.ones_like(ids, dtype=torch.bool) if replace_bos else ids != bos

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        h = h.clone()
        h[keep] = sae.forward_train(h[keep]).x_hat if scaled else sae(h[keep])
        if not edit:
            return None
        return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

    def ce(logits):
        scored = torch.ones_like(ids[:, :-1], dtype=torch.bool) if count_bos else ids[:, :-1] != bos
        pred, tgt = (logits[:, :-1], ids[:, 1:]) if shift else (logits[:, :-1], ids[:, :-1])
        total = F.cross_entropy(pred[scored].double(), tgt[scored], reduction="sum")
        total = total / (int(scored.sum()) if mean else 1)
        return (total / (1 if nats else math.log(2))).item()

    orig = ce(lm(input_ids=ids).logits)
    handle = lm.model.layers[layer if block is None else block].register_forward_hook(hook)
    try:
        spliced = ce(lm(input_ids=ids).logits)
    finally:
        handle.remove()
    return (spliced, orig) if swap else (orig, spliced)


def test_right_answers_written_here_pass(capsys):
    ex.check_sae_forward(right_sae_forward)
    ex.check_decoder_step(right_decoder_step)
    ex.check_fvu(right_fvu)
    ex.check_spliced_ce(right_spliced_ce)
    out = readers_lines(capsys, 4)
    assert "equals am.lm.splice.evaluate" in out[3] and "equal am.metrics.fvu" in out[2]


def test_reference_run_says_so(capsys):
    ex.check_fvu(ex.reference(lambda x, x_hat: right_fvu(x, x_hat)))
    line = capsys.readouterr().out
    assert line.startswith("✓ the FVU: ") and "ran on the book's reference solution" in line


def test_the_independent_references_on_hand_worked_cases():
    from abstopk_mini.exercises import sae_steps

    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # mean [2, 1]: Σ‖x − x̄‖² = 4
    assert sae_steps.fvu_loop(x.numpy(), torch.zeros_like(x).numpy()) == pytest.approx(14 / 4)
    W, G = torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0, 1.0]])  # the parallel 5 goes; w − 0.5·(0, 1), renormalised
    assert sae_steps.decoder_step_loop(W.numpy(), G.numpy(), 0.5)[0].tolist() == pytest.approx([2 / 5 ** 0.5, -1 / 5 ** 0.5])


# ----------------------------------------------------------------------------- mutations
MUTATIONS = {
    "check_sae_forward": [
        ("b_dec not subtracted", lambda sae, x: right_sae_forward(sae, x, sub_bdec=False), "b_dec is not subtracted"),
        ("input scale ignored", lambda sae, x: right_sae_forward(sae, x, scale_in=False, undo_scale=False),
         "input scale is ignored"),
        ("scale not undone", lambda sae, x: right_sae_forward(sae, x, undo_scale=False), "scale is not undone"),
        ("TopK", lambda sae, x: right_sae_forward(sae, x, signed=False), r"that is TopK.*\|u_i\|"),
        ("selection over the batch", lambda sae, x: right_sae_forward(sae, x, dim=0), "batch dimension"),
        ("b_dec not added back", lambda sae, x: right_sae_forward(sae, x, add_bdec=False), "not added back"),
        ("b_enc forgotten", lambda sae, x: right_sae_forward(sae, x, b_enc=False), "b_enc is missing"),
        ("sign lost", lambda sae, x: right_sae_forward(sae, x, sign_kept=False), "lost their sign"),
    ],
    "check_decoder_step": [
        ("no projection", lambda W, G, lr: right_decoder_step(W, G, lr, project=False), "not projected"),
        ("projection along columns", lambda W, G, lr: right_decoder_step(
            W, G - (G * W).sum(0, keepdim=True) * W, lr, project=False), "summed over the rows"),
        ("projecting the weights", lambda W, G, lr: right_decoder_step(
            W - (G * W).sum(1, keepdim=True) * W, G, lr, project=False), "applied to W_dec instead of grad"),
        ("not renormalised", lambda W, G, lr: right_decoder_step(W, G, lr, renormalise=False), "not renormalised"),
        ("columns renormalised", lambda W, G, lr: right_decoder_step(W, G, lr, dim=0), "normalised the columns"),
        ("ascent", lambda W, G, lr: right_decoder_step(W, G, -lr), "goes up the gradient"),
    ],
    "check_fvu": [
        ("not centred (nMSE)", lambda x, xh: ((x - xh) ** 2).sum() / (x ** 2).sum(), "not centred: that is the nMSE"),
        ("mean over the wrong dim", lambda x, xh: ((x - xh) ** 2).sum() / ((x - x.mean(1, keepdim=True)) ** 2).sum(),
         "each row's own mean"),
        ("mean of per-row ratios", lambda x, xh: (((x - xh) ** 2).sum(1) / ((x - x.mean(0)) ** 2).sum(1)).mean(),
         "mean of per-row ratios"),
        ("not squared", lambda x, xh: (x - xh).norm(dim=1).sum() / (x - x.mean(0)).norm(dim=1).sum(),
         "not squared"),
        ("variance explained", lambda x, xh: 1 - ((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(), "1 − FVU"),
        ("unbiased variance", lambda x, xh: ((x - xh) ** 2).mean() / x.var(0).mean(), r"N − 1"),
    ],
    "check_spliced_ce": [
        ("BOS replaced too", lambda m, s, i, L: right_spliced_ce(m, s, i, L, replace_bos=True), "BOS's residual was replaced"),
        ("BOS prediction counted", lambda m, s, i, L: right_spliced_ce(m, s, i, L, count_bos=True),
         "prediction made from BOS alone is counted"),
        ("layer off by one (before)", lambda m, s, i, L: right_spliced_ce(m, s, i, L, block=L - 1), "block L − 1"),
        ("layer off by one (after)", lambda m, s, i, L: right_spliced_ce(m, s, i, L, block=L + 1), "block L \\+ 1"),
        ("logits not shifted", lambda m, s, i, L: right_spliced_ce(m, s, i, L, shift=False), "against token p itself"),
        ("scaled space", lambda m, s, i, L: right_spliced_ce(m, s, i, L, scaled=True), "scaled space"),
        ("hook returns nothing", lambda m, s, i, L: right_spliced_ce(m, s, i, L, edit=False), "did not change the forward"),
        ("bits", lambda m, s, i, L: right_spliced_ce(m, s, i, L, nats=False), "in bits"),
        ("sum", lambda m, s, i, L: right_spliced_ce(m, s, i, L, mean=False), "summed"),
        ("swapped", lambda m, s, i, L: right_spliced_ce(m, s, i, L, swap=True), "swapped"),
    ],
}


@pytest.mark.parametrize("check, wrong, says", mutation_cases(MUTATIONS))
def test_check_names_the_mistake(check, wrong, says):
    check_rejects(check, wrong, says)


def test_wrong_return_types():
    with pytest.raises(AssertionError, match="pair of tensors"):
        ex.check_sae_forward(lambda sae, x: sae(x))
    with pytest.raises(AssertionError, match="one number"):
        ex.check_fvu(lambda x, xh: ((x - xh) ** 2).sum(0))
    with pytest.raises(AssertionError, match="pair"):
        ex.check_spliced_ce(lambda m, s, i, L: 1.0)
    with pytest.raises(AssertionError, match="shape"):
        ex.check_decoder_step(lambda W, G, lr: right_decoder_step(W, G, lr).T)


# ----------------------------------------------------------------------------- the package disagreeing is not the reader's fault
def test_package_fvu_disagreeing_raises_package_disagrees(monkeypatch):
    import abstopk_mini.metrics as metrics

    monkeypatch.setattr(metrics, "fvu", lambda x, x_hat: am.metrics.nmse(x, x_hat))
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_fvu(right_fvu)


def test_package_decoder_step_disagreeing_raises_package_disagrees(monkeypatch):
    monkeypatch.setattr(am.SAE, "remove_parallel_grad", lambda self: None)
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_decoder_step(right_decoder_step)


def test_package_splice_disagreeing_raises_package_disagrees(monkeypatch):
    import abstopk_mini.lm.splice as splice

    real = splice.edit_mask
    monkeypatch.setattr(splice, "edit_mask", lambda ids, mask, shape, bos, skip_bos=True: real(ids, mask, shape, bos, False))
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_spliced_ce(right_spliced_ce)


def test_package_forward_disagreeing_raises_package_disagrees(monkeypatch):
    monkeypatch.setattr(am.SAE, "pre_acts", lambda self, x: x.to(self.W_enc.dtype) @ self.W_enc)
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_sae_forward(right_sae_forward)
