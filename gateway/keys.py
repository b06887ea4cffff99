"""Typed application keys: every app-wide resource lives under one of these."""
from __future__ import annotations

from aiohttp import web

from .auth.sms import SmsSender
from .auth.tokens import TokenService
from .config import Config
from .ids import IdWorker
from .proxy.forward import Forwarder
from .proxy.headers import RequestIds
from .routing import RouteTable
from .stores.codes import CodeStore
from .stores.users import UserStore

CONFIG = web.AppKey("config", Config)
TOKENS = web.AppKey("tokens", TokenService)
ROUTES = web.AppKey("routes", RouteTable)
IDS = web.AppKey("ids", IdWorker)
SMS = web.AppKey("sms", SmsSender)
CODES = web.AppKey("codes", CodeStore)
USERS = web.AppKey("users", UserStore)
FORWARDER = web.AppKey("forwarder", Forwarder)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
