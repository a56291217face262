"""The SQLite backend's tables. ``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS topics (
    name        TEXT PRIMARY KEY,
    record      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    name        TEXT NOT NULL,
    record      BLOB NOT NULL,
    dropped     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (topic, name)
);
-- One row per event per matching subscription. A leased row is hidden until due_at, when its
-- lease expires; only rows waiting for their turn are in the due index.
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL,
    event           BLOB NOT NULL,
    published_at    REAL NOT NULL,
    ttl_start       REAL NOT NULL,
    attempts        INTEGER NOT NULL,
    due_at          REAL NOT NULL,
    leased          INTEGER NOT NULL,
    last_outcome    TEXT,
    last_error      TEXT,
    last_attempt_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due
    ON deliveries (subscription_id, due_at) WHERE leased = 0;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    subscription_id INTEGER NOT NULL,
    record          BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_subscription ON dead_letters (subscription_id, id);
-- Publish de-duplication: one row per transaction, holding the (topic, source, id, stored_at,
-- expires_at) entries it stored, so that the window survives a restart at the cost of one insert
-- per commit rather than one per event.
CREATE TABLE IF NOT EXISTS dedupe_log (
    id          INTEGER PRIMARY KEY,
    expires_at  REAL NOT NULL,
    entries     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dedupe_log_expiry ON dedupe_log (expires_at);
"""
