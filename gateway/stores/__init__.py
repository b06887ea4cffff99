"""Shared state: codes and other short-lived keys in Redis (or memory://), users in MySQL (or sqlite://)."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from ..errors import ServiceUnavailable

log = logging.getLogger("gateway.stores")


class StoreUnavailable(ServiceUnavailable):
    """A store the gateway needs cannot be reached; the request fails closed."""


@contextlib.contextmanager
def unavailable_on(errors: tuple[type[BaseException], ...], store: str) -> Iterator[None]:
    """A driver's `errors` become StoreUnavailable (503) here, so that nothing above the stores sees them."""
    try:
        yield
    except errors as exc:
        log.error("%s unavailable: %s", store, exc)
        raise StoreUnavailable() from None
