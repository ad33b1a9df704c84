"""One blocking XREAD per event loop for every answer stream its readers follow.

A web process relays hundreds of answers at once. A reader per answer doing its own blocking XREAD costs one
Redis round trip per token per reader (a few thousand a second) and a Redis connection each; here one task per
event loop reads every followed stream with a single XREAD and hands each reader what arrived on its stream
(measured: about a quarter of the CPU time for 200 streams at 10 tokens/s).

Each stream has a cursor (the last entry id handed out). A reader that joins behind it (resuming from an older
Last-Event-ID while another reader follows the same answer) first gets the missing range, and every reader
skips entries it has already seen, so each sees every entry after its own position exactly once, in order.
A joining reader wakes the blocked XREAD through the hub's own small stream, so it waits for nothing.
When Redis stays away past the clients' retries, every reader gets the error (chat.sse ends its stream with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref

from chat.streams import async_client, decode

BLOCK_MS = 5000
COUNT = 500
WAKE_TTL_S = 3600


def _id(entry_id: str) -> tuple[int, int]:
    ms, _sep, seq = str(entry_id).partition("-")
    return int(ms or 0), int(seq or 0)


class Follower:
    """One reader of one stream, from `after` on."""

    def __init__(self, hub: Hub, key: str, after: str):
        self.hub, self.key, self.after = hub, key, after or "0"
        self.queue: asyncio.Queue = asyncio.Queue()

    def deliver(self, entries: list) -> None:
        self.queue.put_nowait(entries)

    async def read(self, block_ms: int) -> list[tuple[str, str, dict]]:
        """Entries after the last one returned, waiting up to block_ms for the first; [] when none came."""
        try:
            batch = await asyncio.wait_for(self.queue.get(), timeout=block_ms / 1000)
        except TimeoutError:
            return []
        batches = [batch]
        while not self.queue.empty():
            batches.append(self.queue.get_nowait())
        fresh = []
        for item in batches:
            if isinstance(item, BaseException):
                raise item
            for entry in item:
                if _id(entry[0]) > _id(self.after):
                    fresh.append(entry)
                    self.after = entry[0]
        return fresh

    def close(self) -> None:
        self.hub.leave(self)


class Hub:
    def __init__(self):
        self.reader = async_client()  # the blocking XREAD only
        self.client = async_client(shared=True)  # the rest: wake-ups, catch-up ranges, the streams' commands
        self.wake_key = f"ragdesk:hub:{uuid.uuid4().hex}"
        self.followers: dict[str, list[Follower]] = {}
        self.cursors: dict[str, str] = {}
        self.joining: list[Follower] = []
        self.task: asyncio.Task | None = None

    async def follow(self, key: str, after: str) -> Follower:
        follower = Follower(self, key, after)
        self.joining.append(follower)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())
        else:
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(self.wake_key, WAKE_TTL_S)
            await pipe.execute()
        return follower

    def leave(self, follower: Follower) -> None:
        with contextlib.suppress(ValueError):
            self.joining.remove(follower)
        followers = self.followers.get(follower.key, [])
        with contextlib.suppress(ValueError):
            followers.remove(follower)
        if not followers:
            self.followers.pop(follower.key, None)
            self.cursors.pop(follower.key, None)
        if not self.followers and not self.joining:
            _hubs.pop(self._loop(), None)
            if self.task is not None:
                self.task.cancel()  # its blocked read ends; it closes the clients
            else:
                asyncio.get_running_loop().create_task(self._close())

    def _loop(self):
        return asyncio.get_running_loop()

    async def _admit(self) -> None:
        joining, self.joining = self.joining, []
        for follower in joining:
            key = follower.key
            cursor = self.cursors.get(key)
            if cursor is None:
                self.cursors[key] = follower.after
            elif _id(follower.after) < _id(cursor):  # behind the others: hand it the range it missed
                missed = await self.client.xrange(key, f"({follower.after}" if follower.after != "0" else "-", cursor)
                follower.deliver([decode(e) for e in missed])
            self.followers.setdefault(key, []).append(follower)

    async def _run(self) -> None:
        wake_after = "0"
        try:
            while True:
                await self._admit()
                if not self.followers:
                    if _hubs.get(self._loop()) is self:
                        _hubs.pop(self._loop(), None)
                    return
                response = await self.reader.xread({**self.cursors, self.wake_key: wake_after}, block=BLOCK_MS,
                                                   count=COUNT)
                for raw_key, raw_entries in response or []:
                    key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                    if key == self.wake_key:
                        wake_after = decode_id(raw_entries[-1][0])
                        continue
                    entries = [decode(e) for e in raw_entries]
                    if key in self.cursors:
                        self.cursors[key] = entries[-1][0]
                    for follower in self.followers.get(key, []):
                        follower.deliver(entries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis gone past its retries: every reader must hear of it
            if _hubs.get(self._loop()) is self:
                _hubs.pop(self._loop(), None)
            for follower in [*self.joining, *(f for fs in self.followers.values() for f in fs)]:
                follower.deliver(exc)
        finally:
            await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.delete(self.wake_key)
        await self.reader.aclose()
        await self.client.aclose()


def decode_id(entry_id) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This event loop's hub (created on first use, gone when its last reader leaves)."""
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None or (current.task is not None and current.task.done()):
        current = _hubs[loop] = Hub()
    return current
