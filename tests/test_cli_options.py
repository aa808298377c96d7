"""Every command's arguments come from settings classes through `add_options` (fast: nothing is loaded)."""

import argparse
import importlib
from typing import Annotated, Literal

import pytest

from tunecraft import cli_options as opts
from tunecraft.cli import COMMANDS, build_parser
from tunecraft.errors import ConfigError
from tunecraft.settings import Arg, Strict, add_options, from_args


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def built(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[name]
    build, parser._build = parser._build, None  # what parsing would do first
    build(parser)
    return parser


def classes(command) -> list[type]:
    out = []
    for spec in command.options:
        module, _, name = spec.partition(":")
        out.append(getattr(importlib.import_module(module, "tunecraft"), name))
    return out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_argument_of_every_command_is_a_settings_field(command):
    dests = {a.dest for a in built(command.name)._actions if not isinstance(a, argparse._HelpAction)}
    fields = {name for cls in classes(command) for name in cls.model_fields if name not in command.skip}
    assert dests == fields


def test_the_commands_keep_their_names_and_order():
    assert [c.name for c in COMMANDS] == ["train", "plan", "tune", "doctor", "tokenizer", "pretrain", "continual",
                                          "eval", "predict", "chat", "robustness", "explain", "serve", "compress",
                                          "export", "report", "studio", "assets"]


def test_defaults_come_from_the_class_and_flags_keep_their_spelling():
    assert from_args(opts.PlanArgs, parsed("plan", "r.yaml", "a=1")) == opts.PlanArgs(
        recipe="r.yaml", overrides=["a=1"], steps=5, processes=1, auto=False)
    plan = from_args(opts.PlanArgs, parsed("plan", "r.yaml", "--json", "m.json", "--memory-budget", "4GB", "--auto"))
    assert (plan.json_path, plan.memory_budget, plan.auto) == ("m.json", "4GB", True)
    assert from_args(opts.EvalArgs, parsed("eval", "runs/x", "--data", "amazon", "--split", "all")) == opts.EvalArgs(
        run="runs/x", data="amazon", split="all", format="auto")
    explain = from_args(opts.ExplainArgs, parsed("explain", "runs/x", "a film", "--no-color", "--steps", "16"))
    assert (explain.text, explain.color, explain.steps, explain.target) == ("a film", False, 16, None)
    export = from_args(opts.ExportArgs, parsed("export", "runs/x", "--for", "gguf"))
    assert (export.target, export.overwrite) == ("gguf", False)
    compress = from_args(opts.CompressArgs, parsed("compress", "runs/x", "int8", "--no-bench", "onnx"))
    assert (compress.variants, compress.bench, compress.progress) == (["int8", "onnx"], False, True)
    loras = from_args(opts.ServeLoras, parsed("serve", "runs/x", "--lora", "a=runs/a", "--lora", "b=runs/b"))
    assert loras.lora_runs == ["a=runs/a", "b=runs/b"]
    assert from_args(opts.ServeLoras, parsed("serve", "runs/x")).lora_runs == []


def test_several_values_after_one_flag_and_a_bare_flag_is_the_empty_list():
    given = from_args(opts.RobustnessArgs, parsed("robustness", "runs/x", "--ood", "amazon", "tweets",
                                                  "--perturbations", "typos", "negation"))
    assert (given.ood, given.perturbations) == (["amazon", "tweets"], ["typos", "negation"])
    bare = from_args(opts.RobustnessArgs, parsed("robustness", "runs/x", "--ood"))
    assert (bare.ood, bare.perturbations, bare.seed) == ([], None, 0)


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "runs/x"], "the following arguments are required: --for"),
    (["export", "runs/x", "--for", "onnx"], "argument --for: invalid choice: 'onnx'"),
    (["robustness", "runs/x", "--perturbations", "typo"], "argument --perturbations: invalid choice: 'typo'"),
    (["assets", "get"], "argument action: invalid choice: 'get'"),
    (["plan", "r.yaml", "--steps", "five"], "argument --steps: invalid int value: 'five'"),
    (["report"], "the following arguments are required: runs"),
])
def test_argparse_refuses_what_the_fields_refuse(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parsed(*argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_help_is_the_field_doc_with_its_default():
    text = " ".join(built("plan").format_help().split())
    assert "--steps STEPS timed optimizer steps per layout (after one warm-up) (default: 5)" in text
    assert "--json JSON write every measurement as JSON here" in text
    assert "overrides dotted.key=value, e.g. train.batch_size=64" in text
    text = " ".join(built("export").format_help().split())
    assert "--for {hf,vllm,ollama,gguf} hf: merged HF folder" in text


def test_a_renamed_flag_names_itself_on_errors():
    class Demo(Strict):
        target: Annotated[Literal["a", "b"], Arg(flag="--for")]
        count: Annotated[int, Arg(flag="--n")] = 1
        """How many."""

    parser = argparse.ArgumentParser()
    add_options(parser, Demo)
    assert from_args(Demo, parser.parse_args(["--for", "b"])) == Demo(target="b", count=1)
    with pytest.raises(ConfigError, match=r"^--n: Input should be a valid integer"):
        from_args(Demo, argparse.Namespace(target="a", count="x"))
    with pytest.raises(ConfigError, match=r"^--for: Input should be 'a' or 'b'"):
        from_args(Demo, argparse.Namespace(target="c", count=None))
