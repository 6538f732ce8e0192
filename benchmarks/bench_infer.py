"""Inference speed: encode + decode tokens/s, sparse vs dense paths, k/d_sae from 0.2 % to 2 %.

    PYTHONPATH=. python benchmarks/bench_infer.py
    PYTHONPATH=. python benchmarks/bench_infer.py --d-sae 4096 --fractions 0.005,0.01 --arch topk

* sparse: ``sae(x)`` (:func:`abstopk_mini.kernels.fast.reconstruct`): dense u, top-k, embedding-bag decode of
  the k rows per token; no [B, d_sae] code is built.
* dense:  ``sae.decode(sae.encode(x))``: the same u and top-k, then a dense z [B, d_sae] and
  z @ W_dec.
* SAELens (``--saelens``): its AbsTopKSAE / TopKSAE ``decode(encode(x))`` on the same weights.

Both our paths compute the dense encoder product u = (s·x − b_dec) W_enc + b_enc (B·d_in·d_sae
multiply-adds, the same for every k): an exact top-k needs all of u. The sparse path removes the
dense z and the decoder product; the encoder product bounds the ratio (see the note printed at
the end). Timings: the median of ``--repeats`` calls after one warm-up, under ``torch.no_grad``,
by default in CPU time of this process with one torch thread (other jobs on a shared machine
cannot inflate it; ``--clock wall --threads 2`` for wall-clock figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import abstopk_mini as am
from abstopk_mini.kernels import fast


CLOCK = time.process_time  # set by --clock


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def _saelens_twin(sae: am.SAE):
    from sae_lens import AbsTopKSAE, AbsTopKSAEConfig, TopKSAE, TopKSAEConfig

    cls, cfg_cls = (AbsTopKSAE, AbsTopKSAEConfig) if sae.cfg.activation == "abstopk" else (TopKSAE, TopKSAEConfig)
    twin = cls(cfg_cls(d_in=sae.cfg.d_in, d_sae=sae.cfg.d_sae, k=sae.cfg.k, device="cpu"))
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(twin, name).copy_(getattr(sae, name))
    return twin.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-in", type=int, default=640)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--fractions", default="0.002,0.005,0.01,0.02", help="comma list of k/d_sae")
    ap.add_argument("--arch", default="abstopk", choices=["abstopk", "topk"])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--saelens", action="store_true", help="also time SAELens on the same weights")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is then a clean measure of work)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="CPU time of this process (robust on a shared machine) or wall clock")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    need = 4 * (3 * args.batch * args.d_sae + 2 * args.d_in * args.d_sae)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} "
          f"(other processes share this machine), {args.clock} clock; peak ~{need / 2**30:.1f} GiB", file=sys.stderr)
    available = _mem_available()
    if need > 0.8 * available:
        print(f"# d_sae={args.d_sae}, batch={args.batch} needs ~{need / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is "
              "available; pass a smaller --batch", file=sys.stderr)
        return 1
    x = torch.randn(args.batch, args.d_in, generator=torch.Generator().manual_seed(0))
    enc_only = None
    for frac in (float(f) for f in args.fractions.split(",")):
        k = max(1, round(frac * args.d_sae))
        sae = am.SAE(am.SAEConfig(d_in=args.d_in, d_sae=args.d_sae, activation=args.arch, k=k, device="cpu")).eval()
        with torch.no_grad():
            sparse = _median_seconds(lambda: sae(x), args.repeats)
            dense = _median_seconds(lambda: sae.decode(sae.encode(x)), args.repeats)
            if enc_only is None:
                enc_only = _median_seconds(lambda: sae.pre_acts(x), args.repeats)
            torch.testing.assert_close(sae(x), sae.decode(sae.encode(x)), rtol=1e-4, atol=1e-4)
            row = dict(arch=args.arch, d_in=args.d_in, d_sae=args.d_sae, k=k, k_frac=k / args.d_sae, batch=args.batch,
                       sparse_tok_s=args.batch / sparse, dense_tok_s=args.batch / dense, ratio=dense / sparse)
            if args.saelens:
                twin = _saelens_twin(sae)
                theirs = _median_seconds(lambda: twin.decode(twin.encode(x)), args.repeats)
                row.update(saelens_tok_s=args.batch / theirs, sparse_vs_saelens=theirs / sparse)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            extra = f"  SAELens {row['saelens_tok_s']:8.0f} tok/s (sparse {row['sparse_vs_saelens']:.2f}x)" if args.saelens else ""
            print(f"{args.arch} d_sae={args.d_sae} k={k:4d} ({100 * row['k_frac']:.1f} %)  sparse {row['sparse_tok_s']:8.0f} tok/s  "
                  f"dense {row['dense_tok_s']:8.0f} tok/s  ratio {row['ratio']:.2f}x{extra}", flush=True)
    print(f"# the encoder product alone runs at {args.batch / enc_only:.0f} tok/s: the ceiling of any exact top-k path; "
          f"load average at the end {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
