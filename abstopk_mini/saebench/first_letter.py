r"""The first-letter task of SAEBench's feature absorption (Chanin et al. 2024, "A is for Absorption";
``sae_bench.evals.absorption``): words, prompts, the residual at the word, and the two probes.

1. **Words** (:func:`alpha_tokens`): every vocabulary entry made only of the letters a-z / A-Z after
   one optional leading space, as the tokenizer writes it back (``" cat"``, ``"Cat"``); SAEBench's
   ``get_alpha_tokens``. A seeded shuffle splits them 80 / 20 into train and test words
   (:func:`split_words`); Gemma's 262k-entry vocabulary has far more than a CPU needs, so
   ``n_words`` of them are kept (SAEBench keeps all).
2. **Prompts** (:func:`icl_prompt`): ten in-context examples and the word, newline first::

       \n{w1} has the first letter: W\n ... \n{w10} has the first letter: X\n{word} has the first letter:

   The residual stream after block L is read at the word's last token (:func:`word_positions`; for
   Gemma's tokenizer the 6th from the end, where SAEBench reads it).
3. **The letter probe** (:func:`train_probe`): 26 one-vs-rest logistic regressions on the
   residual, trained together (BCE with positives weighted by negatives / positives, Adam lr 1e-2
   decaying to 1e-5 over 50 epochs, weight decay 1e-4, batch 64). Its weight row p_ℓ is the
   ground-truth direction "starts with ℓ".
4. **The letter's main latents** (:func:`main_latents`): an L1-penalised probe on all SAE codes
   (:func:`sparse_probe_weights`) ranks latents per letter by weight (largest first: latents that *predict* the letter); for
   k = 1..10 a logistic regression on the top k (scikit-learn, balanced classes) is scored by F1 on
   the test words; k grows while F1 gains more than 0.03 ("feature splitting"), and the top k at
   the last gain are the letter's main latents.

Shapes: residuals x [n, d_model]; codes z [n, F]; letters y [n] in 0..25.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch

__all__ = ["LETTERS", "TEMPLATE", "WORD_POSITION", "alpha_tokens", "first_letter", "letter_index", "icl_prompt",
           "split_words", "word_positions", "word_residuals", "train_probe", "f1_score", "SPARSE_PROBE_BATCH",
           "sparse_probe_weights", "k_sparse_f1", "feature_splits", "main_latents"]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEMPLATE = "{word} has the first letter:"
#: the word's last token, counted from the end of a prompt: " has", " the", " first", " letter", ":" follow it
WORD_POSITION = -6
_ALPHA = set(LETTERS + LETTERS.upper())


def alpha_tokens(tokenizer) -> list[str]:
    """Every vocabulary entry that is letters only (after one leading space), as text, in token-id order
    (SAEBench takes the tokenizer's dict order, which is not the same from one call to the next)."""
    words = []
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        word = tokenizer.convert_tokens_to_string([token])
        if token.startswith("▁") and not word.startswith(" "):  # SAEBench's fix for SentencePiece tokenizers
            word = " " + word
        bare = word[1:] if word.startswith(" ") else word
        if bare and all(c in _ALPHA for c in bare):
            words.append(word)
    return words


def first_letter(word: str) -> str:
    """``" C"`` for ``" cat"``: a space and the first letter, capitalised (the answer the prompt asks for)."""
    letters = [c for c in word.strip() if c.isalpha()]
    if not letters:
        raise ValueError(f"word {word!r} has no letter")
    return " " + letters[0].upper()


def letter_index(word: str) -> int:
    """0..25: the word's first letter."""
    return LETTERS.index(first_letter(word).strip().lower())


def icl_prompt(word: str, examples: Sequence[str], rng: random.Random, n_examples: int = 10) -> str:
    """The prompt for ``word``: ``n_examples`` other words drawn by ``rng`` from ``examples``, each
    with its answer, then the word (module docstring). The draw is redone while it holds the word."""
    if n_examples > len(examples) - 1:
        raise ValueError(f"{n_examples} in-context examples need at least {n_examples + 1} words to draw from; got "
                         f"{len(examples)}. Use fewer examples (icl_examples, CLI: --icl-examples) or more words (--n-words)")
    for _ in range(1000):
        chosen = rng.sample(list(examples), n_examples)
        if word not in chosen:
            break
    else:
        raise ValueError(f"could not draw {n_examples} examples without {word!r} in 1,000 tries; pass more examples")
    lines = [TEMPLATE.format(word=w) + first_letter(w) for w in chosen]
    return "\n" + "\n".join(lines) + "\n" + TEMPLATE.format(word=word)


def split_words(words: Sequence[str], n_words: int | None, seed: int, train_share: float = 0.8
                ) -> tuple[list[str], list[str]]:
    """A seeded shuffle of ``words``, the first ``n_words`` kept (None: all), cut 80 / 20."""
    order = random.Random(seed).sample(list(words), len(words))
    if n_words is not None:
        order = order[:n_words]
    cut = int(len(order) * train_share)
    if cut == 0 or cut == len(order):
        raise ValueError(f"{len(order)} words cannot be split into train and test; pass n_words >= 5")
    return order[:cut], order[cut:]


def word_positions(tokenizer, prompts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids of each prompt (BOS first) and the position of the word's last token: the token that
    holds the word's last character, found from the tokenizer's character offsets (Gemma's and GPT-2's
    tokenizers: :data:`WORD_POSITION` from the end, SAEBench's fixed position)."""
    suffix = len(TEMPLATE.format(word=""))
    enc = tokenizer(list(prompts), add_special_tokens=False, return_offsets_mapping=True)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    seqs, where = [], []
    for prompt, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
        last = len(prompt) - suffix - 1  # the word's last character
        hits = [i for i, (a, b) in enumerate(offsets) if a <= last < b]
        if not hits:
            raise ValueError(f"no token holds the word's last character in {prompt[-60:]!r}")
        seqs.append(bos + list(ids))
        where.append(len(bos) + hits[-1])
    return seqs, where


@torch.no_grad()
def word_residuals(loaded, prompts: Sequence[str], layer: int, *, batch_size: int = 32) -> torch.Tensor:
    """The residual stream after block ``layer`` at each prompt's word (its last token,
    :func:`word_positions`), BOS first as the model reads text. shape: n prompts -> [n, d_model] float32"""
    from ..lm.hooks import pad, residual_stream

    info = loaded.info
    seqs, where = word_positions(loaded.tokenizer, prompts)
    config = loaded.model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    longest = max(len(s) for s in seqs)
    if limit is not None and longest > limit:
        raise ValueError(f"a first-letter prompt has {longest} tokens, more than the model's {limit} positions; "
                         "use fewer in-context examples (icl_examples, CLI: --icl-examples)")
    out = []
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start:start + batch_size]
        ids, mask = pad(batch, info.pad_token_id if info.pad_token_id is not None else 0)
        x = residual_stream(loaded, ids, layer, mask)
        pos = torch.tensor(where[start:start + batch_size], device=x.device)
        out.append(x[torch.arange(len(batch), device=x.device), pos].float().cpu())
    return torch.cat(out)


def _one_hot(y: torch.Tensor, n: int = 26) -> torch.Tensor:
    return torch.nn.functional.one_hot(y.long(), n).float()


def train_probe(x: torch.Tensor, y: torch.Tensor, *, epochs: int = 50, lr: float = 1e-2, end_lr: float = 1e-5,
                weight_decay: float = 1e-4, batch_size: int = 64, l1: float = 0.0, seed: int = 0, zero_init: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""26 one-vs-rest logistic regressions trained together: minimise
    :math:`\mathrm{BCE}_{w_+}(xW^\top + b,\ \mathrm{onehot}(y)) + l_1 \cdot \mathrm{mean}_\ell \|W_\ell\|_1` with
    Adam (lr decaying geometrically to ``end_lr`` over the epochs), positives weighted by
    negatives / positives per letter. Starts from nn.Linear's random initialisation (drawn from ``seed``),
    or from zeros (``zero_init``). Returns ``(W [26, F], b [26])``. shape: x [n, F], y [n]"""
    g = torch.Generator().manual_seed(seed)
    n, F = x.shape
    target = _one_hot(y)
    pos = target.sum(0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(n - pos) / pos.clamp(min=1))
    bound = 1 / math.sqrt(F)  # nn.Linear's initialisation, from our generator
    W = (torch.zeros(26, F) if zero_init else torch.empty(26, F).uniform_(-bound, bound, generator=g)).requires_grad_()
    b = (torch.zeros(26) if zero_init else torch.empty(26).uniform_(-bound, bound, generator=g)).requires_grad_()
    opt = torch.optim.Adam([W, b], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(end_lr / lr) / epochs))
    x = x.float()
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(n, generator=g).split(batch_size):
                loss = loss_fn(x[idx] @ W.T + b, target[idx])
                if l1:
                    loss = loss + l1 * W.abs().sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    return W.detach(), b.detach()


def f1_score(pred: torch.Tensor, true: torch.Tensor) -> float:
    """F1 of boolean predictions (0 when nothing is predicted or nothing is true)."""
    tp = int((pred & true).sum())
    denom = int(pred.sum()) + int(true.sum())
    return 2 * tp / denom if denom else 0.0


#: the L1 probe's batch: SAEBench's 4,096 takes ~1,400 Adam steps in its 50 epochs over a whole vocabulary
#: (Gemma-3: 80 % of 139,585 letter-only tokens), but only 100 over our 6,400 words, too few for the probe
#: to find a letter's latents (their F1 stayed mostly below 0.2); 256 takes ~1,250
SPARSE_PROBE_BATCH = 256


def sparse_probe_weights(codes: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """The L1 probe's weights over the codes (SAEBench's: l1 0.01, 50 epochs, weight decay 1e-6; our batch
    :data:`SPARSE_PROBE_BATCH`). It starts from zeros, so a latent that never fires keeps weight 0 and a
    TopK SAE's split view (every negative side silent) trains the same probe as its codes."""
    return train_probe(codes, y, batch_size=SPARSE_PROBE_BATCH, weight_decay=1e-6, l1=0.01, seed=seed, zero_init=True)[0]


def k_sparse_f1(codes_train, y_train, codes_test, y_test, weights: torch.Tensor, ks: Sequence[int] = range(1, 11)
                ) -> dict[int, list[tuple[list[int], float]]]:
    """For each k and letter: the top-k latents by probe weight and the test F1 of a balanced
    logistic regression on them. Returns ``{k: [(latents, f1) for each letter 0..25]}``."""
    from sklearn.linear_model import LogisticRegression

    out = {}
    for k in ks:
        rows = []
        for letter in range(26):
            feats = weights[letter].topk(k).indices.tolist()
            is_letter = (y_train == letter).numpy().astype(int)
            if is_letter.min() == is_letter.max():  # no word (or only words) of this letter to learn from
                rows.append((feats, 0.0))
                continue
            clf = LogisticRegression(max_iter=500, class_weight="balanced").fit(codes_train[:, feats].numpy(), is_letter)
            pred = torch.from_numpy(clf.predict(codes_test[:, feats].numpy())).bool()
            rows.append((feats, f1_score(pred, y_test == letter)))
        out[k] = rows
    return out


def feature_splits(f1_by_k: Sequence[float], jump: float = 0.03) -> int:
    """The k at the last step of F1 gains larger than ``jump`` (k = 1 always counts): the number of
    latents a letter is split into. f1_by_k: F1 at k = 1, 2, ..."""
    best, k = -100.0, 0
    for i, f1 in enumerate(f1_by_k, start=1):
        if f1 > best + jump:
            best, k = f1, i
        else:
            break
    return k


def main_latents(sweep: dict[int, list[tuple[list[int], float]]], jump: float = 0.03) -> list[dict]:
    """Per letter: its main latents (:func:`feature_splits` over the k-sparse sweep) and their F1."""
    ks = sorted(sweep)
    out = []
    for letter in range(26):
        k = feature_splits([sweep[k][letter][1] for k in ks], jump)
        feats, f1 = sweep[ks[k - 1]][letter]
        out.append({"letter": LETTERS[letter], "main": feats, "k": k, "f1": f1})
    return out
