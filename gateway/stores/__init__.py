"""Shared state: codes and other short-lived keys in Redis (or memory://), users in MySQL (or sqlite://)."""
from ..errors import ServiceUnavailable


class StoreUnavailable(ServiceUnavailable):
    """A store the gateway needs cannot be reached; the request fails closed."""
