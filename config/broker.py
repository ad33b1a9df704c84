"""What the Celery broker still holds for a queue: task messages waiting in it, and messages a worker has taken
but not acknowledged yet (tasks acknowledge late, so a running task's message is held until it ends).

With Celery on Redis a queue is a Redis list named after it (one list per priority step), and a message a worker
took sits in the `unacked` hash until acknowledged, timed in the `unacked_index` sorted set. Only that
transport can be looked into: for any other broker `held_messages` answers None ("cannot tell").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Held:
    """Task ids of one queue's messages: `waiting` in the queue, `taken` by a worker (id -> when, epoch s)."""

    waiting: frozenset[str] = frozenset()
    taken: dict[str, float] = field(default_factory=dict)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.waiting or task_id in self.taken


def held_messages(queue: str) -> Held | None:
    """The broker's messages of `queue` now (None when the broker is not Redis)."""
    from config.celery import app  # the app loads Django's settings: imported on use

    with app.connection_for_read() as conn:
        if conn.transport.driver_type != "redis":
            return None
        channel = conn.default_channel
        client = channel.client  # prefixes keys itself when the transport sets global_keyprefix
        waiting = set()
        for priority in channel.priority_steps:
            for raw in client.lrange(channel._q_for_pri(queue, priority), 0, -1):
                waiting.add(_task_id(json.loads(raw)))
        taken = {}
        taken_at = dict(client.zrange(channel.unacked_index_key, 0, -1, withscores=True))
        for tag, raw in client.hgetall(channel.unacked_key).items():
            message, _exchange, routing_key = json.loads(raw)
            if routing_key == queue:
                taken[_task_id(message)] = taken_at.get(tag, 0.0)
    return Held(waiting=frozenset(waiting), taken=taken)


def _task_id(message: dict) -> str:
    return str(message.get("headers", {}).get("id") or message.get("properties", {}).get("correlation_id") or "")
