"""Keeps Celery workers alive when the Redis broker goes away while they have tasks in flight.

Celery 5.7 handles a lost broker connection by collecting it, which detaches kombu's transport, and then closing
it again; later the tasks that were running finish and acknowledge their messages on the old channel. Both need
a new Redis client from the detached transport, whose address is gone: AttributeError, "Unrecoverable error",
and the worker stops (a Redis restart stopped every busy worker, tests/chat/test_redis_restart.py). Asking a
detached channel for a client now raises a connection error instead, which kombu and Celery already handle: the
close gives up putting messages back, the late acknowledgement is logged and dropped. Those messages stay in
Redis's unacked set until the visibility timeout brings them back, as after any lost connection; answers and
documents are claimed idempotently, so that late second delivery changes nothing.

Loaded by every worker through CELERY_IMPORTS (config/settings/base.py).
"""

import redis
from kombu.transport import redis as kombu_redis

_connparams = kombu_redis.Channel._connparams


def _connparams_of_attached(self, asynchronous=False):
    if getattr(self.connection, "client", None) is None:
        raise redis.ConnectionError("this broker connection was closed")
    return _connparams(self, asynchronous=asynchronous)


kombu_redis.Channel._connparams = _connparams_of_attached
