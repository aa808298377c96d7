"""`tunecraft export RUN --for hf|vllm|ollama|gguf`: a generative run as the folder a serving engine expects, the
command that serves it, and a check that the folder, loaded back, answers as the run does.

  hf      the merged model as a plain Hugging Face folder (transformers, TGI, `tunecraft serve`)
  vllm    base/ + adapter/ in vLLM's LoRA layout (`vllm serve base --enable-lora --lora-modules ...`), or merged
  ollama  model.gguf + a Modelfile with the run's chat template, system message and stop strings
  gguf    model.gguf alone (llama.cpp)

Everything a request could get wrong (target, type, task, method, architecture, tokenizer, an existing folder) is
refused before anything is written; the folder is written atomically.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunecraftError
from ..io import refuse_existing, write_folder, write_json, write_text
from ..models import resolve_base
from ..runs import META, read_meta, run_model_dir
from .settings import TARGETS, ExportSettings

# the check's prompts: chit-chat and short factual questions, as the bundled chat runs are trained on
PROMPTS = ["What is AI?", "Tell me a joke.", "Who are you?", "What is the capital of France?", "hello",
           "What is your favourite colour?", "My internet is not working.", "Can you help me write a poem?",
           "What do you like to do?", "How are you today?", "What is the weather like?", "Do you like music?"]
GGUF_FILE = "model.gguf"
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts


@dataclass
class Source:
    """The run being exported: its model folder, meta, and (for the adapter layout) adapter and base folders."""

    run: Path
    model_dir: Path
    meta: dict
    config: dict
    adapter: Path | None = None
    base: Path | None = None


def _adapter_rank(adapter: Path) -> dict:
    return json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))


def inspect(run: Path, target: str, settings: ExportSettings) -> Source:
    """The run, checked for `target`: every refusal happens here, before anything is written."""
    from ..tasks import build_task

    if target not in TARGETS:
        raise TunecraftError(f"unknown export target '{target}'; known: {', '.join(TARGETS)}")
    model_dir = run_model_dir(run)
    meta = read_meta(model_dir)
    task = build_task(meta)
    if not task.GENERATIVE:
        raise TunecraftError(f"{run}: export hands generative runs (causal LMs) to serving engines; this run's task "
                             f"'{meta['task']}' is not generative (a classifier goes to ONNX: tunecraft compress RUN "
                             "onnx)")
    if meta.get("format", "transformers") != "transformers":
        raise TunecraftError(f"{run}: export starts from a run's own model, not a compressed variant "
                             f"('{meta['format']}')")
    if meta.get("adapter_required"):
        raise TunecraftError(f"{run}: method '{meta.get('method')}' keeps its trained part outside the weights "
                             "(soft prompts or prefixes), which no serving engine loads; train with lora or full")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    source = Source(Path(run), model_dir, meta, config)
    if target in ("ollama", "gguf"):
        from .gguf_file import check_exportable

        check_exportable(_Config(config), settings.gguf_type)
        tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        if (tokenizer.get("model") or {}).get("type") != "BPE":
            raise TunecraftError(f"{model_dir}/tokenizer.json: GGUF export writes byte-level BPE tokenizers (as "
                                 "SmolLM2's); this one is not BPE")
    if target == "vllm" and settings.vllm_layout == "adapter":
        adapter = Path(run) / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise TunecraftError(f"{run}: no LoRA adapter in {adapter} (method '{meta.get('method')}'); export "
                                 "with --vllm-layout merged")
        peft = _adapter_rank(adapter)
        if peft.get("peft_type") != "LORA" or peft.get("use_dora"):
            raise TunecraftError(f"{adapter}: vLLM serves plain LoRA adapters (this one: {peft.get('peft_type')}"
                                 f"{', DoRA' if peft.get('use_dora') else ''}); export with --vllm-layout merged")
        if peft.get("modules_to_save"):
            raise TunecraftError(f"{adapter}: vLLM's LoRA loader does not take modules_to_save "
                                 f"({peft['modules_to_save']}); export with --vllm-layout merged")
        source.adapter, source.base = adapter, resolve_base(meta["base_model"])
    return source


class _Config:
    """config.json read as attributes (the GGUF checks need model_type only, before torch is imported)."""

    def __init__(self, raw: dict):
        self.__dict__.update(raw)


# -- the writers: each fills a temporary folder and returns (serving command, the check's loader) --------------

def _copy_model_files(source: Path, dest: Path) -> None:
    for path in source.iterdir():
        if path.is_file() and path.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model"):
            shutil.copy2(path, dest / path.name)


def write_hf(src: Source, tmp: Path, out: Path, settings: ExportSettings, name: str) -> str:
    _copy_model_files(src.model_dir, tmp)
    return f"tunecraft serve {out}"


def write_vllm(src: Source, tmp: Path, out: Path, settings: ExportSettings, name: str) -> str:
    if settings.vllm_layout == "merged":
        _copy_model_files(src.model_dir, tmp)
        return f"vllm serve {out} --served-model-name {name}"
    (tmp / "base").mkdir()
    for path in src.base.iterdir():  # the base's weights and config; the run's tokenizer (its chat template)
        if path.name in ("config.json", "generation_config.json") or path.name.startswith("model") and \
                path.name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copy2(path, tmp / "base" / path.name)
    for path in src.model_dir.iterdir():
        if path.is_file() and ("token" in path.name or path.suffix == ".jinja"):
            shutil.copy2(path, tmp / "base" / path.name)
    (tmp / "adapter").mkdir()
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(src.adapter / file, tmp / "adapter" / file)
    peft = _adapter_rank(src.adapter)
    peft["base_model_name_or_path"] = "../base"  # relative: the folder moves as one
    write_json(tmp / "adapter" / "adapter_config.json", peft)
    rank = next(r for r in VLLM_RANKS if r >= peft["r"])
    return (f"vllm serve {out}/base --enable-lora --lora-modules {name}={out}/adapter --max-lora-rank {rank} "
            f"--served-model-name {name}-base")


def _write_gguf_file(src: Source, tmp: Path, settings: ExportSettings, name: str) -> None:
    from ..trained import load_trained
    from .gguf_file import write_gguf

    trained = load_trained(src.model_dir)
    write_gguf(trained.model, trained.tokenizer, tmp / GGUF_FILE, settings.gguf_type, name=name)


def write_gguf_only(src: Source, tmp: Path, out: Path, settings: ExportSettings, name: str) -> str:
    _write_gguf_file(src, tmp, settings, name)
    return f"llama-server -m {out / GGUF_FILE} --jinja"


def write_ollama(src: Source, tmp: Path, out: Path, settings: ExportSettings, name: str) -> str:
    from transformers import AutoTokenizer

    from .ollama import modelfile

    _write_gguf_file(src, tmp, settings, name)
    text, templated = modelfile(GGUF_FILE, AutoTokenizer.from_pretrained(str(src.model_dir)), src.meta["generation"])
    write_text(tmp / "Modelfile", text)
    if not templated:
        print("note: the chat template is not ChatML; the Modelfile has no TEMPLATE and Ollama reads the GGUF's "
              "tokenizer.chat_template")
    return f"ollama create {name} -f {out}/Modelfile && ollama run {name}"


WRITERS = {"hf": write_hf, "vllm": write_vllm, "ollama": write_ollama, "gguf": write_gguf_only}


# -- the check ---------------------------------------------------------------------------------------------------

def load_export(out: Path, target: str, settings: ExportSettings):
    """(model, tokenizer) of an export folder as the engine's own format loads with plain transformers/peft."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if target in ("ollama", "gguf"):
        from .gguf_file import load_gguf

        return load_gguf(out / GGUF_FILE)
    if target == "vllm" and settings.vllm_layout == "adapter":
        from peft import PeftModel

        # fp32 as the run computes (a bf16 base would load as bf16 by default)
        base = AutoModelForCausalLM.from_pretrained(str(out / "base"), dtype=torch.float32)
        return PeftModel.from_pretrained(base, str(out / "adapter")).eval(), AutoTokenizer.from_pretrained(
            str(out / "base"))
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(out))


def greedy_answers(model, tokenizer, generation: dict, prompts: list[str]) -> list[str]:
    from ..tasks.causal_lm import generate

    gen = {**generation, "temperature": 0.0}
    return generate(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], gen, batch_size=8)


def check(run: Path, out: Path, target: str, settings: ExportSettings) -> dict:
    """The run's and the export's greedy answers on the fixed prompts, and how many are the same."""
    from ..trained import load_trained

    trained = load_trained(run)
    prompts = PROMPTS[: settings.check_prompts]
    expected = greedy_answers(trained.model, trained.tokenizer, trained.meta["generation"], prompts)
    model, tokenizer = load_export(out, target, settings)
    got = greedy_answers(model, tokenizer, trained.meta["generation"], prompts)
    same = sum(a == b for a, b in zip(expected, got))
    return {"prompts": len(prompts), "same_answers": same, "agreement": same / len(prompts),
            "differing": [{"prompt": p, "run": a, "export": b} for p, a, b in zip(prompts, expected, got) if a != b]}


def export(run: str | Path, target: str, out: str | Path | None = None, settings: ExportSettings | None = None,
           overwrite: bool = False) -> dict:
    """Write RUN's export for `target` to `out` (default RUN/export/<target>), check it, and return the serving
    command and the check; export.json in the folder records both."""
    settings = settings or ExportSettings()
    run = Path(run)
    src = inspect(run, target, settings)
    out = Path(out) if out else run / "export" / target
    refuse_existing(out, overwrite)
    name = settings.name or "".join(c if c.isalnum() or c in "._-" else "-" for c in run.resolve().name.lower())
    result = {"target": target, "run": str(run), "folder": str(out)}
    if target in ("ollama", "gguf"):
        result["gguf_type"] = settings.gguf_type
    if target == "vllm":
        result["vllm_layout"] = settings.vllm_layout

    def fill(tmp: Path) -> None:
        result["command"] = WRITERS[target](src, tmp, out, settings, name)
        if (tmp / "config.json").is_file():  # a model folder tunecraft's own commands load too
            write_json(tmp / META, {**src.meta, "exported_for": target})
        write_json(tmp / "export.json", result)

    write_folder(out, fill)
    if settings.check:
        result["check"] = check(run, out, target, settings)
        write_json(out / "export.json", result)
    return result
