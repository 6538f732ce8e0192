"""Tokens/s of the truncated forward (blocks 0..L only) vs the full forward with logits.

    python benchmarks/bench_harvest.py [--layers 3 6 9 12] [--batch 8] [--context 128] [--repeats 3]

Runs on the embedded Gemma-3-270M with wiki chunks of the offline corpus, under
torch.inference_mode(). Prints one row per layer and the speed-up over the full forward, then the
end-to-end rate of ``harvest`` (tokenize, forward, write shards) at the middle layer.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import abstopk_mini as am
from abstopk_mini.lm import activations as A
from abstopk_mini.lm import hooks as H
from abstopk_mini.lm import corpus as C


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 6, 9, 12])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--harvest-tokens", type=int, default=8192)
    args = parser.parse_args()

    start = time.perf_counter()
    loaded = am.lm.models.load_model()
    print(f"load_model(): {time.perf_counter() - start:.1f} s; torch threads {torch.get_num_threads()}, "
          f"device {next(loaded.model.parameters()).device}")
    docs = C.wiki_docs()
    chunks = C.chunk(loaded.tokenizer, docs, args.context)[: args.batch]
    ids, mask = H.pad(chunks, loaded.info.pad_token_id)
    n_tok = int(mask.sum())

    def full():
        with torch.inference_mode():
            loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    t_full = best_of(full, args.repeats)
    print(f"\nbatch {args.batch} x {args.context} tokens, median of {args.repeats}\n")
    print(f"{'layer':>5} {'blocks run':>10} {'truncated tok/s':>16} {'full tok/s':>11} {'speed-up':>9}")
    for layer in args.layers:
        t = best_of(lambda: H.residual_stream(loaded, ids, layer, mask), args.repeats)
        print(f"{layer:>5} {layer + 1:>7}/{loaded.info.n_layers:<2} {n_tok / t:>16.0f} {n_tok / t_full:>11.0f} "
              f"{t_full / t:>8.2f}x")

    layer = args.layers[len(args.layers) // 2]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        manifest = A.harvest(loaded, docs, layer, args.harvest_tokens, out, context_length=args.context,
                             batch_size=args.batch, shard_tokens=4096, text_source="wiki", progress=False)
        dt = time.perf_counter() - start
    print(f"\nharvest(layer={layer}, n_tokens={manifest['tokens_written']}): {dt:.1f} s, "
          f"{manifest['tokens_written'] / dt:.0f} tok/s end to end")


if __name__ == "__main__":
    main()
