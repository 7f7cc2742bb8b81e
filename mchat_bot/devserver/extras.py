"""REST the user extras need: files (section 5.5) and leaving a channel (4.5 `user_removed`).

Files are kept in memory: ``POST /files`` (multipart ``channel_id`` then ``files`` parts) answers 201
with ``file_infos``; ``GET /files/{id}`` gives the bytes, ``GET /files/{id}/info`` the FileInfo.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from mchat_bot.devserver.errors import AppError, forbidden, invalid_param, json_response
from mchat_bot.devserver.hub import Hub, broadcast
from mchat_bot.devserver.rest import RestApi
from mchat_bot.devserver.state import Store, is_valid_id, new_id

MAX_FILE_BYTES = 50 * 2**20


@dataclass
class StoredFile:
    info: dict[str, Any]
    data: bytes


class ExtrasApi:
    def __init__(self, store: Store, hub: Hub, rest: RestApi) -> None:
        self.store, self.hub, self.rest = store, hub, rest
        self.files: dict[str, StoredFile] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v4/files", self.upload),
            web.get("/api/v4/files/{file_id}", self.download),
            web.get("/api/v4/files/{file_id}/info", self.info),
            web.delete("/api/v4/channels/{channel_id}/members/{user_id}", self.remove_member),
            web.delete("/api/v4/channels/{channel_id}", self.archive_channel),
        ]

    # ---- Python API
    def add_file(self, user_id: str, channel_id: str, name: str, data: bytes) -> dict[str, Any]:
        """Store a file as if uploaded by ``user_id``; returns its FileInfo."""
        at = self.store.clock.now_ms()
        ext = name.rpartition(".")[2].lower() if "." in name else ""
        info = {
            "id": new_id(),
            "user_id": user_id,
            "post_id": "",
            "channel_id": channel_id,
            "create_at": at,
            "update_at": at,
            "delete_at": 0,
            "name": name,
            "extension": ext,
            "size": len(data),
            "mime_type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "width": 0,
            "height": 0,
            "has_preview_image": False,
            "mini_preview": None,
            "archived": False,
        }
        self.files[str(info["id"])] = StoredFile(info, data)
        return dict(info)

    # ---- routes
    async def upload(self, request: web.Request) -> web.Response:
        me = self.rest.user(request)
        if not request.content_type.startswith("multipart/"):
            raise invalid_param("multipart")
        reader = await request.multipart()
        channel_id = ""
        infos: list[dict[str, Any]] = []
        client_ids: list[str] = []
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "channel_id":
                channel_id = (await part.text()).strip()
                ch = self.store.channels.get(channel_id)
                if ch is None or me.id not in ch.members:
                    raise forbidden()
            elif part.name == "client_ids":
                client_ids.append((await part.text()).strip())
            elif part.name == "files":
                if not channel_id:
                    raise invalid_param("channel_id")
                data = await part.read()
                if len(data) > MAX_FILE_BYTES:
                    raise AppError(413, "api.file.upload_file.too_large.app_error", "File is too large.")
                infos.append(self.add_file(me.id, channel_id, part.filename or "file", bytes(data)))
        if not infos:
            raise invalid_param("files")
        return json_response({"file_infos": infos, "client_ids": client_ids}, 201)

    def _readable(self, request: web.Request) -> StoredFile:
        me = self.rest.user(request)
        file_id = request.match_info["file_id"]
        if not is_valid_id(file_id):
            raise invalid_param("file_id")
        f = self.files.get(file_id)
        if f is None:
            raise AppError(404, "app.file_info.get.app_error", "Unable to get the file info.")
        ch = self.store.channels.get(f.info["channel_id"])
        if ch is None or me.id not in ch.members:
            raise forbidden()
        return f

    async def download(self, request: web.Request) -> web.Response:
        f = self._readable(request)
        return web.Response(
            body=f.data,
            content_type=f.info["mime_type"],
            headers={"Content-Disposition": f'attachment; filename="{f.info["name"]}"'},
        )

    async def info(self, request: web.Request) -> web.Response:
        return json_response(dict(self._readable(request).info))

    async def archive_channel(self, request: web.Request) -> web.Response:
        """app.DeleteChannel: the channel is archived (``delete_at`` set, its posts kept) and the team
        hears ``channel_deleted`` {channel_id, delete_at} on a team broadcast. A DM or group DM cannot be
        archived. Who may: a system admin or a member (the default channel_user role carries
        delete_public/private_channel; not checked by the conformance suite)."""
        me = self.rest.user(request)
        channel = self.rest.readable_channel(me, request.match_info["channel_id"])
        if channel.type in ("D", "G"):
            raise AppError(
                400,
                "api.channel.delete_channel.type.invalid",
                "Cannot delete direct or group message channels",
            )
        if channel.delete_at:
            raise AppError(
                400,
                "api.channel.delete_channel.deleted.app_error",
                "The channel has been archived or deleted.",
            )
        if me.id not in channel.members and not me.is_admin:
            raise forbidden()
        channel.delete_at = self.store.clock.now_ms()
        team = self.store.teams.get(channel.team_id)
        self.hub.publish(
            "channel_deleted",
            {"channel_id": channel.id, "delete_at": channel.delete_at},
            broadcast(team_id=channel.team_id),
            set(team.members) if team is not None else set(channel.members),
        )
        return json_response({"status": "OK"})

    async def remove_member(self, request: web.Request) -> web.Response:
        """Leave (self) or remove (admin, or any member of a public channel): emits `user_removed`."""
        me = self.rest.user(request)
        channel = self.rest.readable_channel(me, request.match_info["channel_id"])
        uid = request.match_info["user_id"]
        if uid not in channel.members:
            raise AppError(404, "app.channel.get_member.missing.app_error", "No channel member found.")
        if uid != me.id and not me.is_admin and not (channel.type == "O" and me.id in channel.members):
            raise forbidden()
        audience = set(channel.members)
        del channel.members[uid]
        # the removed user hears it on its own broadcast, the channel on the channel's
        self.hub.publish(
            "user_removed", {"channel_id": channel.id, "remover_id": me.id}, broadcast(user_id=uid), {uid}
        )
        self.hub.publish(
            "user_removed",
            {"user_id": uid, "remover_id": me.id},
            broadcast(channel_id=channel.id),
            audience - {uid},
        )
        return json_response({"status": "OK"})
