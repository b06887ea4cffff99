"""Typed application keys: every app-wide resource lives under one of these."""
from __future__ import annotations

from aiohttp import web

from .auth.authenticate import Authenticator
from .auth.login import Logins
from .auth.sessions import Sessions
from .auth.sms import SmsSender
from .auth.tokens import TokenService
from .config import Config
from .ids import IdWorker
from .proxy.forward import Forwarder
from .proxy.headers import RequestIds
from .proxy.route import Route
from .ratelimit import RateLimits
from .routing import RouteTable
from .stores.codes import CodeStore
from .stores.kv import KeyValue
from .stores.revocation import MemoryRevocations
from .stores.users import UserStore

CONFIG = web.AppKey("config", Config)
TOKENS = web.AppKey("tokens", TokenService)
ROUTES = web.AppKey("routes", RouteTable[Route])
IDS = web.AppKey("ids", IdWorker)
SMS = web.AppKey("sms", SmsSender)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
CODES = web.AppKey("codes", CodeStore)
USERS = web.AppKey("users", UserStore)
REVOCATIONS = web.AppKey("revocations", MemoryRevocations)
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
LOGINS = web.AppKey("logins", Logins)
SESSIONS = web.AppKey("sessions", Sessions)
FORWARDER = web.AppKey("forwarder", Forwarder)
KV = web.AppKey("kv", KeyValue)  # plain keys for sessions: the Redis primary, or memory://
