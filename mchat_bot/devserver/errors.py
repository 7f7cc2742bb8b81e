"""Mattermost AppError and the exact JSON/headers Mattermost puts on responses (section 5.1)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mchat_bot.devserver.state import new_id

JSON_CT = "application/json"  # exactly this, no charset (server/channels/web/handlers.go)


class AppError(Exception):
    """An error the REST layer renders as {id, message, detailed_error, request_id, status_code}."""

    def __init__(self, status: int, err_id: str, message: str) -> None:
        super().__init__(f"{status} {err_id}")
        self.status, self.err_id, self.message = status, err_id, message

    def to_json(self, request_id: str = "") -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.err_id, "message": self.message, "detailed_error": ""}
        if request_id:
            d["request_id"] = request_id
        d["status_code"] = self.status
        return d


def forbidden() -> AppError:
    return AppError(403, "api.context.permissions.app_error", "You do not have the appropriate permissions.")


def session_expired() -> AppError:
    return AppError(
        401, "api.context.session_expired.app_error", "Invalid or expired session, please login again."
    )


def invalid_param(name: str) -> AppError:
    return AppError(
        400, "api.context.invalid_body_param.app_error", f"Invalid or missing {name} in request body."
    )


def invalid_url_param(name: str) -> AppError:
    return AppError(
        400, "api.context.invalid_url_param.app_error", f"Invalid or missing {name} parameter in request URL."
    )


def json_response(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, ensure_ascii=False).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": JSON_CT})


def error_response(err: AppError, request_id: str) -> web.Response:
    return json_response(err.to_json(request_id), err.status)


REQUEST_ID = web.RequestKey("request_id", str)


def request_id(request: web.Request) -> str:
    """The request's id (X-Request-Id and the error body's request_id), made on first use."""
    rid = request.get(REQUEST_ID)
    if not rid:
        rid = new_id()
        request[REQUEST_ID] = rid
    return rid
