"""The login peer: the seed's SMS-code login written the way the seed writes it.

Flask + Flask-RESTful + Flask-SQLAlchemy (PyMySQL) + redis-py + PyJWT, served
by gunicorn with one sync worker:

    SEED_MYSQL_URL=mysql+pymysql://root@127.0.0.1:3306/toutiao SEED_REDIS_URL=redis://127.0.0.1:6379/0 \\
    SEED_JWT_SECRET=... gunicorn -w 1 -b 127.0.0.1:5000 bench.seed_peer:app

Only the bench uses it, to compare the gateway's login with the seed's.
"""
from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import redis
from flask import Flask, current_app
from flask_restful import Api, Resource
from flask_restful.reqparse import RequestParser
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "user_basic"

    class STATUS:
        ENABLE = 1
        DISABLE = 0

    id = db.Column("user_id", db.BigInteger, primary_key=True)
    mobile = db.Column(db.String)
    name = db.Column("user_name", db.String)
    last_login = db.Column(db.DateTime)
    status = db.Column(db.Integer, default=1)


class UserProfile(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "user_profile"
    id = db.Column("user_id", db.BigInteger, primary_key=True)


class IdWorker:
    """toutiao's snowflake layout (41 bits of ms since 1288834974657, 5+5 worker bits, 12 sequence)."""

    def __init__(self) -> None:
        self.sequence, self.last = 0, -1

    def get_id(self) -> int:
        now = int(time.time() * 1000)
        self.sequence = (self.sequence + 1) & 4095 if now == self.last else 0
        self.last = now
        return ((now - 1288834974657) << 22) | self.sequence


def mobile(value: str) -> str:
    if not re.match(r"^1[3-9]\d{9}$", value):
        raise ValueError(f"{value} is not a valid mobile")
    return value


def regex(pattern: str) -> Any:
    def validate(value: str) -> str:
        if not re.match(pattern, value):
            raise ValueError(f"{value} is not valid")
        return value

    return validate


def generate_jwt(payload: dict[str, Any], expiry: datetime) -> str:
    _payload: dict[str, Any] = {"exp": expiry}
    _payload.update(payload)
    return jwt.encode(_payload, current_app.config["JWT_SECRET"], algorithm="HS256")


class AuthorizationResource(Resource):  # type: ignore[misc]
    def _generate_tokens(self, user_id: int, with_refresh_token: bool = True) -> tuple[str, str | None]:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        expiry = now + timedelta(hours=current_app.config["JWT_EXPIRY_HOURS"])
        token = generate_jwt({"user_id": user_id, "refresh": False}, expiry)
        refresh_token = None
        if with_refresh_token:
            refresh_expiry = now + timedelta(days=current_app.config["JWT_REFRESH_DAYS"])
            refresh_token = generate_jwt({"user_id": user_id, "refresh": True}, refresh_expiry)
        return token, refresh_token

    def post(self) -> tuple[dict[str, Any], int]:
        json_parser = RequestParser()
        json_parser.add_argument("mobile", type=mobile, required=True, location="json")
        json_parser.add_argument("code", type=regex(r"^\d{6}$"), required=True, location="json")
        args = json_parser.parse_args()
        key = "app:code:{}".format(args.mobile)
        try:
            real_code = current_app.redis_master.get(key)
        except redis.ConnectionError:
            real_code = current_app.redis_slave.get(key)
        try:
            current_app.redis_master.delete(key)
        except redis.ConnectionError:
            pass
        if not real_code or real_code.decode() != args.code:
            return {"message": "Invalid code."}, 400
        user = User.query.filter_by(mobile=args.mobile).first()
        if user is None:
            user_id = current_app.id_worker.get_id()
            user = User(id=user_id, mobile=args.mobile, name=args.mobile, last_login=datetime.now())
            db.session.add(user)
            db.session.add(UserProfile(id=user.id))
            db.session.commit()
        elif user.status == User.STATUS.DISABLE:
            return {"message": "Invalid user."}, 403
        token, refresh_token = self._generate_tokens(user.id)
        return {"token": token, "refresh_token": refresh_token}, 201


def create_app() -> Flask:
    flask_app = Flask(__name__)
    flask_app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["SEED_MYSQL_URL"],
        SQLALCHEMY_TRACK_MODIFICATIONS=False,
        JWT_SECRET=os.environ["SEED_JWT_SECRET"],
        JWT_EXPIRY_HOURS=2,
        JWT_REFRESH_DAYS=14,
    )
    db.init_app(flask_app)
    flask_app.redis_master = redis.Redis.from_url(os.environ["SEED_REDIS_URL"])  # type: ignore[attr-defined]
    flask_app.redis_slave = flask_app.redis_master  # type: ignore[attr-defined]
    flask_app.id_worker = IdWorker()  # type: ignore[attr-defined]
    Api(flask_app).add_resource(AuthorizationResource, "/v1_0/authorizations")
    return flask_app


app = create_app() if "SEED_MYSQL_URL" in os.environ else None
