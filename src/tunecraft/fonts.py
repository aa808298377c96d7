"""A CJK fallback font for plots whose labels hold Chinese, Japanese or Korean (DejaVu Sans has none)."""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from pathlib import Path

from matplotlib import font_manager, rcParams

logger = logging.getLogger(__name__)

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
SYSTEM = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
          "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans GB", "Arial Unicode MS")
"""CJK families a system may have, preferred in this order to the packaged one."""
PACKAGED = ("paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc")
"""WenQuanYi Micro Hei inside the pinned paperang-p2-fonts-cjk wheel (a project dependency; 2.3 MB)."""
REQUIREMENT = "paperang-p2-fonts-cjk==0.1.0"


def packaged_font() -> Path | None:
    spec = importlib.util.find_spec(PACKAGED[0])  # found without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / PACKAGED[1]
    return path if path.is_file() else None


@functools.cache
def cjk_family() -> str | None:
    """The name of a CJK font matplotlib can use (a system one, else the packaged one), or None."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in SYSTEM:
        if name in installed:
            return name
    path = packaged_font()
    if path is None:
        return None
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


@functools.cache
def _warn_missing() -> None:
    logger.warning("plot labels hold CJK characters but no CJK font was found: they show as boxes; "
                   "pip install %s (or install a system font such as Noto Sans CJK)", REQUIREMENT)


def use_cjk_font(texts) -> str | None:
    """When any of `texts` holds CJK characters, add a CJK family after the default one (matplotlib falls back
    glyph by glyph, so Latin text keeps its font), or warn once that none is found. Returns the family used."""
    if not any(CJK.search(str(t)) for t in texts):
        return None
    family = cjk_family()
    if family is None:
        _warn_missing()
        return None
    current = list(rcParams["font.family"])
    if family not in current:
        rcParams["font.family"] = [*current, family]
    return family
