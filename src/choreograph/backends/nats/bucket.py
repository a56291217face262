"""A JetStream key-value bucket, used through its stream.

The bucket is a standard KV bucket (stream ``KV_<bucket>``, subjects ``$KV.<bucket>.<key>``, one
message kept per key), so ``nats kv`` shows it. The backend reads and writes it through the
stream because it needs what the KV API does not give in one request: every key under a prefix
(the stream's subject list), and deleting a key without leaving a tombstone (a subject purge).
A bucket that other processes follow (the catalog) deletes with a tombstone instead, as ``nats
kv del`` does, so that they see the deletion; its readers skip tombstones.
"""

from __future__ import annotations

import asyncio
from typing import Final

import nats.js.errors
from nats.js import api

from choreograph.backends.nats.engine import Engine

__all__ = ["Bucket"]

_EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE: Final = 10071
KV_OPERATION: Final = "KV-Operation"
"""Header of a KV tombstone (``DEL`` or ``PURGE``), as the NATS KV API writes it."""


class Bucket:
    """Keys and values in one KV bucket."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self.name = name
        self.stream = f"KV_{name}"
        self._prefix = f"$KV.{name}."

    async def create(self, replicas: int) -> None:
        await self._engine.ensure_stream(
            api.StreamConfig(
                name=self.stream,
                subjects=[f"{self._prefix}>"],
                retention=api.RetentionPolicy.LIMITS,
                max_msgs_per_subject=1,
                discard=api.DiscardPolicy.NEW,
                storage=api.StorageType.FILE,
                num_replicas=replicas,
                allow_rollup_hdrs=True,
                deny_delete=True,
                allow_direct=True,
                duplicate_window=120,
            )
        )

    @property
    def prefix(self) -> str:
        """The subject prefix of the keys (``$KV.<bucket>.``)."""
        return self._prefix

    async def put(self, key: str, value: bytes) -> int:
        """Store ``value`` under ``key``; returns the stream sequence it was stored at."""
        ack = await self._engine.js.publish(self._prefix + key, value)
        return int(ack.seq)

    async def tombstone(self, key: str) -> int:
        """Delete ``key`` leaving a tombstone (``KV-Operation: DEL``) that followers see;
        returns its stream sequence."""
        ack = await self._engine.js.publish(self._prefix + key, b"", headers={KV_OPERATION: "DEL"})
        return int(ack.seq)

    async def get(self, key: str) -> bytes | None:
        return await self._engine.last(self.stream, self._prefix + key)

    async def entry(self, key: str) -> tuple[bytes | None, int]:
        """The value of ``key`` (None when absent or a tombstone) and its stream sequence (0
        when absent)."""
        try:
            message = await self._engine.js.get_msg(
                self.stream, subject=self._prefix + key, direct=True
            )
        except nats.js.errors.NotFoundError:
            return None, 0
        return (message.data or None), int(message.seq or 0)

    async def entries(self, keys: list[str]) -> list[tuple[bytes | None, int]]:
        """:meth:`entry` of each key, read concurrently."""
        return list(await asyncio.gather(*(self.entry(key) for key in keys)))

    async def last_sequence(self) -> int:
        """The sequence of the bucket's latest write (0 when none)."""
        info = await self._engine.js.stream_info(self.stream)
        return int(info.state.last_seq or 0)

    async def delete(self, pattern: str) -> None:
        """Delete the key ``pattern`` or every key it matches (``t.s.*``, ``t.>``)."""
        await self._engine.purge(self.stream, self._prefix + pattern)

    async def keys(self, pattern: str) -> list[str]:
        """The keys matching ``pattern``, sorted."""
        subjects = await self._engine.subjects(self.stream, self._prefix + pattern)
        return sorted(subject[len(self._prefix) :] for subject in subjects)

    async def values(self, keys: list[str]) -> list[bytes | None]:
        """The value of each key (None for one deleted meanwhile), read concurrently."""
        return list(await asyncio.gather(*(self.get(key) for key in keys)))

    async def add(self, key: str, amount: int) -> None:
        """Add ``amount`` to the integer at ``key`` (0 when absent), safe against concurrent adds."""
        js = self._engine.js
        subject = self._prefix + key
        while True:
            try:
                current = await js.get_msg(self.stream, subject=subject, direct=True)
                value, sequence = int(current.data or b"0"), current.seq or 0
            except nats.js.errors.NotFoundError:
                value, sequence = 0, 0
            try:
                await js.publish(
                    subject,
                    str(value + amount).encode(),
                    headers={_EXPECTED_LAST_SUBJECT_SEQUENCE: str(sequence)},
                )
                return
            except nats.js.errors.APIError as exc:
                if exc.err_code != _WRONG_LAST_SEQUENCE:
                    raise
