"""Where a CPU training step's time goes, and what MFU that leaves: the full fine-tune step of all-MiniLM-L6-v2 that
benchmarks/train_throughput.py measures (batch 32, bf16 autocast, fused AdamW, clipping at 1.0, the loop's CPU
dropout), timed phase by phase (zero_grad, forward, backward, clipping, optimizer step) at several sequence lengths,
the lengths interleaved round by round so that the machine's load falls on all of them.

A least-squares line through the step times splits a step into a cost paid once per step whatever its tokens (the
optimizer and clipping over all 22.7 M weights, the weight casts, Python and dispatch) and a cost per token. The
per-token cost is set against the model's FLOPs per token at the bf16 matmul peak measured in the same run (the MFU
of train_throughput.py), which says what each part costs in MFU at the `mr` job's 860 tokens per step.

    python benchmarks/train_step_costs.py [--lengths 8 16 27 40 64] [--rounds 5] [--steps 3] [--tokens 860]
                                          [--watch N] [--compile layers|model] [--loop N]

--watch N: afterwards, N rounds of the matmul peak and the median of 5 steps at the job's length, one after the
other: whether the machine's speed for the step moves with its matmul peak (it does not on a host whose memory
bandwidth is shared).
--compile layers: each encoder layer through `torch.compile` with static shapes (one compile per length);
--compile model: the whole model through `torch.compile(dynamic=True)` (one compile for all lengths). The first
step at each length, compile included, is printed.
--loop N: instead, inside one training process of the job (a 3,200-sentence slice of `mr`), the loop's own
`train_step` on the epoch's first N length-grouped batches against a bare step (forward, loss, backward, clipping,
optimizer) on the same collated batch, alternating, 3 rounds: what the loop's bookkeeping costs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time

import torch
from cpu_dropout import batch, minilm_full_finetune
from train_throughput import flops_per_token, matmul_peak_gflops, tunecraft_config

from tunecraft.train.dropout import masked_dropout

PHASES = ("zero_grad", "forward", "backward", "clip", "optimizer")


def timed_step(model, optimizer, ids, mask, labels) -> dict[str, float]:
    """One training step as the loop runs it on CPU; milliseconds per phase."""
    marks = [time.perf_counter()]
    optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    marks.append(time.perf_counter())
    loss.backward()
    marks.append(time.perf_counter())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    marks.append(time.perf_counter())
    optimizer.step()
    marks.append(time.perf_counter())
    return {phase: (b - a) * 1000 for phase, a, b in zip(PHASES, marks, marks[1:])}


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through the points."""
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 27, 40, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per length and round")
    parser.add_argument("--watch", type=int, default=0)
    parser.add_argument("--compile", choices=["layers", "model"])
    parser.add_argument("--loop", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=860, help="tokens per step of the job to read the costs at "
                        "(train_throughput.py: 32 × 26.9 on mr)")
    args = parser.parse_args()
    if args.loop:
        loop_against_bare(args.loop)
        return

    from transformers import AutoConfig

    from tunecraft.assets import model_path

    peak = matmul_peak_gflops()
    model, optimizer = minilm_full_finetune()
    config = AutoConfig.from_pretrained(model_path("minilm-l6"))
    if args.compile == "layers":
        for layer in model.bert.encoder.layer:
            layer.compile(dynamic=False)
    elif args.compile == "model":
        model.compile(dynamic=True)
    batches = {length: batch(length) for length in args.lengths}
    times: dict[int, dict[str, list[float]]] = {length: {p: [] for p in PHASES} for length in args.lengths}
    with masked_dropout(model):
        first = {}  # warm-up: the first step at a shape (a compile with --compile) is not measured
        for length in args.lengths:
            first[length] = sum(timed_step(model, optimizer, *batches[length]).values()) / 1000
        for _ in range(args.rounds):
            for length in args.lengths:
                for _ in range(args.steps):
                    for phase, ms in timed_step(model, optimizer, *batches[length]).items():
                        times[length][phase].append(ms)

    def ideal_ms(length: float) -> float:  # the model's FLOPs for one token at the measured peak
        return flops_per_token(config, length) / (peak * 1e9) * 1000

    compiled = "" if not args.compile else (
        f" Compiled ({args.compile}); first step at each length: "
        + ", ".join(f"{length}: {seconds:.1f} s" for length, seconds in first.items()) + ".")
    print(f"\n## Training step costs — {dt.date.today().isoformat()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}\n")
    print(f"Full fine-tune step of all-MiniLM-L6-v2, batch 32, bf16 autocast, fused AdamW, clipping, the loop's CPU "
          f"dropout; median of {args.rounds} rounds × {args.steps} steps per length (interleaved). Measured bf16 "
          f"matmul peak (2048³): {peak:.0f} GFLOP/s.{compiled}\n")
    print("| length | tokens | " + " | ".join(f"{p} (ms)" for p in PHASES) + " | step (ms) | MFU (%) |")
    print("|---" * (len(PHASES) + 4) + "|")
    tokens, steps = [], []
    for length in args.lengths:
        medians = {p: statistics.median(times[length][p]) for p in PHASES}
        # the step's median, not the sum of the phases' medians
        step = statistics.median(map(sum, zip(*(times[length][p] for p in PHASES))))
        n = 32 * length
        tokens.append(n)
        steps.append(step)
        print(f"| {length} | {n} | " + " | ".join(f"{medians[p]:.1f}" for p in PHASES) +
              f" | {step:.1f} | {100 * n * ideal_ms(length) / step:.1f} |")
    fixed, per_token = line_fit(tokens, steps)
    length = args.tokens / 32
    ideal = ideal_ms(length)
    step = fixed + per_token * args.tokens
    print(f"\nLine through the step times: **{fixed:.1f} ms per step + {per_token * 1000:.0f} µs per token**; the "
          f"model's FLOPs per token at the peak take {ideal * 1000:.0f} µs (the per-token work runs at "
          f"{ideal / per_token:.0%} of the peak).\n")
    print(f"At {args.tokens} tokens per step: {step:.0f} ms, MFU {ideal * args.tokens / step:.1%}. The fixed cost is "
          f"{fixed / step:.0%} of that step: without it, MFU {ideal / per_token:.1%}; with the per-token work at the "
          f"peak and the fixed cost kept, MFU {ideal * args.tokens / (fixed + ideal * args.tokens):.1%}.")
    if args.watch:
        job_length = round(length)
        watch(model, optimizer, batch(job_length), 32 * job_length * flops_per_token(config, job_length), args.watch)


def watch(model, optimizer, job_batch, step_flops: float, rounds: int) -> None:
    """The matmul peak and the step, measured one after the other `rounds` times: their spread side by side, and
    the MFU of each round against its own peak."""
    rows = []
    with masked_dropout(model):
        for _ in range(rounds):
            peak = matmul_peak_gflops()
            step = statistics.median(sum(timed_step(model, optimizer, *job_batch).values()) for _ in range(5))
            rows.append((peak, step, step_flops / (peak * 1e9) / (step / 1000)))
    print(f"\n{rounds} rounds of (matmul peak, median of 5 steps at {job_batch[0].shape[1]} tokens × 32):\n")
    print("| | min | max | max / min |\n|---|---|---|---|")
    for name, i, scale in (("bf16 matmul peak (GFLOP/s)", 0, 1), ("step (ms)", 1, 1), ("MFU (%)", 2, 100)):
        lo, hi = min(r[i] for r in rows), max(r[i] for r in rows)
        print(f"| {name} | {lo * scale:.1f} | {hi * scale:.1f} | {hi / lo:.3f} |")


def loop_against_bare(windows: int, rounds: int = 3) -> None:
    """The loop's `train_step` against a bare step on the same batches, built as `tunecraft train` builds them."""
    from tunecraft.train.job import prepare_job
    from tunecraft.train.loop import pad_multiple
    from tunecraft.train.session import RunSession

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as out:
        config = tunecraft_config(out, train_samples=3200)
        job = prepare_job(config)
        session = RunSession(config)
        session.start(job.model, job.train_enc.lengths)
        loop = session.loop(job.model, job.task, job.train_enc, None, job.data.label_map,
                            job.tokenizer.pad_token_id, job.method.plugins(job.model, job.task, session.steps))
        model = session.acc.unwrap_model(loop.model)
        optimizer = session.optimizer.optimizer  # under accelerate's wrapper

        def bare(window: list[list[int]]) -> float:
            (rows,) = window
            batch = job.task.collate(job.train_enc, rows, job.tokenizer.pad_token_id, pad_multiple(session.acc.device))
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = job.task.loss_sum(model(**job.task.model_inputs(batch)), batch) / len(rows)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return time.perf_counter() - start

        def looped(window: list[list[int]]) -> float:
            start = time.perf_counter()
            loop.train_step(window)
            return time.perf_counter() - start

        times: dict[str, list[float]] = {"loop": [], "bare": []}
        with masked_dropout(model):  # as the loop's run() does on CPU
            chosen = loop.epoch_windows(0)[:windows]
            looped(chosen[0]), bare(chosen[0])
            for _ in range(rounds):
                for window in chosen:
                    times["loop"].append(looped(window))
                    times["bare"].append(bare(window))
        tokens = sum(job.train_enc.lengths[i] for window in chosen for i in window[0])
    loop_ms, bare_ms = (statistics.mean(times[k]) * 1000 for k in ("loop", "bare"))
    print(f"\nThe loop's train_step against a bare step on the same {len(chosen)} batches ({tokens / len(chosen):.0f} "
          f"tokens each on average), alternating, {rounds} rounds: **{loop_ms:.1f} against {bare_ms:.1f} ms per "
          f"step ({loop_ms / bare_ms - 1:+.1%})**.")


if __name__ == "__main__":
    main()
