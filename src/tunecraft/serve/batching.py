"""Dynamic micro-batching: request items queue up; a worker takes every item already waiting (up to
max_batch_size), optionally waits up to max_wait_ms for more, runs them as one forward pass, answers each.

With max_wait_ms=0 nothing waits: an idle server runs a lone request at once, and a busy one batches what
arrived while the previous forward pass ran. Every torch call runs on the one inference thread: when a
second thread also ran forward passes, both OpenMP thread pools spun on 2 cores and a MiniLM forward pass
went from 7.4 to 17 ms."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class MicroBatcher:
    def __init__(self, infer: Callable[[list], list] | None, max_batch_size: int = 32, max_wait_ms: float = 0.0,
                 on_batch: Callable[[int, float], None] | None = None):
        self.infer, self.max_batch_size, self.max_wait = infer, max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunecraft-infer")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._worker())

    async def run(self, fn: Callable, *args):
        """Run fn on the inference thread (model loading and warm-up go here too)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def stop(self) -> None:
        """Finish everything already queued, then stop."""
        await self.queue.join()
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, items: list) -> list:
        """Queue items (they may land in different batches) and wait for all their results, in order."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self.queue.put_nowait((item, future))
        return list(await asyncio.gather(*futures))

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.infer, [item for item, _ in batch])
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
            except Exception as err:  # answer every waiter, never hang one
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
            finally:
                if self.on_batch:
                    self.on_batch(len(batch), time.perf_counter() - start)
                for _ in batch:
                    self.queue.task_done()
