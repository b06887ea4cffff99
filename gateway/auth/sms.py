"""SMS senders. `log` is for development only: it writes the code to the log."""
from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("gateway.sms")


class SmsSender(Protocol):
    async def send(self, mobile: str, code: str) -> None: ...


class LogSender:
    def __init__(self) -> None:
        log.warning("sms.sender is 'log': codes are written to this log. For development only.")

    async def send(self, mobile: str, code: str) -> None:
        log.warning("[development sms sender] code for %s is %s", mobile, code)


def make_sender(name: str) -> SmsSender:
    if name == "log":
        return LogSender()
    raise ValueError(f"unknown sms sender {name!r}")
