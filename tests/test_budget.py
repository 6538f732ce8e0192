"""abstopk_mini.budget: per-token budget of top-k SAEs, against counts made by hand."""
import pytest
import scipy.stats
import torch

import abstopk_mini as am
from abstopk_mini.budget import READINGS, row_code, spearman, token_budget


def _identity_sae(activation: str, k: int, d: int = 4) -> am.SAE:
    """W_enc = I, W_dec = I, no biases, s = 1: u = x, and x̂ = z. Each reading is then countable by hand."""
    sae = am.SAE(am.SAEConfig(d_in=d, d_sae=d, activation=activation, k=k, device="cpu"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


# two blocks of B = 2 tokens; the batch rule keeps the k·B = 2 largest |x| (or ReLU(x)) of each block
X = torch.tensor([[5.0, -4.0, 0.1, 0.0],
                  [0.2, 0.1, -0.3, 0.0],
                  [1.0, 0.0, 0.0, 0.0],
                  [-2.0, 3.0, 0.0, 0.0]])


def test_batchabstopk_budget_by_hand():
    sae = _identity_sae("batchabstopk", k=1)
    sae.act.threshold.fill_(0.5)  # threshold reading: |x| > 0.5
    b = token_budget(sae, X, eval_batch_size=2)
    # batch: block 1 keeps 5, -4 (both token 0); block 2 keeps 3, -2 (both token 3)
    batch = b["batch"]
    assert batch["l0_mean"] == 1.0 and batch["share_zero"] == 0.5 and batch["share_below_quarter_k"] == 0.5
    kept = torch.tensor([[5.0, -4.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [-2.0, 3.0, 0, 0]])
    centred = (X - X.mean(0)).pow(2).sum()
    assert batch["fvu"] == pytest.approx(float((X - kept).pow(2).sum() / centred), rel=1e-6)
    assert batch["negative_share"] == 0.5  # -4 and -2 of four non-zeros
    assert batch["top_decile_share"] == 0.5  # the top 10 % of 4 tokens is one token: 2 of 4 non-zeros
    err = (X - kept).pow(2).sum(1)
    assert batch["error_share_below_quarter_k"] == pytest.approx(float(err[[1, 2]].sum() / err.sum()), rel=1e-6)
    # threshold: 5, -4 | none | 1 | -2, 3
    assert b["threshold"]["l0_mean"] == pytest.approx(5 / 4)
    # row: the largest |x| of each token, sign kept
    z = row_code(sae, X)
    assert torch.equal(z, torch.tensor([[5.0, 0, 0, 0], [0, 0, -0.3, 0], [1.0, 0, 0, 0], [0, 3.0, 0, 0]]))
    assert b["row"]["l0_mean"] == 1.0 and b["row"]["share_zero"] == 0.0
    assert b["row"]["negative_share"] == 0.25


def test_batchtopk_keeps_only_positive_scores():
    sae = _identity_sae("batchtopk", k=1)
    sae.act.threshold.fill_(0.5)
    b = token_budget(sae, X, eval_batch_size=2)
    # block 1: ReLU scores 5, 0.2, 0.1, 0.1 -> 5 (token 0) and 0.2 (token 1); block 2: 3 (token 3) and 1 (token 2)
    assert b["batch"]["l0_mean"] == 1.0 and b["batch"]["share_zero"] == 0.0
    assert b["batch"]["negative_share"] == 0.0
    assert torch.equal(row_code(sae, X), torch.tensor([[5.0, 0, 0, 0], [0.2, 0, 0, 0], [1.0, 0, 0, 0], [0, 3.0, 0, 0]]))


def test_per_token_sae_reads_alike_and_matches_evaluate():
    """For TopK/AbsTopK the three readings are one rule, and FVU is evaluate_sae's."""
    torch.manual_seed(0)
    sae = am.SAE(am.SAEConfig(d_in=8, d_sae=32, activation="abstopk", k=3, device="cpu")).eval()
    x = torch.randn(256, 8)
    b = token_budget(sae, x, eval_batch_size=64)
    for r in READINGS:
        assert b[r]["l0_mean"] == 3.0 and b[r]["share_zero"] == 0.0
        assert b[r]["l0_norm_spearman"] is None  # L0 is k on every token: no rank correlation
        assert b[r]["fvu"] == pytest.approx(b["row"]["fvu"], rel=1e-12)
    assert b["row"]["fvu"] == pytest.approx(am.evaluate.evaluate_sae(sae, x)["fvu"], rel=1e-5)


def test_trailing_partial_block_is_dropped():
    sae = _identity_sae("batchabstopk", k=1)
    assert token_budget(sae, X[:3], eval_batch_size=2)["n_tokens"] == 2


def test_spearman_matches_scipy_with_ties():
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 5, (200,), generator=gen)
    b = a.double() + torch.randn(200, generator=gen, dtype=torch.float64)
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.numpy(), b.numpy()).statistic, rel=1e-10)
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)


def test_bad_input():
    relu = am.SAE(am.SAEConfig(d_in=4, d_sae=4, activation="relu", device="cpu"))
    with pytest.raises(ValueError, match="activation='relu'"):
        token_budget(relu, X)
    sae = _identity_sae("batchabstopk", k=1)
    with pytest.raises(ValueError, match=r"d_in=4"):
        token_budget(sae, torch.randn(4, 5))
    with pytest.raises(ValueError, match="eval_batch_size=0"):
        token_budget(sae, X, eval_batch_size=0)
    with pytest.raises(ValueError, match="eval_batch_size=9"):
        token_budget(sae, X, eval_batch_size=9)
