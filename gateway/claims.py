"""What a verified token says: a value shared by the token service, the revocation list and the stages."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    refresh: bool
    exp: float
    iat: float
    jti: str
    sid: str
    family: str  # a second revocation key: the sid itself, or a legacy token's pre-switch family
