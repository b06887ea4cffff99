"""Mobile numbers: one spelling per number, so that variants share one key and one limit."""
from __future__ import annotations

import re
import unicodedata

MOBILE = re.compile(r"1[3-9]\d{9}")
_SEPARATORS = re.compile(r"[\s\-().]")


def normalize_mobile(raw: str) -> str | None:
    """'+86 139-1111-1111' and full-width '１３９１１１１１１１１' become '13911111111'; None if not a mobile."""
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    for prefix in ("+86", "0086", "86"):
        if text.startswith(prefix) and len(text) == len(prefix) + 11:
            text = text[len(prefix):]
            break
    return text if text.isascii() and MOBILE.fullmatch(text) else None
