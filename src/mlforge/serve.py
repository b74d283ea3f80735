"""The online feature server (contract O3): a FastAPI app over a project's online store.

::

    GET  /health              store reachable? 200, else 503 (never needs the token)
    GET  /features            the servable features
    GET  /features/{name}     one feature: keys, entities, timestamp, columns, version (latest) and served_version (published)
    POST /features/online     {"features": [...], "entity": {...}, "at": ...}     one entity
    POST /features/batch      {"features": [...], "entities": [...], "at": ...}   up to max_batch (413 past it)
    GET  /feature-sets        the registered feature sets
    POST /feature-sets/{name}/online   {"entity": {...}} or {"entities": [...]}, "at": ...
    GET  /models              the served models (``models=`` / ``mlforge serve --model``)
    POST /models/{name}/predict        {"entities": [...], "at": ...}  predictions
    GET  /metrics             Prometheus text format

A lookup answers what ``get_training_data`` gives for a label at ``at`` (ISO 8601, naive =
UTC; default: now), rule O1. Per entity, ``features`` holds each feature's row (its key
columns, its timestamp column = the instant the values belong to, its values; ``null``
when no row counts for a feature without metrics) and ``metadata`` holds, per feature,
``label_time`` and ``known`` (whether the store holds the entity: an unknown entity of a
metric feature reads the W4 empty-window values, as in training). ``at`` before a published
version's watermark is 422.

The v0.7 bodies, ``{"features": [...], "entity_keys": {...}}`` and ``{"features": [...],
"entity_keys": [...]}``, are accepted in 0.8.x; their answers carry a ``Deprecation: true``
header and echo ``entity_keys`` beside ``entity``.

A feature set is read at the versions it resolves to (pinned ones as declared, the others
the latest built), and the store must serve exactly those (else 422), so serving reads
what training read. A model logged with ``mlf.mlflow.log_model(..., training_set=...)``
and served by name looks its features up online at its recorded versions from the entity
keys alone, and answers what ``defs.score_online`` gives (rule O1).

Entities are given by the feature's key columns or, for an entity with ``from_columns``,
by those natural columns; the join key is then computed as in rule K1 (contract K2).
Bad JSON or a bad body is 422, an unknown feature 404, an unknown route 404 naming the
route, a store that is unreachable or whose client fails in any way 503, a missing or
wrong bearer token 401; no response ever carries a traceback. The token is
checked, and the body size bounded (413), before any byte of the body is read, so an
untokened or oversized request costs the server no memory.

FastAPI, uvicorn and prometheus-client are imported only when an app is made.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the request models from
# the endpoint annotations, and those models are local to ``create_app``.

import base64
import hmac
import json
import logging
import math
import os
import sys
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Annotated, Any

from mlforge import scoring
from mlforge.definitions.names import check_name
from mlforge.errors import (
    ConfigError,
    MlforgeError,
    OnlineStoreError,
    RetrievalError,
    missing_extra,
    redact,
)
from mlforge.manifest import exact_arrow_type
from mlforge.online.publication import Publication, read_time
from mlforge.publishing import OnlinePublish, publish_latest, read_publication
from mlforge.retrieval.online import lookup, lookup_async

log = logging.getLogger(__name__)

TOKEN_ENV = "MLFORGE_SERVE_TOKEN"
TARGET_ENV = "MLFORGE_SERVE_TARGET"
PROFILE_ENV = "MLFORGE_SERVE_PROFILE"
MAX_BATCH_ENV = "MLFORGE_SERVE_MAX_BATCH"
MAX_BATCH = 1_000
TOKEN_FILE_ENV = "MLFORGE_SERVE_TOKEN_FILE"
MAX_BODY_ENV = "MLFORGE_SERVE_MAX_BODY_BYTES"
#: ``name=uri`` pairs separated by newlines: the models worker processes load.
MODELS_ENV = "MLFORGE_SERVE_MODELS"
#: Largest request body accepted (413 past it): a batch of 1,000 entities fits many times over.
MAX_BODY_BYTES = 4 * 2**20
#: The routes, as named in a 404 / 405 answer.
ROUTES = "GET /health, GET /features, GET /features/{name}, POST /features/online, POST /features/batch, GET /feature-sets, POST /feature-sets/{name}/online, GET /models, POST /models/{name}/predict, GET /metrics"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# -- keys (contract K2) ----------------------------------------------------------------------
#: The v0.7 request body (``entity_keys``) is accepted for one release, 0.8.x: answers to it
#: carry these headers (``Deprecation``, RFC 9745) and echo ``entity_keys`` as v0.7 did.
V07_BODY_NOTE = "the v0.7 body: use 'entity' (online) or 'entities' (batch); accepted in 0.8.x only"
V07_BODY_HEADERS = {
    "Deprecation": "true",
    "Warning": '299 mlforge "entity_keys is deprecated: send entity (POST /features/online) or entities (POST /features/batch); removed in 0.9"',
}


def _exactly_one(current: Any, deprecated: Any, name: str) -> None:
    """A request names its entities once: ``name``, or the v0.7 ``entity_keys``."""
    if (current is None) == (deprecated is None):
        raise ValueError(f"give exactly one of {name!r} or the deprecated v0.7 'entity_keys'")


class KeyProblem(ValueError):
    """An entity lacks the columns to look a feature up."""


def entity_key(feature: Any, entity: dict[str, Any]) -> dict[str, Any]:
    """The key dict of ``feature`` for one request entity: key columns as given, or the
    join key of a surrogate entity computed from its ``from_columns`` (rule K1)."""
    try:
        return {
            column: _json_key(feature, column, entity[column]) for column in feature.keys
        }  # the usual case: all given
    except KeyError:
        pass
    from mlforge.prepare import surrogate_key_value

    surrogates = {e.join_key: e for e in feature.entities if e.is_surrogate}
    key: dict[str, Any] = {}
    for column in feature.keys:
        if column in entity:
            key[column] = _json_key(feature, column, entity[column])
            continue
        source = surrogates.get(column)
        if source is not None and all(c in entity for c in source.from_columns):
            try:
                key[column] = surrogate_key_value(*(_json_key(feature, c, entity[c]) for c in source.from_columns))
            except MlforgeError as exc:
                raise KeyProblem(f"feature {feature.name!r}: {exc.what}") from None
            continue
        accepted = f"{column!r}" + (f" or {list(source.from_columns)}" if source is not None else "")
        raise KeyProblem(f"feature {feature.name!r} needs the key {accepted}; the entity has {sorted(entity)}")
    return key


def _stand_in(defs: Any, feature: Any) -> Publication | None:
    """What a lookup of ``feature`` reads while the online store holds no publication record
    for it: the latest built version's record, whose column types give a float sum's empty
    value as ``0.0`` (O2); what the definition alone says when the offline store cannot be
    read; ``None`` when the feature has no version offline (never built)."""
    store = defs.workspace.offline_store
    try:
        version = store.latest_version(feature.name)
        return None if version is None else Publication.from_record(store.read_record(feature.name, version))
    except (MlforgeError, OSError) as exc:  # an unreachable or damaged offline store: the definition
        log.debug("feature %s: no offline record for its stand-in (%s)", feature.name, exc)
        return Publication.from_feature(feature)


def _stand_ins(defs: Any, features: dict[str, Any]) -> dict[str, Publication | None]:
    """:func:`_stand_in` of each of ``features`` (read again for those found unbuilt: one may
    have been built since the server started)."""
    return {name: _stand_in(defs, feature) for name, feature in features.items()}


def _positive_limit(name: str, given: int | None, env: str, default: int) -> int:
    """A serving limit: the argument, else the environment variable, else the default; a
    value that is not a whole number above 0 is a configuration error (E2: exit 2), not a
    server that refuses every request."""
    raw: Any = given if given is not None else os.environ.get(env) or default
    where = f"{name}=" if given is not None else f"the environment variable {env}"
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"serving limit {name} is {raw!r}, not a whole number above 0",
            where=where,
            fix=f"give a positive integer (default {default})",
        )
    return value


def _json_key(feature: Any, column: str, value: Any) -> Any:
    """A key value as JSON gave it, read as the stored key's text reads it: JSON has one kind
    of number, so ``3.0`` names the entity ``3`` (a fraction names a float key); a boolean
    is no key value."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, bool):
        raise KeyProblem(
            f"feature {feature.name!r}: key {column!r} is {str(value).lower()}, a boolean; send the key's number or text"
        )
    return value


# -- JSON rendering --------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """A stored value as JSON: timestamps ISO 8601 (naive ones are UTC, rule T1), NaN as null."""
    kind = type(value)  # exact types first: this runs for every value of every answer
    if kind in _PLAIN:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {str(k): jsonable(v) for k, v in value.items()}
    if kind is datetime:
        return _iso_utc(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, (date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


_PLAIN = frozenset({str, int, bool, type(None)})


def render_json(content: Any) -> bytes:
    """An answer as JSON bytes, as :func:`jsonable` renders each value (timestamps ISO 8601
    with naive ones as UTC, NaN and infinities as null, Decimal as text, bytes as base64),
    written by orjson: rendering a 100-entity answer took 2.4 ms with ``jsonable`` and
    ``json.dumps`` and takes 0.2 ms this way. What orjson refuses (an integer past 64 bits)
    is written the slow way."""
    import orjson

    try:
        return orjson.dumps(content, default=_json_default, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(jsonable(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    """What orjson does not write itself (subclasses of float such as numpy's, Decimal,
    bytes, timedelta, pandas timestamps...), as :func:`jsonable` renders it."""
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    rendered = jsonable(value)
    return rendered if type(rendered) is not type(value) else str(value)


def _iso_utc(value: datetime) -> str:
    """A timestamp as ISO 8601; naive is UTC."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=_utc())).isoformat()


def _utc() -> Any:
    from datetime import UTC

    return UTC


# -- the app ---------------------------------------------------------------------------------
REQUEST_EXAMPLE = '{"features": ["user_spend"], "entity": {"user_id": "u1"}}'
#: A body each route takes, by path prefix, for the fix of a 422.
_BODY_EXAMPLES = (
    ("/features/batch", '{"features": ["user_spend"], "entities": [{"user_id": "u1"}, {"user_id": "u2"}]}'),
    ("/feature-sets/", '{"entity": {"user_id": "u1"}} (or "entities": [...])'),
    ("/models/", '{"entities": [{"user_id": "u1"}]} (and any entity columns the model reads)'),
)


class Problem(Exception):
    """An HTTP error answer ``{"detail": what (and where), "fix": how}`` with ``status``."""

    def __init__(self, status: int, detail: str, *, fix: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.fix, self.headers = status, detail, fix, headers


def create_app(defs: Any, token: str | None = None, *, max_batch: int | None = None, max_body_bytes: int | None = None, models: dict[str, str] | None = None) -> Any:
    """The FastAPI app serving ``defs``'s online store.

    Args:
        defs: a :class:`~mlforge.project.Definitions` with an ``online_store``.
        token: bearer token required on every route but ``/health``; default: the
            ``MLFORGE_SERVE_TOKEN`` environment variable, else the first line of the file
            named by ``MLFORGE_SERVE_TOKEN_FILE``; unset means no auth, and so does
            ``token=""`` given here. An empty variable or token file is a
            :class:`~mlforge.errors.ConfigError`: it would turn auth off unsaid.
        max_batch: most entities in one ``/features/batch`` request (default 1000,
            env ``MLFORGE_SERVE_MAX_BATCH``).
        max_body_bytes: largest request body, answered with 413 past it (default 4 MiB,
            env ``MLFORGE_SERVE_MAX_BODY_BYTES``).
        models: model name -> MLflow model URI of models logged with
            ``mlf.mlflow.log_model(..., training_set=...)``, served at
            ``POST /models/{name}/predict`` (default env ``MLFORGE_SERVE_MODELS``); each is
            loaded once, here.

    Example:
        >>> import mlforge as mlf
        >>> from mlforge.online.memory import MemoryStore
        >>> app = create_app(mlf.Definitions("demo", [], online_store=MemoryStore()))
        >>> sorted({r.path for r in app.routes if r.path.startswith("/features")})
        ['/features', '/features/batch', '/features/online', '/features/{name}']
    """
    try:
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse as _StarletteJSON
        from fastapi.responses import Response
        from pydantic import (
            AfterValidator,
            BaseModel,
            ConfigDict,
            Field,
            FiniteFloat,
            model_validator,
        )
        from starlette.concurrency import run_in_threadpool
    except ImportError:
        raise missing_extra("fastapi", "serve") from None
    if defs.online_store is None:
        raise ConfigError("serving needs an online store", fix="set online_store= in Definitions or an online_store block in the profile")

    class JSONResponse(_StarletteJSON):
        def render(self, content: Any) -> bytes:
            return render_json(content)

    token = token if token is not None else server_token()
    limit = _positive_limit("max_batch", max_batch, MAX_BATCH_ENV, MAX_BATCH)
    body_limit = _positive_limit("max_body_bytes", max_body_bytes, MAX_BODY_ENV, MAX_BODY_BYTES)
    metrics = _Metrics()
    store = defs.online_store
    # How to read a feature whose values were not published (rows written directly): from
    # its definition. Made once: a lookup is on the hot path.
    stand_ins = {name: found or Publication.from_feature(defs.features[name]) for name, found in _stand_ins(defs, defs.features).items()}
    served = load_models(defs, models if models is not None else models_from_env())

    # NaN and Infinity are not key values (and json.loads accepts them), nor is text that
    # cannot be UTF-8 (a lone surrogate, which JSON's \ud800 escape can spell): 422.
    Scalar = Annotated[str, AfterValidator(_utf8_text)] | int | FiniteFloat | bool | None

    class OnlineRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        features: list[str] = Field(min_length=1, description="feature names")
        entity: dict[str, Scalar] | None = Field(None, min_length=1, description="key columns, or an entity's natural columns")
        entity_keys: dict[str, Scalar] | None = Field(None, min_length=1, description=V07_BODY_NOTE, json_schema_extra={"deprecated": True})
        at: datetime | None = Field(default=None, description="read time (ISO 8601, naive = UTC); default: now")

        @model_validator(mode="after")
        def one_entity(self) -> "OnlineRequest":
            _exactly_one(self.entity, self.entity_keys, "entity")
            return self

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        features: list[str] = Field(min_length=1)
        # more than `limit` entities: 413, in the route
        entities: list[dict[str, Scalar]] | None = Field(None, min_length=1)
        entity_keys: list[dict[str, Scalar]] | None = Field(None, min_length=1, description=V07_BODY_NOTE, json_schema_extra={"deprecated": True})
        at: datetime | None = Field(default=None, description="read time (ISO 8601, naive = UTC); default: now")

        @model_validator(mode="after")
        def one_list(self) -> "BatchRequest":
            _exactly_one(self.entities, self.entity_keys, "entities")
            return self

    class SetRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        entity: dict[str, Scalar] | None = Field(default=None, min_length=1, description="one entity")
        entities: list[dict[str, Scalar]] | None = Field(default=None, min_length=1, description="or several")
        at: datetime | None = Field(default=None, description="read time (ISO 8601, naive = UTC); default: now")

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        entities: list[dict[str, Scalar]] = Field(min_length=1, description="entity keys (and any other inputs the model reads)")
        at: datetime | None = Field(default=None, description="read time (ISO 8601, naive = UTC); default: now")

    # Everything but the store call runs on the event loop: each hop to the thread pool
    # costs more CPU than the checks themselves. Store calls block, so they get one hop.
    # The token and the body size are checked by _GuardMiddleware, before the body is read.
    app = FastAPI(title=f"mlforge online features: {defs.name}", version=_version())
    app.add_middleware(_GuardMiddleware, token=token or None, max_body_bytes=body_limit)
    app.add_middleware(_TimingMiddleware, metrics=metrics)
    app.state.defs, app.state.metrics = defs, metrics
    _install_error_handlers(app, _StarletteJSON)  # errors are small: the plain renderer, apart from the fast path

    @app.get("/health")
    async def health() -> Any:
        try:
            await run_in_threadpool(_store_call, store, "ping", store.ping)
        except OnlineStoreError as exc:
            return JSONResponse({"status": "unavailable", "online_store": repr(store), "detail": exc.what, "fix": exc.fix}, status_code=503)
        return {"status": "ok", "project": defs.name, "online_store": type(store).__name__, "features": len(defs.features)}

    @app.get("/features")
    def list_features() -> Any:
        return {"features": [_describe(defs, name, brief=True) for name in sorted(defs.features)]}

    # HEAD wherever a probe asks (RFC 9110: as GET, no body); out of the OpenAPI schema,
    # where a second operation of the same function would repeat its operation id.
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/features", list_features, methods=["HEAD"], include_in_schema=False)

    @app.get("/features/{name}")
    def show_feature(name: str) -> Any:
        if name in ("online", "batch"):
            raise Problem(405, f"/features/{name} takes POST with a JSON body", fix=f'POST /features/{name} with {REQUEST_EXAMPLE}', headers={"Allow": "POST"})
        _feature(defs, name)
        return _describe(defs, name, brief=False)

    @app.post("/features/online")
    async def online(body: OnlineRequest) -> Any:
        at = read_time(body.at)
        entity = body.entity if body.entity is not None else body.entity_keys
        assert entity is not None  # one_entity
        results = await _lookup(defs, store, stand_ins, metrics, body.features, [entity], at)
        answer = {"entity": entity, "at": at.isoformat(), **results[0]}
        if body.entity_keys is None:
            return JSONResponse(answer)
        return JSONResponse({**answer, "entity_keys": entity}, headers=V07_BODY_HEADERS)

    @app.post("/features/batch")
    async def batch(body: BatchRequest) -> Any:
        at = read_time(body.at)
        entities = body.entities if body.entities is not None else body.entity_keys
        assert entities is not None  # one_list
        _within(entities, limit)
        results = await _lookup(defs, store, stand_ins, metrics, body.features, entities, at)
        if body.entity_keys is None:
            return JSONResponse({"at": at.isoformat(), "results": [{"entity": e, **r} for e, r in zip(entities, results, strict=True)]})
        answers = [{"entity": e, "entity_keys": e, **r} for e, r in zip(entities, results, strict=True)]
        return JSONResponse({"at": at.isoformat(), "results": answers}, headers=V07_BODY_HEADERS)

    @app.get("/feature-sets")
    def list_feature_sets() -> Any:
        return {"feature_sets": [_describe_set(defs.feature_sets[name]) for name in sorted(defs.feature_sets)]}

    @app.post("/feature-sets/{name}/online")
    async def feature_set_online(name: str, body: SetRequest) -> Any:
        feature_set = _feature_set(defs, name)
        if (body.entity is None) == (body.entities is None):
            raise Problem(422, "give either 'entity' (one) or 'entities' (a list), not both or neither", fix='e.g. {"entity": {"user_id": "u1"}}')
        entities = [body.entity] if body.entity is not None else list(body.entities or [])
        _within(entities, limit)
        at = read_time(body.at)
        versions, results = await _set_lookup(defs, store, stand_ins, metrics, feature_set, entities, at)
        head = {"feature_set": name, "versions": versions, "at": at.isoformat()}
        if body.entity is not None:
            return JSONResponse({**head, "entity": body.entity, **results[0]})
        return JSONResponse({**head, "results": [{"entity": e, **r} for e, r in zip(entities, results, strict=True)]})

    @app.get("/models")
    def list_models() -> Any:
        return {"models": [_describe_model(name, served[name]) for name in sorted(served)]}

    @app.post("/models/{name}/predict")
    async def predict(name: str, body: PredictRequest) -> Any:
        model = served.get(name)
        if model is None:
            raise Problem(404, f"unknown model {name!r}", fix=f"served: {', '.join(sorted(served)) or 'none (start the server with --model NAME=URI)'} (GET /models)")
        _within(body.entities, limit)
        at = read_time(body.at)
        predictions = await run_in_threadpool(_predict, defs, model, body.entities, at)
        return JSONResponse({"model": name, "versions": model.features.versions, "at": at.isoformat(), "predictions": predictions})

    @app.get("/metrics")
    async def prometheus() -> Any:
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)

    return app


async def _lookup(defs: Any, store: Any, stand_ins: dict[str, Publication], metrics: "_Metrics", names: list[str], entities: list[dict[str, Any]], at: datetime, versions: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Per entity ``{"features": {feature: row | None}, "metadata": {feature: {...}}}``;
    one store call for all features and their publication records (which must be of the
    ``versions`` pinned, if any). A store that declares ``async_reads`` is awaited on the
    event loop; any other store's blocking call runs on a worker thread."""
    from starlette.concurrency import run_in_threadpool

    features = {name: _feature(defs, name) for name in dict.fromkeys(names)}
    try:
        requests = {name: [entity_key(f, e) for e in entities] for name, f in features.items()}
    except KeyProblem as exc:
        raise Problem(422, str(exc), fix="give each entity the feature's key columns (GET /features/{name} lists them)") from None
    never_built: list[str] = []
    waiting = {name: f for name, f in features.items() if stand_ins[name].version is None}
    if waiting:  # no version offline when last looked: built since?
        for name, publication in (await run_in_threadpool(_stand_ins, defs, waiting)).items():
            if publication is None:
                never_built.append(name)
            else:
                stand_ins[name] = publication
    publications = {name: stand_ins[name] for name in features}
    started = time.perf_counter()
    try:
        if store.capabilities.async_reads:
            readings = await _store_await(store, "read", lookup_async(store, publications, requests, at, versions, never_built))
        else:
            readings = await run_in_threadpool(_store_call, store, "read", lookup, store, publications, requests, at, versions, None, never_built)
    except OnlineStoreError:
        for name in features:
            metrics.lookup(name, "error", len(entities))
        raise
    elapsed = time.perf_counter() - started
    for name in features:
        metrics.read_latency(name, elapsed)
        hits = sum(r.known for r in readings[name])
        metrics.lookup(name, "hit", hits)
        metrics.lookup(name, "miss", len(entities) - hits)
    return [
        {
            "features": {name: readings[name][i].row for name in features},
            "metadata": {name: {"label_time": readings[name][i].label_time, "known": readings[name][i].known} for name in features},
        }
        for i in range(len(entities))
    ]


def _within(entities: list[Any], limit: int) -> None:
    """413 past ``limit`` entities in one request."""
    if len(entities) > limit:
        raise Problem(413, f"{len(entities)} entities are over the limit of {limit} per request", fix=f"split the batch (or start the server with a larger {MAX_BATCH_ENV} / --max-batch)")


def _store_call(store: Any, action: str, fn: Any, *args: Any) -> Any:
    """A store call; whatever a store client raises that the store did not translate is
    still the store's failure (503), never a 500 (O3)."""
    try:
        return fn(*args)
    except MlforgeError:
        raise
    except Exception as exc:
        raise _client_failure(store, action, exc) from None


async def _store_await(store: Any, action: str, pending: Any) -> Any:
    """:func:`_store_call` for an awaitable store call."""
    try:
        return await pending
    except MlforgeError:
        raise
    except Exception as exc:
        raise _client_failure(store, action, exc) from None


def _client_failure(store: Any, action: str, exc: Exception) -> OnlineStoreError:
    log.warning("online store %r failed to %s", store, action, exc_info=exc)
    # The client's own message may hold internals: it goes to the log, not to the caller.
    return OnlineStoreError(f"cannot {action}: the client of {type(store).__name__} failed with {type(exc).__name__} (see the server log)", where=repr(store), fix="retry; if it persists, check the online store and its client library")


async def _set_lookup(defs: Any, store: Any, stand_ins: dict[str, Publication], metrics: "_Metrics", feature_set: Any, entities: list[dict[str, Any]], at: datetime) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The set's versions, and per entity its members' rows (only the selected columns of a
    member that selects some), read at those versions."""
    from starlette.concurrency import run_in_threadpool

    pinned = await run_in_threadpool(defs.resolve_versions, feature_set)  # reads the offline store
    versions = {spec.name: spec.version for spec in pinned}
    results = await _lookup(defs, store, stand_ins, metrics, [spec.name for spec in pinned], entities, at, versions)
    for spec in pinned:
        if spec.columns is None:
            continue
        feature = defs.features[spec.name]
        keep = {*feature.keys, feature.timestamp_column, *spec.columns}
        for result in results:
            row = result["features"][spec.name]
            if row is not None:
                result["features"][spec.name] = {k: v for k, v in row.items() if k in keep}
    return versions, results


def _predict(defs: Any, model: scoring.LoadedModel, entities: list[dict[str, Any]], at: datetime) -> list[Any]:
    scored = defs.score_online(model, _model_inputs(defs, model, entities), at=at)
    return [jsonable(v) for v in scored.column(scoring.PREDICTION).to_pylist()]


def _model_inputs(defs: Any, model: scoring.LoadedModel, entities: list[dict[str, Any]]) -> Any:
    """The entities of a predict request as a table: each entity's join keys (given, or
    computed from its natural columns, as each entity of a batch may choose, rule K2), and
    the ``entity_df`` columns the model reads with the types they had in training (JSON has
    no timestamps: ``"2024-01-03T00:00:00Z"`` is read back as one)."""
    import pyarrow as pa

    rows = []
    for entity in entities:
        row = dict(entity)
        for spec in model.features.features:
            try:
                row.update(entity_key(defs.features[spec.name], entity))
            except KeyProblem as exc:
                raise Problem(422, str(exc), fix=f"give each entity the key columns {list(model.features.keys)} or their natural columns (GET /models)") from None
        rows.append(row)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    arrays = {c: [row.get(c) for row in rows] for c in columns}
    types = dict(model.features.input_types)
    return pa.table({c: _typed_input(c, values, types.get(c)) for c, values in arrays.items()})


def _typed_input(column: str, values: list[Any], type_text: str | None) -> Any:
    """One input column of a predict request in the type the model was trained on."""
    import pyarrow as pa

    target = exact_arrow_type(type_text) if type_text else None
    try:
        if target is None:
            return pa.array(values)
        temporal = pa.types.is_timestamp(target) or pa.types.is_date(target)
        if temporal and any(v is not None and not isinstance(v, str) for v in values):
            raise TypeError("not ISO 8601 text")  # a number would be read as ticks since 1970
        if (pa.types.is_integer(target) or pa.types.is_floating(target)) and any(isinstance(v, bool) for v in values):
            raise TypeError("a boolean is not a number")
        if pa.types.is_timestamp(target):  # read as `at` is: naive text is UTC
            values = [None if v is None else read_time(v) if target.tz is not None else read_time(v).replace(tzinfo=None) for v in values]
        elif pa.types.is_date(target):
            values = [None if v is None else date.fromisoformat(v) for v in values]
        return pa.array(values).cast(target)
    except (ValueError, TypeError, RetrievalError, pa.ArrowException) as exc:
        kind = f" of type {type_text}" if type_text else ""
        raise Problem(422, f"input column {column!r} cannot be read{kind}: {exc if isinstance(exc, TypeError) else type(exc).__name__}", fix=f"send {column!r} as in training{kind} (timestamps and dates as ISO 8601 text, naive = UTC)") from None


def _feature_set(defs: Any, name: str) -> Any:
    feature_set = defs.feature_sets.get(name)
    if feature_set is None:
        raise Problem(404, f"unknown feature set {name!r}", fix=f"available: {', '.join(sorted(defs.feature_sets)) or 'none'} (GET /feature-sets)")
    return feature_set


def _describe_set(feature_set: Any) -> dict[str, Any]:
    return {
        "name": feature_set.name,
        "description": feature_set.description,
        "features": [{"name": s.name, "version": s.version, "columns": list(s.columns) if s.columns else None} for s in feature_set.specs],
    }


def _describe_model(name: str, model: scoring.LoadedModel) -> dict[str, Any]:
    record = model.features
    return {
        "name": name,
        "uri": model.uri,
        "feature_set": record.feature_set,
        "versions": record.versions,
        "keys": list(record.keys),
        "natural_keys": {k: list(v) for k, v in record.natural_keys},
        "inputs": list(record.input_columns),
    }


def load_models(defs: Any, models: dict[str, str]) -> dict[str, scoring.LoadedModel]:
    """Each ``name -> URI`` loaded once; a model reading a feature this project does not
    define is refused at start-up, not at its first request.

    Raises:
        ConfigError: a bad name, an unloadable model, or a model of another project's features.
    """
    loaded: dict[str, scoring.LoadedModel] = {}
    for name, uri in models.items():
        try:
            check_name(name, kind="model")  # it becomes part of a URL path
        except MlforgeError as exc:
            raise ConfigError(exc.what, where=f"--model {name}={uri}", fix=exc.fix) from None
        model = defs.load_model(uri)
        unknown = [s.name for s in model.features.features if s.name not in defs.features]
        if unknown:
            raise ConfigError(f"model {name!r} reads feature(s) {unknown} that project {defs.name!r} does not define", where=f"--model {name}={uri}", fix="serve it from the project it was trained in")
        _warn_unserved_versions(defs, name, model)
        loaded[name] = model
    return loaded


def _warn_unserved_versions(defs: Any, name: str, model: scoring.LoadedModel) -> None:
    """Say at start-up, not at the first predict (a 422), when the online store serves other
    versions than the model was trained on (any new version counts, a new-data PATCH too)."""
    if defs.online_store is None:
        return
    for spec in (s for s in model.features.features if s.version is not None):
        try:
            served = read_publication(defs.online_store, spec.name)
        except Exception as exc:  # a store down at start-up: /health says so; the predicts answer 503
            log.debug("model %s: cannot read what the online store serves of %s (%s)", name, spec.name, exc)
            return
        version = served.version if served else None
        if version != spec.version:
            log.warning(
                "model %r was trained on %s %s, but the online store serves %s: its predictions answer 422 until %s %s is published "
                "(`mlforge rollback %s %s --online --yes`) or the model is trained and logged again on %s",
                name, spec.name, spec.version, version or "no version", spec.name, spec.version, spec.name, spec.version, version or "the published version",
            )


def parse_models(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["name=uri", ...]`` as a dict (``--model`` and ``MLFORGE_SERVE_MODELS``).

    >>> parse_models(["delays=runs:/abc/model"])
    {'delays': 'runs:/abc/model'}
    """
    models: dict[str, str] = {}
    for pair in pairs:
        name, sep, uri = pair.partition("=")
        if not sep or not name.strip() or not uri.strip():
            raise ConfigError(f"cannot read model {pair!r}", where="--model", fix="give NAME=URI, e.g. --model delays=runs:/<run_id>/model")
        if name.strip() in models:
            raise ConfigError(f"model {name.strip()!r} is given twice", where="--model", fix="give each model name once")
        models[name.strip()] = uri.strip()
    return models


def models_from_env() -> dict[str, str]:
    return parse_models([line for line in os.environ.get(MODELS_ENV, "").splitlines() if line.strip()])


def _feature(defs: Any, name: str) -> Any:
    feature = defs.features.get(name)
    if feature is None:
        raise Problem(404, f"unknown feature {name!r}", fix=f"available: {', '.join(sorted(defs.features)) or 'none'} (GET /features)")
    return feature


def _describe(defs: Any, name: str, *, brief: bool) -> dict[str, Any]:
    feature = defs.features[name]
    info: dict[str, Any] = {
        "name": name,
        "keys": list(feature.keys),
        "entities": [{"name": e.name, "join_key": e.join_key, "from_columns": list(e.from_columns or [])} for e in feature.entities],
        "timestamp": feature.timestamp_column,
        "interval": feature.interval,
        "ttl": feature.ttl,
        "tags": list(feature.tags),
        "description": feature.description,
    }
    try:
        record = defs.offline_store.read_record(name)
    except MlforgeError:
        record = None  # not built yet: still servable, every lookup is null (O2)
    info["version"] = record.version if record else None
    if not brief:  # what lookups answer from: the version published last (a rollback moves only `version`)
        try:
            served = _store_call(defs.online_store, "read", read_publication, defs.online_store, name)
        except MlforgeError as exc:  # a store down: the feature's description stands; /health says the store's state
            log.warning("GET /features/%s: cannot read what the online store serves: %s", name, exc)
            served = None
        info["served_version"] = served.version if served else None
    if not brief and record:
        info["columns"] = dict(record.schema)
        info["metrics"] = [m.to_dict() for m in record.metrics]
        info["created_at"] = record.created_at
    return info


def _install_error_handlers(app: Any, json_response: Any) -> None:
    """Known failures become clean JSON answers; anything else a bare 500 (logged here)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from mlforge.errors import DefinitionError, RetrievalError, VersionNotFound

    @app.exception_handler(Problem)
    def problem(request: Any, exc: Problem) -> Any:
        return json_response({"detail": redact(exc.detail), "fix": redact(exc.fix)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Any, exc: StarletteHTTPException) -> Any:
        detail, fix = str(exc.detail), "see the API in docs/serving.md"
        if exc.status_code == 404 and request.scope.get("route") is None:  # no route matched
            detail, fix = f"unknown route {request.method} {request.url.path}", f"the routes are {ROUTES}"
        elif exc.status_code == 405:
            detail, fix = f"{request.method} is not allowed on {request.url.path}", f"the routes are {ROUTES}"
        elif exc.status_code == 400:  # FastAPI could not parse the body (e.g. a number past Python's 4300 digits)
            detail = "the request body could not be read as JSON values (text that is not UTF-8, or a number past Python's 4300 digits)"
            fix = "send UTF-8 encoded JSON whose numbers have at most 4300 digits"
            return json_response({"detail": detail, "fix": fix}, status_code=422, headers=exc.headers)
        return json_response({"detail": redact(detail), "fix": fix}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Any, exc: RequestValidationError) -> Any:
        path = request.url.path
        example = next((body for prefix, body in _BODY_EXAMPLES if path.startswith(prefix)), REQUEST_EXAMPLE)
        # The offending input is not echoed back: it may be huge, or NaN (not JSON).
        errors = _body_errors(exc.errors())
        detail = "; ".join(f"{' > '.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:_LISTED]) + (f"; and {len(errors) - _LISTED} more" if len(errors) > _LISTED else "")
        return json_response({"detail": f"the request body is not valid: {detail}", "fix": f"send a JSON body like {example}; keys are UTF-8 strings, integers or finite numbers", "errors": errors[:_LISTED]}, status_code=422)

    @app.exception_handler(OnlineStoreError)
    def store_down(request: Any, exc: OnlineStoreError) -> Any:
        log.warning("online store unavailable: %s", exc.what)
        return json_response({"detail": f"online store unavailable: {exc.what}" + (f" (in {exc.where})" if exc.where else ""), "fix": exc.fix or "retry later"}, status_code=503)

    @app.exception_handler(MlforgeError)
    def mlforge_error(request: Any, exc: MlforgeError) -> Any:
        status = 404 if isinstance(exc, VersionNotFound) else 422 if isinstance(exc, (RetrievalError, DefinitionError, ConfigError)) else 503
        detail = exc.what + (f" (in {exc.where})" if exc.where else "")  # MlforgeError messages are redacted
        return json_response({"detail": detail, "fix": exc.fix or "see docs/serving.md"}, status_code=status)

    @app.exception_handler(Exception)
    def unexpected(request: Any, exc: Exception) -> Any:
        log.error("unexpected error serving %s", request.url.path, exc_info=exc)
        return json_response({"detail": f"internal error ({type(exc).__name__}); see the server log", "fix": "report it with the server log's traceback"}, status_code=500)


#: Characters of a body field name a 422 answer repeats, and problems it lists.
_ECHOED = 64
_LISTED = 10


def _body_errors(raw: Any) -> list[dict[str, Any]]:
    """Pydantic's problems with a body, one per location: a key value that fits no member
    of the union of key types comes as one problem per member, each location ending in
    the member's tag (``int``, ``function-after[...]``), which the caller never named. The
    names in a location are the body's own field names: each is cut short."""
    by_loc: dict[tuple[str, ...], dict[str, Any]] = {}
    for e in raw:
        loc = list(e.get("loc", ()))
        if len(loc) > 3 and loc[0] == "body" and isinstance(loc[-1], str) and ("[" in loc[-1] or loc[-1] in _UNION_TAGS):
            loc = loc[:-1]
        key = tuple(str(part)[:_ECHOED] for part in loc)
        if key in by_loc:
            if e.get("msg", "") not in by_loc[key]["msg"].split(" / "):
                by_loc[key]["msg"] += f" / {e.get('msg', '')}"
        else:
            by_loc[key] = {"loc": list(key), "msg": e.get("msg", ""), "type": e.get("type", "")}
    return list(by_loc.values())


#: The tags pydantic gives the members of the union of key value types.
_UNION_TAGS = {"str", "int", "float", "bool", "none", "finite-float", "function-after"}


def _utf8_text(text: str) -> str:
    """A key value's text, refused (422) when it cannot be UTF-8: a stored key never is."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text holding a lone surrogate (\\ud800-\\udfff) is not a key value; keys are UTF-8 text") from None
    return text


# -- metrics ----------------------------------------------------------------------------------
class _Metrics:
    """Prometheus metrics of one app; with ``PROMETHEUS_MULTIPROC_DIR`` set (several
    workers) every worker writes its samples there and ``/metrics`` sums them."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise missing_extra("prometheus_client", "serve") from None
        self._prom = prom
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # A private registry per app: several apps in one process (tests) never clash.
        registry = None if self.multiprocess else prom.CollectorRegistry()
        self.registry = registry
        self.requests = prom.Counter("mlforge_serve_requests", "HTTP requests by route and status code", ["route", "status"], registry=registry)
        self.latency = prom.Histogram("mlforge_serve_request_seconds", "HTTP request latency by route", ["route"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.lookups = prom.Counter("mlforge_serve_feature_lookups", "Entity lookups by feature and status (hit, miss, error)", ["feature", "status"], registry=registry)
        self.reads = prom.Histogram("mlforge_serve_store_read_seconds", "Online store read latency by feature", ["feature"], buckets=_LATENCY_BUCKETS, registry=registry)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def lookup(self, feature: str, status: str, count: int) -> None:
        if count:
            self.lookups.labels(feature, status).inc(count)

    def read_latency(self, feature: str, seconds: float) -> None:
        self.reads.labels(feature).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        prom = self._prom
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST
        return prom.generate_latest(self.registry or prom.REGISTRY), prom.CONTENT_TYPE_LATEST


class _TimingMiddleware:
    """Pure ASGI middleware timing every HTTP request (cheaper than ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Any, metrics: _Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request(route, status, time.perf_counter() - started)


class _GuardMiddleware:
    """Pure ASGI middleware that refuses a request before its body is read: a missing or
    wrong bearer token is 401 (every path but ``/health``), a declared or streamed body
    larger than ``max_body_bytes`` is 413."""

    def __init__(self, app: Any, token: str | None, max_body_bytes: int):
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization, declared = _guard_headers(scope)
        if self.token and scope.get("path") != "/health" and not _token_matches(authorization, self.token):
            await _refuse(send, 401, "missing or wrong bearer token", "send the header 'Authorization: Bearer <token>'", [(b"www-authenticate", b"Bearer")])
            return
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(send, 413, f"request body of {int(declared)} bytes is over the limit of {self.max_body_bytes}", _SMALLER)
            return
        received = 0
        refused = False
        over_limit = f"request body is over the limit of {self.max_body_bytes} bytes"

        async def bounded_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Any) -> None:
            # A body without a declared length passed the limit while being read: whatever
            # the app answers to the aborted read, the client gets the 413.
            nonlocal refused
            if received <= self.max_body_bytes:
                await send(message)
            elif not refused:
                refused = True
                await _refuse(send, 413, over_limit, _SMALLER)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except _BodyTooLarge:
            if not refused:
                await _refuse(send, 413, over_limit, _SMALLER)


class _BodyTooLarge(Exception):
    """A streamed request body passed the limit."""


def _guard_headers(scope: Any) -> tuple[str, str]:
    """The ``Authorization`` and ``Content-Length`` headers (ASGI names are lowercase bytes);
    the others are not decoded, as this runs on every request."""
    authorization = declared = b""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            authorization = value
        elif name == b"content-length":
            declared = value
    return authorization.decode("latin-1"), declared.decode("latin-1")


def _token_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    # The header arrived as bytes decoded as Latin-1 (HTTP's own charset): encode it back to
    # those bytes, which a client sends for a UTF-8 token as the token's UTF-8 bytes.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1"), token.encode("utf-8")
    )


_SMALLER = f"send a smaller body: split the batch (or start the server with a larger {MAX_BODY_ENV})"


async def _refuse(send: Any, status: int, detail: str, fix: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    import json

    body = json.dumps({"detail": detail, "fix": fix}).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


def server_token() -> str | None:
    """The bearer token from ``MLFORGE_SERVE_TOKEN``, else from the file named by
    ``MLFORGE_SERVE_TOKEN_FILE`` (so it need not appear on a command line)."""
    token = given_token(os.environ.get(TOKEN_ENV), TOKEN_ENV)
    if token is not None:
        return token
    path = os.environ.get(TOKEN_FILE_ENV)
    if path is None:
        return None
    if not path.strip():
        raise ConfigError(f"{TOKEN_FILE_ENV} is set but empty", where=TOKEN_FILE_ENV, fix="point it at a readable file whose first line is the token, or unset it to serve without authentication")
    try:
        with open(path, encoding="utf-8") as fh:
            return checked_token(fh.readline().strip(), f"the first line of {path}")
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path!r}: {exc.strerror}", where=TOKEN_FILE_ENV, fix="point it at a readable file whose first line is the token") from None


def given_token(token: str | None, where: str) -> str | None:
    """A token given by ``--token`` or ``MLFORGE_SERVE_TOKEN``: ``None`` when none is, or when
    an empty one stands beside ``MLFORGE_SERVE_TOKEN_FILE`` (the file's token is read then);
    any other empty one is a :class:`~mlforge.errors.ConfigError` (:func:`checked_token`)."""
    if token is None or (not token.strip() and os.environ.get(TOKEN_FILE_ENV) is not None):
        return None
    return checked_token(token, where)


def checked_token(token: str, where: str) -> str:
    """A token asked for must be one: an empty one (an unset shell variable in ``--token
    "$TOKEN"``, an empty secret file) would serve without authentication, unsaid."""
    if not token.strip():
        raise ConfigError(
            "the bearer token is empty, which would serve every route without authentication",
            where=where,
            fix=f"set it to the token clients send, or leave out --token and unset {TOKEN_ENV} and {TOKEN_FILE_ENV} to serve without authentication",
        )
    return token


def _version() -> str:
    from mlforge.release import __version__

    return __version__


# -- running ----------------------------------------------------------------------------------
def fill_in_process_store(defs: Any) -> list[OnlinePublish]:
    """Publish the latest version of every built feature into an in-process store
    (``MemoryStore``), which starts empty with its process; other stores are left alone."""
    store = defs.online_store
    if store is None or not store.capabilities.in_process:
        return []
    loaded = []
    for name in sorted(defs.features):
        if defs.offline_store.latest_version(name) is None:
            continue  # not built: every lookup reads as unknown (O2)
        loaded.append(publish_latest(defs.workspace, defs.features[name]))
    return loaded


def start_up(defs: Any, workers: int = 1) -> str:
    """Check the online store can serve with ``workers`` processes, fill an in-process one,
    and return the start-up line saying what is served.

    Raises:
        ConfigError: an in-process store (``MemoryStore``) with more than one worker: each
            worker would hold its own copy, and nothing keeps them equal.
    """
    store = defs.online_store
    if store is None:
        raise ConfigError("serving needs an online store", fix="set online_store= in Definitions or an online_store block in the profile")
    if store.capabilities.in_process and workers > 1:
        raise ConfigError(
            f"{type(store).__name__} keeps its values inside one process; {workers} workers cannot share it",
            where="--workers / online_store",
            fix="serve it with --workers 1, or use a shared online store (redis, valkey, dynamodb) for several workers",
        )
    head = f"serving {len(defs.features)} feature(s) of project {defs.name!r} from {type(store).__name__}"
    if not store.capabilities.in_process:
        return head
    loaded = fill_in_process_store(defs)
    if not loaded:
        return f"{head}: nothing built yet, so every lookup reads as unknown (run `mlforge build` first)"
    detail = ", ".join(f"{p.feature} {p.version} ({p.written} entities)" for p in loaded)
    return f"{head}: loaded the latest versions into this process from {type(defs.offline_store).__name__}: {detail}"


def app_from_env() -> Any:
    """Uvicorn factory for worker processes: loads the definitions named by
    ``MLFORGE_SERVE_TARGET`` (and ``MLFORGE_SERVE_PROFILE``) and builds the app."""
    from mlforge.loader import load_definitions

    target = os.environ.get(TARGET_ENV)
    if not target:
        raise ConfigError(f"{TARGET_ENV} is not set", fix="start workers through mlforge.serve.run or `mlforge serve`")
    defs = load_definitions(target, profile=os.environ.get(PROFILE_ENV) or None)
    app = create_app(defs)
    _settle_heap()
    return app


#: Collector thresholds while serving: a youngest-generation pass every 100,000 new
#: containers instead of every 700. Objects without cycles are freed by reference counting
#: anyway; a 100-entity answer makes a few thousand containers, so the default ran several
#: passes, and now and then an older-generation one, inside each such request.
SERVING_GC_THRESHOLDS = (100_000, 50, 100)


def _settle_heap() -> None:
    """Once the app is made: move everything loaded so far (the project, Ibis, Arrow...) out
    of the garbage collector's reach, and collect less often (:data:`SERVING_GC_THRESHOLDS`).
    A 100-entity request then seldom meets a collection: its p99 at 50 requests/s went from
    ~14 ms to ~9 ms (benchmarks/README.md, Online serving)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def run(
    defs: Any = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    token: str | None = None,
    *,
    target: str | None = None,
    profile: str | None = None,
    max_batch: int | None = None,
    log_level: str = "info",
    announce: Any = None,
    models: dict[str, str] | None = None,
) -> None:
    """Serve ``defs`` with uvicorn until interrupted.

    Args:
        defs: the loaded :class:`~mlforge.project.Definitions` (may be ``None`` when
            ``target`` is given).
        host, port: where to listen.
        workers: worker processes. With more than one, each worker loads the project
            itself from ``target`` (default: the file ``defs`` was loaded from) and the
            Prometheus samples of all workers are summed through a shared directory.
        token: bearer token (default env ``MLFORGE_SERVE_TOKEN``; unset = no auth; an
            empty or blank token is a :class:`~mlforge.errors.ConfigError`).
        target: the ``definitions.py`` (or its folder) for worker processes.
        profile: the ``mlforge.yaml`` profile worker processes load.
        max_batch: most entities per ``/features/batch`` request.
        log_level: uvicorn's log level.
        announce: called with the start-up line (default: logged); an in-process
            ``MemoryStore`` is filled with the latest built versions first, and refuses
            more than one worker.
        models: model name -> MLflow model URI to serve at ``POST /models/{name}/predict``.
    """
    try:
        import uvicorn
    except ImportError:
        raise missing_extra("uvicorn", "serve") from None
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}", fix="--workers 1")
    if max_batch:
        os.environ[MAX_BATCH_ENV] = str(int(max_batch))
    token = given_token(token, "--token")
    if token is not None:
        os.environ[TOKEN_ENV] = token
    if models:
        os.environ[MODELS_ENV] = "\n".join(f"{name}={uri}" for name, uri in models.items())
    if defs is None:
        from mlforge.loader import load_definitions

        defs = load_definitions(target, profile=profile)
    _check_address(host, port)
    line = start_up(defs, workers)
    app = create_app(defs, token, models=models)  # models load (and fail) before the server listens
    served = f" and model(s) {', '.join(sorted(models))}" if models else ""
    (announce or log.info)(f"{line}{served}, on http://{host}:{port} with {workers} worker(s)")
    if workers == 1:
        _settle_heap()
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    os.environ[TARGET_ENV] = str(target or _definitions_file(defs))
    if profile or (defs is not None and defs.profile):
        os.environ[PROFILE_ENV] = str(profile or defs.profile)
    _shared_metrics_dir()
    uvicorn.run("mlforge.serve:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level)


def _check_address(host: str, port: int) -> None:
    """Fail with a clear error (E2: exit 2) when the server could not listen at ``host:port``
    (a bad host, a port in use), before anything loads; uvicorn would log it and exit 3."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except (OSError, OverflowError, UnicodeError) as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc}",
            where="--host / --port",
            fix="choose a free port (or stop what listens there) and a local address of this machine",
        ) from None


def _definitions_file(defs: Any) -> str:
    """The file ``defs`` was loaded from: the module in ``sys.modules`` that holds it."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and any(value is defs for value in list(vars(module).values())):
            return file
    raise ConfigError(
        "several workers need the definitions file, and this Definitions object was not loaded from one",
        fix="pass target='path/to/definitions.py' (CLI: --target), or use --workers 1",
    )


def _shared_metrics_dir() -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="mlforge-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
