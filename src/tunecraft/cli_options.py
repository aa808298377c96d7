"""The options of the commands whose Python functions take plain keywords (the recipe commands, eval, predict,
chat, robustness, explain, report, assets, and what compress, export and serve take beside their own settings
classes). Each is a settings class: `cli.py` generates the command's arguments from its fields
(`settings.add_options`) and builds it back from them (`settings.from_args`), so every flag's name, type,
choices, default and help live once, here. Light: nothing here imports torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from .export.settings import TARGETS
from .serve.settings import ServeSettings
from .settings import Arg, Strict

Positional = Arg(positional=True)
"""A list positional that may be empty (`overrides`, `texts`)."""


# -- the recipe commands: RECIPE [dotted.key=value ...] ---------------------------------------------------------

class RecipeArgs(Strict):
    recipe: str
    """The recipe (YAML)."""
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value"""

    def load(self, loader: Callable[[str, list[str]], Any]) -> Any:
        """The recipe through its command's schema (`loader`, e.g. config.load_config), with the overrides."""
        return loader(self.recipe, self.overrides)


class ProgressRecipeArgs(RecipeArgs):
    progress: bool = True
    """Show progress bars while training."""

    def load(self, loader: Callable[[str, list[str]], Any]) -> Any:
        config = super().load(loader)
        if not self.progress:
            config.train.progress = False
        return config


class TrainArgs(ProgressRecipeArgs):
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value, e.g. train.lr=3e-4 method.r=16"""
    resume: bool = False
    """continue the run from its latest checkpoint"""
    overwrite: bool = False
    """replace an existing run folder"""


class PretrainArgs(TrainArgs):
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value, e.g. train.max_steps=100"""


class ContinualArgs(ProgressRecipeArgs):
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value, e.g. train.max_steps=30 seed=1"""
    overwrite: bool = False
    """replace an existing continual run folder"""


class DoctorArgs(RecipeArgs):
    recipe: str
    """The recipe (YAML), or a run folder."""
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value, e.g. data.max_train_samples=500"""


class TokenizerArgs(RecipeArgs):
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value, e.g. vocab_size=16000"""
    overwrite: bool = False
    """replace an existing tokenizer folder"""


class PlanArgs(RecipeArgs):
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value, e.g. train.batch_size=64"""
    steps: int = 5
    """timed optimizer steps per layout (after one warm-up)"""
    memory_budget: str | None = None
    """e.g. 4GB, 512MB, 8GiB: the model's peak must fit"""
    auto: bool = False
    """choose the layout that fits the budget at the best speed"""
    processes: int = 1
    """estimate time for N data-parallel processes"""
    out: str | None = None
    """--auto: write the recipe with the chosen layout here"""
    json_path: Annotated[str | None, Arg(flag="--json", metavar="JSON")] = None
    """write every measurement as JSON here"""


class TuneArgs(ProgressRecipeArgs):
    overrides: Annotated[list[str], Positional] = []
    """dotted.key=value, e.g. data.max_train_samples=500"""
    overwrite: bool = False
    """replace an existing search folder"""
    space: str | None = None
    """a YAML file with the search settings (a `tune:` mapping)"""
    trials: int | None = None
    """number of trials (overrides tune.trials)"""


# -- the commands over a run folder --------------------------------------------------------------------------

class RunArgs(Strict):
    run: str
    """The run folder."""


class EvalArgs(RunArgs):
    data: Annotated[str, Arg(flag="--data")]
    """mr, amazon, tweets, nyt, pd-ner, or a CSV/TSV/JSONL/Parquet/CoNLL file"""
    split: Literal["train", "validation", "test", "all"] = "test"
    """for bundled sets: which seeded split (the run's own seed), or all"""
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "conll"] = "auto"
    """auto: from the suffix (for NER runs: .jsonl spans, anything else CoNLL)"""


class PredictArgs(RunArgs):
    texts: Annotated[list[str], Positional] = []
    """The texts to label."""
    file: str | None = None
    """a .txt file (one text per line) or CSV/TSV/JSONL/Parquet"""
    text_column: str = "text"
    """--file: the column of the texts (CSV/TSV/JSONL/Parquet)"""
    as_json: Annotated[bool, Arg(flag="--json")] = False
    """print one JSON object per line"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: fp32 for generative runs, else bf16 where the hardware has it, else fp32 (as `serve --precision`)"""


class ChatArgs(RunArgs):
    run: str
    """The causal_lm run folder."""
    system: str | None = None
    """a system message to start the conversation with"""
    max_new_tokens: int | None = None
    """default: the recipe's task.generation.max_new_tokens"""
    temperature: float | None = None
    """0 is greedy (default: the recipe's)"""
    top_p: float | None = None
    """nucleus sampling's probability mass (default: the recipe's)"""


class RobustnessArgs(RunArgs):
    run: str
    """The classification run folder."""
    ood: Annotated[list[str] | None, Arg(many=True)] = None
    """out-of-domain sets (bundled names or files); default: the other bundled sentiment sets"""
    perturbations: Annotated[list[Literal["typos", "casing", "punctuation", "word-drop", "negation"]] | None,
                             Arg(many=True)] = None
    """default: all"""
    seed: int = 0
    """seed of the perturbations"""
    max_examples: int | None = None
    """cap every evaluated set (a seeded sample)"""


class ExplainArgs(RunArgs):
    run: str
    """The classification run folder."""
    text: str
    """The text whose prediction is explained."""
    target: str | None = None
    """attribute toward this label (default: the predicted one)"""
    steps: int = 50
    """integration steps"""
    html: str | None = None
    """where to write the HTML (default: RUN/explanations/<hash>.html)"""
    color: bool = True
    """colour the tokens in the terminal (where it is one)"""


class CompressArgs(RunArgs):
    run: str
    """a fine-tuned classification or causal_lm run folder"""
    variants: list[str]
    """e.g. int8 onnx distill-3l prune-50 (or all); causal_lm runs: int8 int4 gguf-f16 gguf-q8_0 gguf-q4_0 (or
    all)"""
    out: str | None = None
    """folder for the variants and the report (default: RUN/compressed)"""
    bench: bool = True
    """measure the variants (--no-bench: make them, skip the measurements)"""
    overwrite: bool = False
    """replace existing variant folders"""
    progress: bool = True
    """Show progress bars while distilling and measuring."""


class ExportArgs(RunArgs):
    run: str
    """a causal_lm run folder"""
    target: Annotated[Literal[TARGETS], Arg(flag="--for")]
    """hf: merged HF folder; vllm: base + LoRA adapter (or merged); ollama: GGUF + Modelfile; gguf: the GGUF file
    alone (llama.cpp)"""
    out: str | None = None
    """the folder to write (default: RUN/export/<target>)"""
    overwrite: bool = False
    """replace an existing export folder"""


class ServeLoras(Strict):
    """`ServeSettings.lora` as the command line spells it."""

    lora_runs: Annotated[list[str], Arg(flag="--lora", metavar="NAME=RUN")] = Field(
        [], description=ServeSettings.model_fields["lora"].description)


class ReportArgs(Strict):
    runs: list[str]
    """run folders (a shell glob such as runs/sweep-* works)"""
    out: str | None = None
    """also write comparison.md, comparison.csv and comparison.png to this folder"""


class AssetsArgs(Strict):
    action: Literal["fetch", "list"]
    """fetch: install the bundled models and datasets; list: name them"""
