"""The pipeline's metadata store: SQLite (stdlib ``sqlite3``), shaped like ML Metadata.

Created on first use at ``<pipeline_root>/metadata.sqlite``. Tables::

    artifact_types (id, name UNIQUE)
    artifacts      (id, type_id -> artifact_types, uri, fingerprint, properties JSON, created)
    executions     (id, pipeline, run_id, component, parameters JSON, code_version, cache_key,
                    state RUNNING|COMPLETE|CACHED|FAILED, cached_from -> executions, note,
                    started, ended, seconds)
    events         (execution_id -> executions, artifact_id -> artifacts, kind INPUT|OUTPUT, name)

Times are Unix seconds (``time.time()``); ``seconds`` is the execution's wall time. Every
change is one transaction (``with connection``): a crash leaves no half-recorded execution
other than a ``RUNNING`` row. A ``CACHED`` execution has OUTPUT events to the artifacts of the
``COMPLETE`` execution it reused (``cached_from``), no new artifact. Importing this module imports
no TensorFlow.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from ctmri_tf.pipeline import artifacts as artifact_types
from ctmri_tf.pipeline.artifacts import Artifact

FILENAME = "metadata.sqlite"
STATES = ("RUNNING", "COMPLETE", "CACHED", "FAILED")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifact_types (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY, type_id INTEGER NOT NULL REFERENCES artifact_types(id),
    uri TEXT NOT NULL, fingerprint TEXT NOT NULL, properties TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, run_id TEXT NOT NULL,
    component TEXT NOT NULL, parameters TEXT NOT NULL, code_version TEXT NOT NULL,
    cache_key TEXT NOT NULL, state TEXT NOT NULL
        CHECK (state IN ('RUNNING', 'COMPLETE', 'CACHED', 'FAILED')),
    cached_from INTEGER REFERENCES executions(id), note TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL, ended REAL, seconds REAL);
CREATE TABLE IF NOT EXISTS events (
    execution_id INTEGER NOT NULL REFERENCES executions(id),
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    kind TEXT NOT NULL CHECK (kind IN ('INPUT', 'OUTPUT')), name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS artifacts_uri ON artifacts(uri);
CREATE INDEX IF NOT EXISTS executions_cache ON executions(component, cache_key, state);
CREATE INDEX IF NOT EXISTS events_artifact ON events(artifact_id, kind);
CREATE INDEX IF NOT EXISTS events_execution ON events(execution_id, kind);
"""


class MetadataStore:
    """The store at ``path`` (a ``.sqlite`` file, created with its tables on first use)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._db:
            self._db.executescript(_SCHEMA)

    @classmethod
    def at_root(cls, pipeline_root: str | os.PathLike) -> "MetadataStore":
        return cls(Path(pipeline_root) / FILENAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------------- artifacts

    def _type_id(self, name: str) -> int:
        self._db.execute("INSERT OR IGNORE INTO artifact_types(name) VALUES (?)", (name,))
        return self._db.execute("SELECT id FROM artifact_types WHERE name = ?",
                                (name,)).fetchone()[0]

    def _artifact(self, row: sqlite3.Row) -> Artifact:
        return artifact_types.make(row["type"], row["uri"], json.loads(row["properties"]),
                                   row["id"])

    _ARTIFACT_SELECT = ("SELECT a.id, t.name AS type, a.uri, a.properties, a.created "
                        "FROM artifacts a JOIN artifact_types t ON t.id = a.type_id")

    def artifact(self, artifact_id: int) -> Artifact:
        row = self._db.execute(f"{self._ARTIFACT_SELECT} WHERE a.id = ?",
                               (artifact_id,)).fetchone()
        if row is None:
            raise KeyError(f"no artifact {artifact_id} in {self.path}")
        return self._artifact(row)

    def artifacts_at(self, uri: str | os.PathLike) -> list[Artifact]:
        """The artifacts recorded with ``uri`` (compared as absolute paths), newest first."""
        uri = os.path.abspath(os.fspath(uri))
        rows = self._db.execute(f"{self._ARTIFACT_SELECT} WHERE a.uri = ? ORDER BY a.id DESC",
                                (uri,)).fetchall()
        return [self._artifact(row) for row in rows]

    def artifacts_of_type(self, type_name: str) -> list[Artifact]:
        """Every artifact of ``type_name``, newest first."""
        rows = self._db.execute(f"{self._ARTIFACT_SELECT} WHERE t.name = ? ORDER BY a.id DESC",
                                (type_name,)).fetchall()
        return [self._artifact(row) for row in rows]

    # ----------------------------------------------------------------------- executions

    def start_execution(self, *, pipeline: str, run_id: str, component: str, parameters: dict,
                        code_version: str, cache_key: str, inputs: dict[str, Artifact]) -> int:
        """Record a ``RUNNING`` execution and its INPUT events; return its id. Input artifacts
        must be recorded already (have an ``id``)."""
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO executions(pipeline, run_id, component, parameters, code_version, "
                "cache_key, state, started) VALUES (?, ?, ?, ?, ?, ?, 'RUNNING', ?)",
                (pipeline, run_id, component, json.dumps(parameters, sort_keys=True),
                 code_version, cache_key, time.time()))
            execution_id = cursor.lastrowid
            self._events(execution_id, "INPUT", inputs)
        return execution_id

    def _events(self, execution_id: int, kind: str, named: dict[str, Artifact]) -> None:
        for name, artifact in named.items():
            if artifact is None:
                continue
            if artifact.id is None:
                raise ValueError(f"{artifact} is not recorded in the store")
            self._db.execute("INSERT INTO events(execution_id, artifact_id, kind, name) "
                             "VALUES (?, ?, ?, ?)", (execution_id, artifact.id, kind, name))

    def finish_execution(self, execution_id: int, state: str, *,
                         outputs: dict[str, Artifact] | None = None, note: str = "",
                         cached_from: int | None = None, seconds: float | None = None) -> None:
        """End an execution: ``COMPLETE`` (new ``outputs`` recorded as artifacts, their ids set
        on them), ``CACHED`` (``outputs``: the reused, recorded artifacts) or ``FAILED``; all in
        one transaction."""
        if state not in STATES[1:]:
            raise ValueError(f"state must be one of {STATES[1:]}, got {state!r}")
        ended = time.time()
        with self._db:
            started = self._db.execute("SELECT started FROM executions WHERE id = ?",
                                       (execution_id,)).fetchone()[0]
            for artifact in (outputs or {}).values():
                if artifact.id is None:
                    artifact.id = self._db.execute(
                        "INSERT INTO artifacts(type_id, uri, fingerprint, properties, created) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (self._type_id(artifact.type_name), os.path.abspath(artifact.uri),
                         artifact.fingerprint, json.dumps(artifact.properties, sort_keys=True),
                         ended)).lastrowid
                    artifact.uri = os.path.abspath(artifact.uri)
            self._events(execution_id, "OUTPUT", outputs or {})
            self._db.execute(
                "UPDATE executions SET state = ?, note = ?, cached_from = ?, ended = ?, "
                "seconds = ? WHERE id = ?",
                (state, note, cached_from, ended,
                 ended - started if seconds is None else seconds, execution_id))

    def execution(self, execution_id: int) -> dict:
        """The execution row as a dict (``parameters`` decoded)."""
        row = self._db.execute("SELECT * FROM executions WHERE id = ?",
                               (execution_id,)).fetchone()
        if row is None:
            raise KeyError(f"no execution {execution_id} in {self.path}")
        record = dict(row)
        record["parameters"] = json.loads(record["parameters"])
        return record

    def executions(self, component: str | None = None) -> list[dict]:
        """Every execution (of ``component``), oldest first."""
        query, args = "SELECT id FROM executions", ()
        if component is not None:
            query, args = query + " WHERE component = ?", (component,)
        return [self.execution(row[0]) for row in self._db.execute(query + " ORDER BY id", args)]

    def _named(self, execution_id: int, kind: str) -> dict[str, Artifact]:
        rows = self._db.execute("SELECT name, artifact_id FROM events WHERE execution_id = ? AND "
                                "kind = ? ORDER BY rowid", (execution_id, kind)).fetchall()
        return {row["name"]: self.artifact(row["artifact_id"]) for row in rows}

    def inputs(self, execution_id: int) -> dict[str, Artifact]:
        return self._named(execution_id, "INPUT")

    def outputs(self, execution_id: int) -> dict[str, Artifact]:
        return self._named(execution_id, "OUTPUT")

    def producer(self, artifact_id: int) -> int | None:
        """The execution that wrote the artifact (its first OUTPUT event: never a CACHED
        execution, which only reuses it), or None."""
        row = self._db.execute("SELECT execution_id FROM events WHERE artifact_id = ? AND "
                               "kind = 'OUTPUT' ORDER BY rowid LIMIT 1",
                               (artifact_id,)).fetchone()
        return None if row is None else row[0]

    def cached_execution(self, component: str, cache_key: str) -> int | None:
        """The newest ``COMPLETE`` execution of ``component`` with ``cache_key``, or None."""
        row = self._db.execute("SELECT id FROM executions WHERE component = ? AND cache_key = ? "
                               "AND state = 'COMPLETE' ORDER BY id DESC LIMIT 1",
                               (component, cache_key)).fetchone()
        return None if row is None else row[0]

    def count(self, table: str) -> int:
        if table not in ("artifact_types", "artifacts", "executions", "events"):
            raise ValueError(table)
        return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

