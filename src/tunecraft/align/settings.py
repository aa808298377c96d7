"""The settings of online RL (task: rl): the algorithm and its reward functions. Apart from config.py so that the
rl task and its rewards can read them without importing the recipe schema (which imports the task registry)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..settings import Strict


class RewardConfig(Strict):
    """One reward function of an RL run (task: rl), named by the one key of `run`, `regex`, `exact`, `length`,
    `function` it sets. Rewards of a list are summed with their weights."""

    weight: float = 1.0
    run: str | None = None
    """A tunecraft run folder (a classifier, a reward model): the reward is a number of its `predict` row."""
    label: str | None = None
    """run: the label whose probability is the reward (its `probabilities.<label>`)."""
    field: str | None = None
    """run: the dotted field of its predict row that is the reward (e.g. `reward`), instead of a label."""
    text: Literal["full", "completion"] = "full"
    """run, regex: score the prompt followed by the completion, or the completion alone (chat prompts: always the
    completion)."""
    regex: str | None = None
    """1 when the pattern is found (re.search), else 0."""
    exact: bool | None = None
    """1 when the completion (stripped, first line) equals the prompt row's `answer`, else 0."""
    length: int | None = Field(None, ge=1)
    """A target length in words: 1 at the target, falling linearly to 0 at twice it (or at none)."""
    function: str | None = None
    """`module:function`, imported and called as function(prompts, completions, answers) → list of floats (it runs
    your code)."""

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("run", "regex", "exact", "length", "function") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a reward sets exactly one of run, regex, exact, length, function (got "
                             f"{', '.join(kinds) or 'none'})")
        if self.run is None and (self.label or self.field):
            raise ValueError("label and field belong to a run reward")
        if self.run is not None and (self.label is None) == (self.field is None):
            raise ValueError("a run reward names either a label (its probability) or a field of the predict row")
        return self


class RlConfig(Strict):
    """Online RL (task: rl): sample `group_size` completions per prompt, score them, and optimise the clipped
    objective against group-relative advantages with a KL penalty to the reference (GRPO, Shao et al. 2024)."""

    algorithm: Literal["grpo", "rloo"] = "grpo"
    """grpo: advantage = (reward − group mean) / (group std + 1e-4); rloo: reward − the mean of the group's other
    completions (Ahmadian et al. 2024)."""
    group_size: int = Field(4, ge=2, le=64)
    """Completions sampled per prompt (k)."""
    beta: float = Field(0.04, ge=0.0)
    """Weight of the per-token KL to the reference (the k3 estimator); 0 skips the reference pass."""
    epsilon: float = Field(0.2, gt=0.0, lt=1.0)
    """Clip range of the probability ratio."""
    loss_type: Literal["grpo", "dapo"] = "grpo"
    """grpo: each completion's token mean, averaged over completions (count = completions); dapo: the mean over
    every completion token of the step (count = completion tokens). TRL's loss_type of the same names."""
    max_new_tokens: int = Field(24, ge=1, le=1024)
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature of the rollouts and the held-out completions (log-probs use the same)."""
    rewards: list[RewardConfig] = []
    opening_words: int = Field(5, ge=1, le=32)
    """Bundled sentiment sets: the prompt is a sentence's first this many words."""
    eval_samples: int = Field(2, ge=1, le=16)
    """Completions sampled per held-out prompt when scoring."""
    show_samples: int = Field(6, ge=0)
    """Held-out completions shown in the report (beside the base model's)."""
