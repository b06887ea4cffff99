"""A small news service with in-memory data, put behind the gateway by the demo and the tests."""
from .app import create_app

__all__ = ["create_app"]
