"""Load test of `tunecraft serve` on loopback: latency at low load, throughput under 200 concurrent clients,
with micro-batching on and off, one run (or compressed variant folder), same machine. Bounded: a fixed number of
requests, timeouts. --pin puts the server on its own cores (all but the first) and this load generator on the
first, so that the two do not take turns on one core; the server's thread count follows its affinity.

    python benchmarks/serve_load.py RUN [--precision bf16] [--pin] [--batching on off] [--clients 200]
                                        [--requests 50] [--low-load 200]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time

import httpx
from server_process import percentile, start_server, stop_server

TEXTS = ["a gorgeous, witty, deeply moving film", "a dull, lifeless and boring mess", "the plot is thin",
         "one of the best performances of the year", "i walked out halfway through", "it is a film"]


async def low_load(url: str, n: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    latencies = []
    for i in range(n + 20):
        start = time.perf_counter()
        status = await _request(reader, writer, host, json.dumps({"texts": [TEXTS[i % len(TEXTS)]]}).encode())
        elapsed = time.perf_counter() - start
        if status != 200:
            sys.exit(f"low-load request failed with {status}")
        if i >= 20:  # warm-up
            latencies.append(elapsed * 1000)
    writer.close()
    return {"p50": statistics.median(latencies), "p99": percentile(latencies, 0.99)}


async def _request(reader, writer, host: str, body: bytes) -> int:
    """One keep-alive HTTP/1.1 POST on an open connection; returns the status. A minimal client on raw
    asyncio streams: httpx's own overhead capped a 200-client run at ~60 requests/s on these 2 cores."""
    writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json"
                 b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def high_load(url: str, clients: int, per_client: int) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}  # status code or exception → count
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"texts": [t]}).encode() for t in TEXTS]

    async def one_client(c: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in range(per_client):
                start = time.perf_counter()
                try:
                    body = bodies[(c + i) % len(bodies)]
                    status = await asyncio.wait_for(_request(reader, writer, host, body), 60)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as err:
                    status = type(err).__name__
                latencies.append((time.perf_counter() - start) * 1000)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*[one_client(c) for c in range(clients)]), timeout=900)
    wall = time.perf_counter() - start
    return {"requests": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "rps": len(latencies) / wall,
            "p50": statistics.median(latencies), "p99": percentile(latencies, 0.99), "wall": wall}


def server_sums(url: str) -> dict[str, float]:
    """The server's own cumulative counts: time of /v1/classify requests inside the app (its middleware's
    latency) and of batches on the inference thread (tokenize, forward, decode), items and batches."""
    wanted = {'tunecraft_request_latency_seconds_sum{route="/v1/classify"}': "request_sum",
              'tunecraft_request_latency_seconds_count{route="/v1/classify"}': "request_count",
              "tunecraft_inference_seconds_sum": "inference_sum",
              "tunecraft_inference_seconds_count": "inference_count",
              "tunecraft_batch_size_sum": "items", "tunecraft_batch_size_count": "batches"}
    values = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            values[wanted[name]] = float(value)
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", help="a run folder, e.g. runs/mr-lora (make demo writes it)")
    parser.add_argument("--clients", type=int, default=200, help="0: the low-load latency only")
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--low-load", type=int, default=200, help="sequential requests for the low-load latency")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="the server's --precision")
    parser.add_argument("--batching", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--pin", action="store_true", help="server on all CPUs but the first, this process on it")
    args = parser.parse_args()

    server_cpus = None
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin:
        if len(cpus) < 2:
            sys.exit("--pin needs at least 2 CPUs")
        server_cpus = set(cpus[1:])
        os.sched_setaffinity(0, {cpus[0]})
    load_start = os.getloadavg()
    rows = {}
    for name in args.batching:
        # uvicorn answers 503 once its open connections or its request tasks reach --max-connections (default
        # 128); a client's next request can arrive while its last one's task is still finishing: twice the clients
        options = ["--max-connections", str(2 * args.clients + 8), *([] if name == "on" else ["--no-batching"]),
                   *(["--precision", args.precision] if args.precision else [])]
        proc, url = start_server(args.run, *options, cpus=server_cpus)
        try:
            before = server_sums(url)
            low = asyncio.run(low_load(url, args.low_load))
            after = server_sums(url)
            for part in ("request", "inference"):
                count = after[f"{part}_count"] - before.get(f"{part}_count", 0)
                low[f"{part}_mean"] = 1000 * (after[f"{part}_sum"] - before.get(f"{part}_sum", 0)) / max(count, 1)
            high = {"requests": 0, "errors": 0, "error_kinds": {}, "rps": 0, "p50": 0, "p99": 0, "mean_batch": 0}
            if args.clients:
                high = asyncio.run(high_load(url, args.clients, args.requests))
                done = server_sums(url)
                high["mean_batch"] = (done["items"] - after["items"]) / max(done["batches"] - after["batches"], 1)
        finally:
            stop_server(proc)
        rows[name] = (low, high)

    placement = (f"server on CPUs {sorted(server_cpus)}, load generator on CPU {cpus[0]}" if server_cpus
                 else "server and load generator share them")
    print(f"\n## Serving load — {dt.date.today().isoformat()}, {platform.machine()}, {len(cpus)} cores "
          f"({placement}), run `{args.run}`, precision {args.precision or 'default'}\n")
    print(f"load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}\n")
    print(f"Low load: {args.low_load} sequential requests of one short text. High load: {args.clients} concurrent "
          f"clients × {args.requests} requests of one short text each, over loopback.\n")
    print("| batching | low-load p50 (ms) | low-load p99 (ms) | low-load mean: in the app / on the inference thread "
          "(ms) | high-load requests | errors | requests/s | p50 (ms) | p99 (ms) | mean batch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (low, high) in rows.items():
        kinds = ", ".join(f"{k}: {v}" for k, v in high["error_kinds"].items())
        print(f"| {name} | {low['p50']:.2f} | {low['p99']:.2f} | {low['request_mean']:.2f} / "
              f"{low['inference_mean']:.2f} | {high['requests']} | {high['errors']}"
              f"{f' ({kinds})' if kinds else ''} | {high['rps']:.0f} | {high['p50']:.1f} | {high['p99']:.1f} | "
              f"{high['mean_batch']:.1f} |")
    if len(rows) == 2:
        ratio = rows["on"][1]["rps"] / rows["off"][1]["rps"]
        print(f"\nbatching on / off throughput: **{ratio:.2f}×**")


if __name__ == "__main__":
    main()
