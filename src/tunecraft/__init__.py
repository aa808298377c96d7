"""tunecraft: the whole life of a transformer model, from one recipe."""

from .cpus import wait_briefly
from .version import __version__  # noqa: F401 (the public attribute)

wait_briefly()  # before torch is imported (see cpus.py)


def __getattr__(name):
    # the public functions import torch; keep `import tunecraft` itself light. The function is kept as the
    # attribute: importing tunecraft.train (or .experiment) would otherwise leave the module there instead
    value = _public(name)
    globals()[name] = value
    return value


def _public(name):
    if name == "train":
        from .train import train

        return train
    if name == "experiment":
        from .experiment import experiment

        return experiment
    if name in ("evaluate_run", "predict"):
        from .evaluate import runs

        return getattr(runs, name)
    if name == "robustness":
        from .evaluate.robustness import robustness

        return robustness
    if name == "explain":
        from .evaluate.explain import explain

        return explain
    if name in ("run_continual", "load_continual"):
        from . import continual

        return getattr(continual, name)
    if name == "train_tokenizer":
        from .pretrain.tokenizer import train_tokenizer

        return train_tokenizer
    if name == "compress":  # the subpackage: tunecraft.compress.compress(run, [...]) after `import tunecraft`
        import importlib

        return importlib.import_module(".compress", __name__)
    if name == "doctor":
        from .diagnose import doctor

        return doctor
    if name in ("load_config", "build_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)
