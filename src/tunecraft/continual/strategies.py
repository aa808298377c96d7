"""Continual-learning strategies, one class each behind a registry: naive, replay, ewc, lwf, adapters.

Every strategy trains each task with the same `train()` job (same loop, same steps); they differ only in
what they hand it: the training data (replay), extra loss terms (ewc, lwf), or the model (adapters).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from ..data.dataset import LabelMap, collate
from ..errors import ConfigError
from ..plugins import LossTerm
from ..runtime.inference import autocast_context, predict_logits
from ..tasks import Task, build_task
from ..train import train


@dataclass
class LoadedTask:
    """One task of the stream, loaded and tokenized once for every strategy."""

    index: int
    name: str
    data: object
    """The task's ClassificationData (train / test; validation is empty: no model selection)."""
    test_enc: object
    meta: dict

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.data.label_map.labels)


@dataclass
class Stream:
    config: object
    """The ContinualConfig."""
    tasks: list[LoadedTask]
    base: object
    """The base model (models.Base): its weights start the stream, its tokenizer encodes every task."""
    autocast_dtype: torch.dtype | None
    overwrite: bool = True
    classifier: Task = field(default_factory=lambda: build_task("classification"))
    """The stream's task (every stream task is a classification): its head, encoding and metrics."""

    @property
    def pad_id(self) -> int:
        return self.base.tokenizer.pad_token_id

    def fresh_model(self, task: LoadedTask) -> nn.Module:
        """The base with a new head, initialised from the recipe's seed (the same for every strategy)."""
        transformers.set_seed(self.config.seed)
        return self.classifier.build_model(self.base, task.data.label_map, self.config.model.dropout)


def training_data(task: LoadedTask, extra: list | None = None):
    """What train() gets for a task: its training examples (plus `extra`), no validation, no test (the stream
    scores every task's test split itself)."""
    extra = extra or []
    description = task.data.description + (f" + {len(extra)} replayed examples" if extra else "")
    return replace(task.data, train=task.data.train + extra, validation=[], test=[], description=description)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class Strategy:
    """Learns the stream task by task. Subclasses set `name` and `Config` and override `learn`/`logits`."""

    name = ""

    def __init__(self, cfg, stream: Stream):
        self.cfg, self.stream = cfg, stream

    def check(self) -> None:
        """Refuse a stream this strategy cannot learn, before any training."""

    def learn(self, i: int) -> dict:
        """Train task i; return train()'s summary."""
        raise NotImplementedError

    def logits(self, j: int) -> torch.Tensor | None:
        """Logits on task j's test split with the model as it is now; None if task j cannot be scored yet."""
        raise NotImplementedError

    def extra_memory(self) -> tuple[int, str]:
        """(bytes the strategy holds beyond the model being trained, what they are)."""
        return 0, "none"

    def diagnostics(self) -> dict:
        """Strategy-specific numbers for the results file."""
        return {}

    def accuracy(self, j: int) -> float | None:
        logits = self.logits(j)
        if logits is None:
            return None
        task = self.stream.tasks[j]
        return self.stream.classifier.evaluate(logits, task.test_enc, task.data.label_map)["accuracy"]


class Sequential(Strategy):
    """One model trained task after task (sequential fine-tuning). Tasks with the same label set share one
    classification head; a task with a new label set gets a new head, selected by label set."""

    name = "naive"

    def __init__(self, cfg, stream: Stream):
        super().__init__(cfg, stream)
        self.model: nn.Module | None = None
        self.heads: dict[tuple[str, ...], nn.Module] = {}

    def check(self) -> None:
        method = self.stream.config.method.name
        if method not in ("full", "freeze"):
            raise ConfigError(f"method.name: the {self.name} strategy trains one model in place and needs "
                              f"method full or freeze, not '{method}' (per-task LoRA is the adapters strategy)")

    def use_head(self, labels: tuple[str, ...]) -> None:
        head = self.model.classifier
        if labels not in self.heads:
            if self.heads:
                head = nn.Linear(head.in_features, len(labels))
                self.model._init_weights(head)
            self.heads[labels] = head
        self.model.classifier = self.heads[labels]
        for other in self.heads.values():  # a head set aside is used (LwF, replay, scoring), never trained
            if other is not self.model.classifier:
                other.requires_grad_(False)
        self.model.num_labels = len(labels)
        self.model.config.id2label = dict(enumerate(labels))
        self.model.config.label2id = {name: k for k, name in enumerate(labels)}

    def learn(self, i: int) -> dict:
        task = self.stream.tasks[i]
        if self.model is None:
            self.model = self.stream.fresh_model(task)
        self.use_head(task.labels)
        self.before(i)
        config = self.stream.config.task_config(i, self.name)
        summary = train(config, overwrite=self.stream.overwrite, model=self.model,
                        data=training_data(task, self.replayed(i)), plugins=self.plugins(i))
        # accelerate leaves a plain forward bound on the instance after unwrapping; the class's is the same
        self.model.__dict__.pop("forward", None)
        self.after(i)
        return summary

    def logits(self, j: int) -> torch.Tensor | None:
        task = self.stream.tasks[j]
        if self.model is None or task.labels not in self.heads:
            return None
        self.use_head(task.labels)
        return predict_logits(self.model, task.test_enc, 64, self.stream.pad_id, torch.device("cpu"),
                              self.stream.autocast_dtype)

    # what the subclasses change
    def before(self, i: int) -> None:
        pass

    def after(self, i: int) -> None:
        pass

    def replayed(self, i: int) -> list:
        return []

    def plugins(self, i: int) -> list:
        """The step plug-ins (tunecraft/plugins.py) that keep task i from overwriting the earlier ones."""
        return []


class Naive(Sequential):
    name = "naive"


class FeatureTap:
    """Keeps the input of a model's classification head from the last forward pass (the pooled features)."""

    def __init__(self, head: nn.Module):
        self.features = None
        self.handle = head.register_forward_pre_hook(self._keep)

    def _keep(self, module, args) -> None:
        self.features = args[0]

    def remove(self) -> None:
        self.handle.remove()


class Reservoir:
    """A bounded, uniform sample of everything added so far (Vitter's algorithm R), reproducible by seed."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng, self.items, self.seen = size, random.Random(seed), [], 0

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            k = self.rng.randrange(self.seen)
            if k < self.size:
                self.items[k] = item


class Replay(Sequential):
    """Earlier tasks' training examples, kept in a bounded reservoir, are replayed while later tasks train:
    those with the current task's label set are mixed into its training data; those of other label sets go
    through their own head as an extra loss term (a few per micro-batch, in proportion to their share)."""

    name = "replay"

    def __init__(self, cfg, stream: Stream):
        super().__init__(cfg, stream)
        self.memory = Reservoir(cfg.memory_size, stream.config.seed)
        """Items: (label set, example)."""
        self.foreign: dict[tuple[str, ...], object] = {}
        self.share: dict[tuple[str, ...], float] = {}
        self.tap: FeatureTap | None = None
        self.rng = random.Random(0)

    def replayed(self, i: int) -> list:
        labels = self.stream.tasks[i].labels
        return [example for task_labels, example in self.memory.items if task_labels == labels]

    def before(self, i: int) -> None:
        task = self.stream.tasks[i]
        by_labels: dict[tuple[str, ...], list] = {}
        for labels, example in self.memory.items:
            if labels != task.labels:
                by_labels.setdefault(labels, []).append(example)
        seen = len(task.data.train) + len(self.replayed(i))
        self.foreign = {labels: self.stream.classifier.encode(self.stream.base.tokenizer, examples, task.meta,
                                                      LabelMap(list(labels)))
                        for labels, examples in by_labels.items()}
        self.share = {labels: len(examples) / (seen + len(examples)) for labels, examples in by_labels.items()}
        self.rng = random.Random(self.stream.config.seed * 1000 + i)
        self.tap = FeatureTap(self.model.classifier) if self.foreign else None

    def foreign_replay(self, model, outputs, batch) -> torch.Tensor:
        """The summed loss of a few memory examples of other label sets, each set through its own head."""
        total, device = torch.zeros(()), batch["input_ids"].device
        for labels, enc in self.foreign.items():
            n = min(len(enc), max(1, math.ceil(batch["input_ids"].shape[0] * self.share[labels])))
            replay = collate(enc, self.rng.sample(range(len(enc)), n), self.stream.pad_id)
            targets = replay.pop("labels").to(device)
            model(**{k: v.to(device) for k, v in replay.items()})  # the tap keeps the features
            with autocast_context(device, self.stream.autocast_dtype):
                logits = self.heads[labels](self.tap.features)
            total = total + F.cross_entropy(logits.float(), targets, reduction="sum")
        return total

    def plugins(self, i: int) -> list:
        return [LossTerm(self.foreign_replay)] if self.foreign else []

    def after(self, i: int) -> None:
        if self.tap:
            self.tap.remove()
            self.tap = None
        task = self.stream.tasks[i]
        for example in task.data.train:
            self.memory.add((task.labels, example))

    def extra_memory(self) -> tuple[int, str]:
        size = sum(len(e.text.encode()) + len(str(e.label).encode()) for _, e in self.memory.items)
        return size, f"{len(self.memory.items)} stored examples (text bytes)"


def diagonal_fisher(model: nn.Module, enc, pad_id: int) -> dict[nn.Parameter, torch.Tensor]:
    """The empirical diagonal Fisher: the mean over examples of each trainable parameter's squared gradient of
    the example's log-likelihood (one backward pass per example, fp32, dropout off)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = {p: torch.zeros_like(p) for p in params}
    was_training = model.training
    model.eval()
    for k in range(len(enc)):
        batch = collate(enc, [k], pad_id)
        labels = batch.pop("labels")
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(**batch).logits.float(), labels).backward()
        for p in params:
            if p.grad is not None:
                fisher[p] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {p: f / len(enc) for p, f in fisher.items()}


class Ewc(Sequential):
    """Elastic weight consolidation (Kirkpatrick et al. 2017), online form (Schwarz et al. 2018): after each
    task its diagonal Fisher is added to the running one and the anchor moves to the new weights; the loss
    gains λ/2 · Σ F (θ − θ*)²."""

    name = "ewc"

    def __init__(self, cfg, stream: Stream):
        super().__init__(cfg, stream)
        self.fisher: dict[nn.Parameter, torch.Tensor] = {}
        self.anchor: dict[nn.Parameter, torch.Tensor] = {}
        self.last_penalty: float | None = None
        self.penalties: list[float | None] = []
        """The penalty at the last step of each task (a check that the strength is of a useful size)."""

    def after(self, i: int) -> None:
        self.penalties.append(self.last_penalty)
        if i == len(self.stream.tasks) - 1:
            return  # no later task to protect it from
        task = self.stream.tasks[i]
        rng = random.Random(self.stream.config.seed + i)
        chosen = rng.sample(task.data.train, min(self.cfg.fisher_samples, len(task.data.train)))
        enc = self.stream.classifier.encode(self.stream.base.tokenizer, chosen, task.meta, task.data.label_map)
        for p, f in diagonal_fisher(self.model, enc, self.stream.pad_id).items():
            self.fisher[p] = self.fisher[p] + f if p in self.fisher else f
        self.anchor = {p: p.detach().clone() for p in self.fisher}

    def penalty(self) -> torch.Tensor:
        """λ/2 · Σ F (θ − θ*)² over the parameters of the live model (a swapped-out head is not trained)."""
        total = torch.zeros(())
        for p in self.model.parameters():
            if p in self.fisher:
                total = total + (self.fisher[p] * (p.float() - self.anchor[p]) ** 2).sum()
        return self.cfg.strength / 2 * total

    def term(self, model, outputs, batch) -> torch.Tensor:
        # the loop sums terms over examples and divides by their count: scale so each step gets the penalty once
        penalty = self.penalty()
        self.last_penalty = float(penalty.detach())
        return penalty * batch["input_ids"].shape[0]

    def plugins(self, i: int) -> list:
        return [LossTerm(self.term)] if self.fisher else []

    def extra_memory(self) -> tuple[int, str]:
        return tensor_bytes([*self.fisher.values(), *self.anchor.values()]), "diagonal Fisher + anchor weights"

    def diagnostics(self) -> dict:
        return {"penalty_at_end_of_each_task": self.penalties}


class Lwf(Sequential):
    """Learning without forgetting (Li & Hoiem 2017): the previous model's outputs on the new task's inputs,
    for every head it had, are distillation targets (T² · KL at temperature T)."""

    name = "lwf"

    def __init__(self, cfg, stream: Stream):
        super().__init__(cfg, stream)
        self.previous: tuple[nn.Module, dict] | None = None
        self.taps: tuple[FeatureTap, FeatureTap] | None = None

    def before(self, i: int) -> None:
        if self.previous is not None:
            old_model, _ = self.previous
            self.taps = (FeatureTap(self.model.classifier), FeatureTap(old_model.classifier))

    def after(self, i: int) -> None:
        if self.taps:
            for tap in self.taps:
                tap.remove()
            self.taps = None
        old_model, old_heads = copy.deepcopy((self.model, self.heads))
        old_model.requires_grad_(False).eval()
        self.previous = (old_model, old_heads)

    def distillation(self, model, outputs, batch) -> torch.Tensor:
        old_model, old_heads = self.previous
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad(), autocast_context(batch["input_ids"].device, self.stream.autocast_dtype):
            old_live = old_model(**inputs).logits
        new_features, old_features = self.taps[0].features, self.taps[1].features
        T, total = self.cfg.temperature, torch.zeros(())
        for labels, old_head in old_heads.items():
            with autocast_context(batch["input_ids"].device, self.stream.autocast_dtype):
                with torch.no_grad():
                    old = old_live if old_head is old_model.classifier else old_head(old_features)
                new = outputs.logits if self.heads[labels] is model.classifier else self.heads[labels](new_features)
            total = total + F.kl_div(F.log_softmax(new.float() / T, dim=-1), F.softmax(old.float() / T, dim=-1),
                                     reduction="sum") * T * T
        return self.cfg.strength * total

    def plugins(self, i: int) -> list:
        return [LossTerm(self.distillation)] if self.previous is not None else []

    def extra_memory(self) -> tuple[int, str]:
        if self.previous is None:
            return 0, "previous model"
        old_model, old_heads = self.previous
        tensors = {id(t): t for t in [*old_model.parameters(), *old_model.buffers(),
                                      *(p for h in old_heads.values() for p in h.parameters())]}
        return tensor_bytes(tensors.values()), "frozen copy of the previous model"


class Adapters(Strategy):
    """One LoRA adapter (and head) per task on one frozen base, selected by task id: no parameter a task
    uses is touched by a later task. Adapters are trained by train() with method lora and loaded back from
    each task's run folder into one peft model."""

    name = "adapters"

    def __init__(self, cfg, stream: Stream):
        super().__init__(cfg, stream)
        self.model = None
        self.trainable: dict[str, int] = {}

    def check(self) -> None:
        label_sets = {t.labels for t in self.stream.tasks}
        if len(label_sets) > 1:
            raise ConfigError("strategies: adapters needs every task of the stream to share one label set "
                              f"(found {len(label_sets)}: {sorted(label_sets)})")

    def learn(self, i: int) -> dict:
        from peft import PeftModel

        task = self.stream.tasks[i]
        method = {"name": "lora", "r": self.cfg.r, "alpha": self.cfg.alpha}
        config = self.stream.config.task_config(i, self.name, method=method,
                                                train={"lr": self.cfg.lr} if self.cfg.lr else None)
        summary = train(config, overwrite=self.stream.overwrite, model=self.stream.fresh_model(task),
                        data=training_data(task))
        adapter = config.run_dir / "adapter"
        if self.model is None:
            self.model = PeftModel.from_pretrained(self.stream.fresh_model(task), str(adapter), adapter_name=task.name)
        else:
            self.model.load_adapter(str(adapter), adapter_name=task.name)
        self.model.eval()
        self.trainable[task.name] = summary["trainable_params"]
        return summary

    def logits(self, j: int) -> torch.Tensor | None:
        task = self.stream.tasks[j]
        if task.name not in self.trainable:
            return None
        self.model.set_adapter(task.name)
        return predict_logits(self.model, task.test_enc, 64, self.stream.pad_id, torch.device("cpu"),
                              self.stream.autocast_dtype)

    def extra_memory(self) -> tuple[int, str]:
        return 4 * sum(self.trainable.values()), f"{len(self.trainable)} adapters + heads (fp32)"


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Naive, Replay, Ewc, Lwf, Adapters)}


def get_strategy(cfg, stream: Stream) -> Strategy:
    return STRATEGIES[cfg.name](cfg, stream)
