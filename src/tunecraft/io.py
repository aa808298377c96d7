"""Atomic file and folder writes, and the refusal to replace what exists: every writer in tunecraft uses these.

A leaf: imports nothing of tunecraft but its errors. A reader never sees a half-written file or folder: each
write goes to a temporary sibling first and is renamed into place (a rename within one folder is atomic).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from .errors import TunecraftError


def refuse_existing(path: Path, overwrite: bool, alternatives: str = "") -> None:
    """Stop before any work when `path` holds something and the user did not ask to replace it."""
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())) and not overwrite:
        extra = f", {alternatives}" if alternatives else ""
        raise TunecraftError(f"{path} already exists: pass --overwrite to replace it{extra}")


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: Path, data, ensure_ascii: bool = True) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=ensure_ascii))


def write_yaml(path: Path, data) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_file(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` writes the file's content to a temporary sibling path (a library's own writer, e.g.
    matplotlib's savefig), which is then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_folder(target: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` fills a temporary sibling folder, which then replaces `target` (the old one, if any, is
    moved aside first and removed after, so `target` is never missing its content half-way)."""
    tmp = temporary_folder(target)
    try:
        write(tmp)
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def temporary_folder(target: Path) -> Path:
    """An empty hidden sibling of `target` to fill and then `replace_folder` into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))


def replace_folder(tmp: Path, target: Path) -> Path:
    """Rename the filled folder `tmp` to `target`, replacing what was there."""
    target = Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
