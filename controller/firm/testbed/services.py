"""The social network's services: DeathStarBench's Social Network call shapes, on a small scale.

compose_post fans out in parallel (unique id; text, which itself asks url-shorten and user-mention;
media; the creator from user), then writes one after another: post storage (a file on disk,
fsynced), the author's user timeline, and the home timelines of the author's followers (from the
social graph). The two reads fetch post ids from a timeline and the posts from post storage.
Timelines, the social graph and the post cache live in the application's Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from redis import asyncio as aioredis

Call = Callable[[str, str, Any], Awaitable[Any]]
Operation = Callable[["Service", Any], Awaitable[Any]]

_URL = re.compile(r"https?://\S+")
_MENTION = re.compile(r"@(user_\d+)")


@dataclass
class Service:
    """What a handler can use: calls to other services, the application's Redis, its storage."""

    name: str
    instance: str
    call: Call
    redis: aioredis.Redis
    data_dir: str
    work_ms: float = 0.0
    disk: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    _ids: int = 0

    def next_id(self) -> int:
        """A unique 64-bit id: milliseconds, instance hash, counter (like a snowflake id)."""
        self._ids = (self._ids + 1) & 0xFFF
        machine = int(hashlib.blake2s(self.instance.encode(), digest_size=2).hexdigest(), 16) & 0x3FF
        return (int(time.time() * 1000) << 22) | (machine << 12) | self._ids


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def burn(cpu_ms: float) -> None:
    """Spend ``cpu_ms`` of this thread's CPU time on real work (hashing), as business logic would."""
    deadline = time.thread_time() + cpu_ms / 1000
    block = b"firm" * 256
    while time.thread_time() < deadline:
        block = hashlib.sha256(block).digest() * 32


# --------------------------------------------------------------------------------------------------
# frontend


async def frontend_compose_post(svc: Service, req: Any) -> Any:
    return await svc.call("compose-post", "compose_post", req)


async def frontend_read_home_timeline(svc: Service, req: Any) -> Any:
    return await svc.call("home-timeline", "read_home_timeline", req)


async def frontend_read_user_timeline(svc: Service, req: Any) -> Any:
    return await svc.call("user-timeline", "read_user_timeline", req)


# --------------------------------------------------------------------------------------------------
# compose


async def compose_post(svc: Service, req: Any) -> Any:
    user_id = int(req["user_id"])
    post_id, text, media, creator = await asyncio.gather(
        svc.call("unique-id", "compose_unique_id", {}),
        svc.call("text", "compose_text", {"text": str(req.get("text", ""))}),
        svc.call("media", "compose_media", {"media": req.get("media", [])}),
        svc.call("user", "compose_creator", {"user_id": user_id}),
    )
    post = {
        "post_id": post_id["post_id"],
        "creator": creator,
        "text": text["text"],
        "urls": text["urls"],
        "mentions": text["mentions"],
        "media": media["media"],
        "timestamp": time.time(),
    }
    await svc.call("post-storage", "store_post", {"post": post})
    await svc.call(
        "user-timeline",
        "write_user_timeline",
        {"user_id": user_id, "post_id": post["post_id"], "timestamp": post["timestamp"]},
    )
    await svc.call(
        "home-timeline",
        "write_home_timeline",
        {
            "user_id": user_id,
            "post_id": post["post_id"],
            "timestamp": post["timestamp"],
            "mentions": [m["user_id"] for m in text["mentions"]],
        },
    )
    return {"post_id": post["post_id"]}


async def compose_unique_id(svc: Service, req: Any) -> Any:
    return {"post_id": svc.next_id()}


async def compose_text(svc: Service, req: Any) -> Any:
    text = str(req["text"])
    urls, mentions = await asyncio.gather(
        svc.call("url-shorten", "compose_urls", {"urls": _URL.findall(text)}),
        svc.call("user-mention", "compose_user_mentions", {"usernames": _MENTION.findall(text)}),
    )
    for url in urls["urls"]:
        text = text.replace(url["expanded"], url["shortened"])
    return {"text": text, "urls": urls["urls"], "mentions": mentions["mentions"]}


async def compose_urls(svc: Service, req: Any) -> Any:
    urls = []
    for url in req["urls"]:
        short = "http://short.firm/" + hashlib.sha256(url.encode()).hexdigest()[:10]
        urls.append({"expanded": url, "shortened": short})
    if urls:
        await svc.redis.mset({f"url:{u['shortened']}": u["expanded"] for u in urls})
    return {"urls": urls}


async def compose_user_mentions(svc: Service, req: Any) -> Any:
    names = list(req["usernames"])
    ids = await svc.redis.hmget("usernames", names) if names else []
    return {
        "mentions": [
            {"username": n, "user_id": int(i)} for n, i in zip(names, ids, strict=False) if i is not None
        ]
    }


async def compose_media(svc: Service, req: Any) -> Any:
    return {"media": [{"id": int(m["id"]), "type": str(m.get("type", "png"))} for m in req.get("media", [])]}


async def compose_creator(svc: Service, req: Any) -> Any:
    user_id = int(req["user_id"])
    username = await svc.redis.hget(f"user:{user_id}", "username")
    return {"user_id": user_id, "username": _text(username) if username else f"user_{user_id}"}


# --------------------------------------------------------------------------------------------------
# storage and timelines


def _append_fsync(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


async def store_post(svc: Service, req: Any) -> Any:
    post = req["post"]
    line = json.dumps(post, separators=(",", ":")) + "\n"
    path = os.path.join(svc.data_dir, f"{svc.instance}.posts")
    await asyncio.get_running_loop().run_in_executor(svc.disk, _append_fsync, path, line)
    await svc.redis.set(f"post:{post['post_id']}", line.strip())
    return {"post_id": post["post_id"]}


async def read_posts(svc: Service, req: Any) -> Any:
    ids = [int(i) for i in req["post_ids"]]
    raw = await svc.redis.mget([f"post:{i}" for i in ids]) if ids else []
    return {"posts": [json.loads(r) for r in raw if r is not None]}


async def write_user_timeline(svc: Service, req: Any) -> Any:
    await svc.redis.zadd(
        f"user-timeline:{int(req['user_id'])}", {str(req["post_id"]): float(req["timestamp"])}
    )
    return {}


async def _read_timeline(svc: Service, key: str, req: Any) -> Any:
    start, stop = int(req.get("start", 0)), int(req.get("stop", 10))
    ids = await svc.redis.zrevrange(key, start, max(start, stop - 1))
    posts = await svc.call("post-storage", "read_posts", {"post_ids": [int(str(_text(i))) for i in ids]})  # type: ignore[arg-type]
    return {"posts": posts["posts"]}


async def read_user_timeline(svc: Service, req: Any) -> Any:
    return await _read_timeline(svc, f"user-timeline:{int(req['user_id'])}", req)


async def write_home_timeline(svc: Service, req: Any) -> Any:
    followers = await svc.call("social-graph", "get_followers", {"user_id": int(req["user_id"])})
    readers = set(followers["followers"]) | {int(m) for m in req.get("mentions", [])}
    if readers:
        pipe = svc.redis.pipeline(transaction=False)
        for reader in readers:
            pipe.zadd(f"home-timeline:{reader}", {str(req["post_id"]): float(req["timestamp"])})
        await pipe.execute()
    return {"readers": len(readers)}


async def read_home_timeline(svc: Service, req: Any) -> Any:
    return await _read_timeline(svc, f"home-timeline:{int(req['user_id'])}", req)


async def get_followers(svc: Service, req: Any) -> Any:
    members = await svc.redis.smembers(f"followers:{int(req['user_id'])}")
    return {"followers": sorted(int(_text(m)) for m in members)}


OPERATIONS: Mapping[str, Mapping[str, Operation]] = {
    "frontend": {
        "compose_post": frontend_compose_post,
        "read_home_timeline": frontend_read_home_timeline,
        "read_user_timeline": frontend_read_user_timeline,
    },
    "compose-post": {"compose_post": compose_post},
    "unique-id": {"compose_unique_id": compose_unique_id},
    "text": {"compose_text": compose_text},
    "url-shorten": {"compose_urls": compose_urls},
    "user-mention": {"compose_user_mentions": compose_user_mentions},
    "media": {"compose_media": compose_media},
    "user": {"compose_creator": compose_creator},
    "post-storage": {"store_post": store_post, "read_posts": read_posts},
    "user-timeline": {"write_user_timeline": write_user_timeline, "read_user_timeline": read_user_timeline},
    "home-timeline": {"write_home_timeline": write_home_timeline, "read_home_timeline": read_home_timeline},
    "social-graph": {"get_followers": get_followers},
}
"""Each service's operations; every service in the default configuration has an entry."""
