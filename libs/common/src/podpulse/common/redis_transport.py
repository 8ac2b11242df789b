"""kombu's Redis channel with one fix: a channel closed on a lost connection closes for real.

Without it a Celery worker can die when Redis restarts (celery and kombu 5.7; CI's loop test
saw it): ``Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")``. When the connection drops while the worker holds a message it has not
acknowledged yet (a task running or reserved under ``task_acks_late``):

1. celery's consumer calls ``Connection.collect()``, which closes the default channel (the
   one the task consumer reads) and then the connection's other channels, and detaches the
   transport: ``transport.client = None`` (kombu/connection.py, ``_do_close_transport``);
2. ``Channel.close()`` begins by reading the reply of the BRPOP still pending (kombu PR
   #1733, so that a message Redis already popped is not lost). The connection is gone, so
   the read raises ConnectionError and the close stops before it began; ``collect()``
   ignores the error. Closing the other channels stops too, at the first whose close needs
   Redis (the remote-control channel deletes its auto-delete broadcast queue), so nothing
   closes the default channel while the transport is attached;
3. celery 5.7 then also calls ``Connection.close()`` (celery PR #10242, in
   ``Consumer.on_connection_error_after_connected``), which closes the default channel again.
   This time the close runs: it drops the channel's connection pools, then restores the
   unacknowledged messages (``QoS.restore_unacked``), which needs a new pool, built from
   ``self.connection.client.hostname``: the detached client, None;
4. celery ignores only connection errors around that close, so the AttributeError ends the
   worker.

An idle worker holds no unacknowledged message, so most restarts pass; the loop test's
workers receive an event every few seconds, and sooner or later a restart meets one.

Here a connection error while reading the pending BRPOP reply does not stop the close: on a
dead connection no reply is coming. The close goes on at step 2, while the transport is still
attached; restoring the messages then fails as any command to a stopped Redis does, with a
connection error that kombu ignores there, and the second close finds the channel closed.
The messages stay in Redis's unacked set and are delivered again after the visibility
timeout, as when a worker dies (or at once, when Redis was still up to take them back).

It assumes what podpulse's bus declares: durable direct queues. A default channel consuming
an auto-delete fanout queue would still stop its first close at deleting that queue. The
Sentinel transport sets its own channel class and is left as kombu has it.

:func:`install` makes kombu's Redis transport use this channel; every podpulse Celery app
calls it (podpulse.common.bus). :data:`KOMBU_VERIFIED` pins, by digest, the kombu and celery
code this relies on: libs/common/tests/test_common_redis_transport.py fails when the installed
code differs, so an upgrade gets a look at whether the fix is still right, or still needed.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis

from .source_drift import drift

__all__ = ["KOMBU_VERIFIED", "Channel", "install", "kombu_drift"]

# sha256 (first 16 hex digits) of inspect.getsource() of what the fix relies on, as verified on
# kombu 5.7.0 and celery 5.7.0: the close it wraps, the read it repeats, and celery's handler
# whose second close made the half-open channel fatal.
KOMBU_VERIFIED: dict[str, str] = {
    "kombu.transport.redis:Channel.close": "101e9b9cdad44b88",
    "kombu.transport.redis:Channel._brpop_read": "c42518699709f2df",
    # What the close goes on to do, and what swallows the restore's connection error.
    "kombu.transport.virtual.base:Channel.close": "26368e1cadfc4ff9",
    "kombu.transport.virtual.base:QoS.restore_unacked_once": "c81f3d0fb29b9599",
    "kombu.transport.redis:QoS.restore_unacked": "8954efef014d546e",
    "kombu.connection:Connection.collect": "36d622aa0b69908a",
    "kombu.connection:Connection.maybe_close_channel": "22aa16183372c44e",
    "kombu.connection:Connection._do_close_self": "624b2e115799fe74",
    "kombu.connection:Connection._do_close_transport": "3e87de68f6283cf7",
    "celery.worker.consumer.consumer:Consumer.on_connection_error_after_connected": (
        "4f84dbfff329d28f"
    ),
}


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, whose close is not cut short by the connection being gone."""

    def close(self) -> None:
        """Read a pending BRPOP reply, as kombu's close does; close even when the read fails."""
        if self._in_poll:
            try:
                self._brpop_read()  # type: ignore[no-untyped-call]  # kombu's, unannotated
            except Empty:
                pass
            except self.connection_errors:
                # The connection is gone, so no reply is coming; kombu would stop the close
                # here and leave the channel half-open (see the module docstring). _brpop_read
                # has already disconnected and cleared _in_poll, so kombu's close below does
                # not read again.
                pass
        super().close()  # type: ignore[no-untyped-call]  # kombu ships no type hints


def install() -> None:
    """Make kombu's Redis transport (``redis://`` and ``rediss://``) open :class:`Channel`.

    Set on kombu's Transport class rather than naming a transport of our own in the broker
    URL or ``broker_transport``: kombu derives the TLS defaults of ``rediss://`` and the URL it
    logs from the scheme's name, which another transport name would lose. Idempotent.
    """
    kombu_redis.Transport.Channel = Channel


def kombu_drift() -> list[str]:
    """The entries of :data:`KOMBU_VERIFIED` whose installed source differs (or is gone)."""
    return drift(KOMBU_VERIFIED)
