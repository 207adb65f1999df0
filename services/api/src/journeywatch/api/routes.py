"""HTTP routes: journeys, live state, metric history, anomalies (list, detail, ack, feedback, SSE), health."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from journeywatch.api.caching import CachedBody, cache_key, conditional, etag_of
from journeywatch.api.deps import AppContext, ContextDep, ReadAccess, WriteAccess
from journeywatch.api.errors import PROBLEM_RESPONSES, InvalidParameter, NotFound
from journeywatch.api.schemas import (
    AcknowledgeIn,
    AnomalyDetail,
    AnomalyOut,
    AnomalyPage,
    FeedbackIn,
    Health,
    JourneyList,
    JourneyOut,
    JourneyState,
    MetricHistory,
    MetricValue,
    Readiness,
    StageState,
    TimelineEntry,
)
from journeywatch.api.sse import anomaly_stream
from journeywatch.shared.anomalies import (
    AnomalyType,
    FeedbackCommand,
    Metric,
    MetricPoint,
    Severity,
)
from journeywatch.shared.db import ALL_CHANNELS, AnomalyQuery, PageKey, StoredAnomaly
from journeywatch.shared.events import Channel
from journeywatch.shared.journeys import Journey

T = TypeVar("T")

LIVE = "private, max-age=1"
STATIC = "private, max-age=60"
NO_STORE = "no-store"
ALL_CHANNELS_PARAM = "all"
CHANNEL_HELP = "A channel name, or `all` for the all-channel series only. Omitted: any."

router = APIRouter(prefix="/v1", dependencies=[ReadAccess], responses=PROBLEM_RESPONSES)
ops = APIRouter(tags=["operations"])

JourneyName = Annotated[str, Path(description="Journey name, e.g. `ecommerce`.")]
AnomalyId = Annotated[
    str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$", description="Anomaly id (`an_…`).")
]
MAX_EVENT_ID = 2**63 - 1
# OpenAPI 3.1: the `schema` of an event stream describes one event (3.2 would say `itemSchema`).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "Global event id."},
        "event": {"enum": ["anomaly.opened", "anomaly.updated", "anomaly.resolved"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "`{event_id, anomaly_id, sequence, change, recorded_at, anomaly}`",
        },
        "retry": {"type": "integer"},
    },
}
Since = Annotated[datetime | None, Query(description="ISO 8601; naive times are UTC.")]
Until = Annotated[datetime | None, Query(description="ISO 8601, exclusive; naive times are UTC.")]


# --- helpers -------------------------------------------------------------------------------


def _journey(ctx: AppContext, name: str) -> Journey:
    journey = ctx.catalog.journeys.get(name)
    if journey is None:
        raise NotFound(f"no journey named '{name}'")
    return journey


def _aware(value: datetime | None, parameter: str) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(parameter, "out of the supported date range") from None


def _range(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    since, until = _aware(since, "since"), _aware(until, "until")
    if since is not None and until is not None and until <= since:
        raise InvalidParameter("until", "must be later than 'since'")
    return since, until


def _channel(value: str | None) -> str | None:
    if value is None:
        return None
    if value == ALL_CHANNELS_PARAM:
        return ALL_CHANNELS
    if value not in Channel._value2member_map_:
        allowed = ", ".join([ALL_CHANNELS_PARAM, *(c.value for c in Channel)])
        raise InvalidParameter("channel", f"unknown channel '{value}' (one of {allowed})")
    return value


def _stage(ctx: AppContext, stage: str | None, journey: Journey | None) -> None:
    if stage is None:
        return
    journeys = [journey] if journey is not None else list(ctx.catalog.journeys.values())
    if not any(stage in j.stage_index for j in journeys):
        where = f"journey '{journey.name}'" if journey is not None else "any journey"
        raise InvalidParameter("stage", f"no stage '{stage}' in {where}")


def _step(ctx: AppContext, step: str | None, journey: Journey | None) -> str | None:
    if step is None:
        return None
    step = step.replace("->", "→")  # the ASCII spelling is easier to type in a shell
    journeys = [journey] if journey is not None else list(ctx.catalog.journeys.values())
    if not any(step == s.name for j in journeys for s in j.steps):
        where = f"journey '{journey.name}'" if journey is not None else "any journey"
        raise InvalidParameter("step", f"no step '{step}' in {where} (`from→to`, see its steps)")
    return step


def _touchpoint(touchpoint: str | None, journey: Journey) -> str | None:
    if touchpoint is None or touchpoint in journey.stage_of:
        return touchpoint
    raise InvalidParameter(
        "touchpoint", f"no touchpoint '{touchpoint}' in journey '{journey.name}'"
    )


def _encode_cursor(stored: StoredAnomaly) -> str:
    raw = orjson.dumps([stored.anomaly.opened_at.isoformat(), stored.anomaly.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> PageKey:
    try:
        opened, anomaly_id = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        key = PageKey(datetime.fromisoformat(opened), str(anomaly_id))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidParameter("cursor", "not a cursor this API returned") from None
    if key.opened_at.tzinfo is None:
        raise InvalidParameter("cursor", "not a cursor this API returned")
    return key


async def _cached(ctx: AppContext, request: Request, compute: Callable[[], Awaitable[T]]) -> T:
    """Reuse an identical GET's result for `api_response_cache_seconds` (one computation at a time)."""
    value: T = await ctx.cache.get_or_compute(cache_key(request.scope), compute)
    return value


def _live(request: Request, model: Any) -> CachedBody:
    body = _json(model)
    return CachedBody(body, etag_of(body), LIVE, route=request.scope.get("route"))


def _json(model: Any) -> bytes:
    data: bytes = model.model_dump_json().encode()
    return data


def _tagged(model: Any) -> tuple[bytes, str]:
    body = _json(model)
    return body, etag_of(body)


# --- journeys ------------------------------------------------------------------------------


def _static(ctx: AppContext, key: str, build: Callable[[], Any]) -> tuple[bytes, str]:
    found = ctx.static.get(key)
    if found is None:
        found = ctx.static[key] = _tagged(build())
    return found


@router.get("/journeys", response_model=JourneyList, tags=["journeys"])
async def list_journeys(request: Request, ctx: ContextDep) -> Response:
    """The configured journeys with their stages, touchpoints, funnel steps, goals and abandonment rules."""
    body, etag = _static(
        ctx,
        "journeys",
        lambda: JourneyList(
            default_journey=ctx.catalog.default_journey,
            items=[
                JourneyOut.of(j, default=name == ctx.catalog.default_journey)
                for name, j in ctx.catalog.journeys.items()
            ],
        ),
    )
    return conditional(request, body, etag=etag, cache_control=STATIC)


@router.get("/journeys/{journey}", response_model=JourneyOut, tags=["journeys"])
async def get_journey(request: Request, ctx: ContextDep, journey: JourneyName) -> Response:
    """One journey's definition: stages, funnel steps (with horizons), goals and rules."""
    found = _journey(ctx, journey)
    body, etag = _static(
        ctx,
        "journey:" + found.name,
        lambda: JourneyOut.of(found, default=found.name == ctx.catalog.default_journey),
    )
    return conditional(request, body, etag=etag, cache_control=STATIC)


@router.get("/journeys/{journey}/state", response_model=JourneyState, tags=["journeys"])
async def journey_state(request: Request, ctx: ContextDep, journey: JourneyName) -> Response:
    """The live funnel: latest closed window per stage and channel, with expected values, bands and open anomalies."""
    found = _journey(ctx, journey)

    async def compute() -> CachedBody:
        latest = await ctx.storage.latest_window(found.name)
        opened = await ctx.storage.open_anomalies(found.name)
        metrics: dict[str, dict[str, MetricValue]] = defaultdict(dict)
        channels: dict[str, dict[str, dict[str, MetricValue]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        for p in latest.points:
            if p.step is not None or p.touchpoint is not None:
                continue  # stage series only: a step's or touchpoint's history is in /metrics
            if p.channel is None:
                metrics[p.stage][p.metric.value] = MetricValue.of(p)
            else:
                channels[p.stage][p.channel][p.metric.value] = MetricValue.of(p)
        open_by_stage: dict[str, int] = defaultdict(int)
        for a in opened:
            open_by_stage[a.anomaly.stage] += 1
        first = latest.points[0] if latest.points else None
        state = JourneyState(
            journey=found.name,
            as_of=first.window_end if first else None,
            window_start=first.window_start if first else None,
            window_end=first.window_end if first else None,
            updated_at=latest.recorded_at,
            stages=[
                StageState(
                    stage=name,
                    index=i,
                    metrics=dict(sorted(metrics[name].items())),
                    channels={
                        c: dict(sorted(m.items())) for c, m in sorted(channels[name].items())
                    },
                    open_anomalies=open_by_stage[name],
                )
                for i, name in enumerate(found.stage_names)
            ],
            open_anomalies=[AnomalyOut.of(a) for a in opened],
            freshness_seconds=None,
        )
        body = _json(state)
        # The ETag covers the data, not the ever-changing freshness, so pollers get 304s;
        # freshness (the last field) is spliced in per request.
        assert body.endswith(_NO_FRESHNESS)
        return CachedBody(
            body[: -len(_NO_FRESHNESS)],
            etag_of(body),
            LIVE,
            route=request.scope.get("route"),
            splice=True,
            updated_at=latest.recorded_at,
        )

    entry = await _cached(ctx, request, compute)
    return entry.response(request.headers.get("if-none-match"))


_NO_FRESHNESS = b"null}"


@router.get("/journeys/{journey}/metrics", response_model=MetricHistory, tags=["journeys"])
async def journey_metrics(
    request: Request,
    ctx: ContextDep,
    journey: JourneyName,
    stage: Annotated[str | None, Query(description="A stage of the journey.")] = None,
    metric: Annotated[Metric | None, Query()] = None,
    channel: Annotated[str | None, Query(description=CHANNEL_HELP)] = None,
    step: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Only this funnel step's `step_conversion` series (`from→to` as in the "
            "journey's `steps`; `->` is accepted for `→`).",
        ),
    ] = None,
    touchpoint: Annotated[
        str | None,
        Query(max_length=64, description="Only this touchpoint's `touchpoint_count` series."),
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    """Window history (value, expected, band, score) of stage, step and touchpoint series for charts; without `since`, the latest `limit` points."""
    found = _journey(ctx, journey)
    _stage(ctx, stage, found)
    step = _step(ctx, step, found)
    touchpoint = _touchpoint(touchpoint, found)
    start, end = _range(since, until)
    channel_filter = _channel(channel)

    async def compute() -> CachedBody:
        points = await ctx.storage.metric_points(
            found.name,
            stage=stage,
            metric=metric.value if metric else None,
            channel=channel_filter,
            step=step,
            touchpoint=touchpoint,
            since=start,
            until=end,
            limit=limit,
        )
        return _live(request, MetricHistory(journey=found.name, items=points))

    entry = await _cached(ctx, request, compute)
    return entry.response(request.headers.get("if-none-match"))


# --- anomalies -----------------------------------------------------------------------------


@router.get("/anomalies", response_model=AnomalyPage, tags=["anomalies"])
async def list_anomalies(
    request: Request,
    ctx: ContextDep,
    status: Annotated[
        list[Literal["open", "acknowledged", "resolved"]] | None,
        Query(description="Repeatable. open = unacknowledged and unresolved."),
    ] = None,
    type_: Annotated[
        list[AnomalyType] | None, Query(alias="type", description="Repeatable.")
    ] = None,
    journey: Annotated[str | None, Query()] = None,
    stage: Annotated[str | None, Query()] = None,
    step: Annotated[
        str | None,
        Query(
            max_length=200,
            description="A funnel step, `from→to` as in a journey's `steps` (e.g. "
            "`product_view→add_to_cart`; `->` is accepted for `→`).",
        ),
    ] = None,
    channel: Annotated[str | None, Query(description=CHANNEL_HELP)] = None,
    severity: Annotated[list[Severity] | None, Query(description="Repeatable.")] = None,
    since: Annotated[
        datetime | None, Query(description="Incidents still active at or after this time.")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Incidents opened before this time.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
    ] = None,
) -> Response:
    """Incidents, newest first, with filters and cursor pagination."""
    found = None
    if journey is not None:
        if journey not in ctx.catalog.journeys:
            raise InvalidParameter("journey", f"no journey named '{journey}'")
        found = ctx.catalog.journeys[journey]
    _stage(ctx, stage, found)
    step = _step(ctx, step, found)
    start, end = _range(since, until)
    after = _decode_cursor(cursor) if cursor else None
    query = AnomalyQuery(
        statuses=frozenset(status or ()),
        types=frozenset(t.value for t in type_ or ()),
        severities=frozenset(s.value for s in severity or ()),
        journey=journey,
        stage=stage,
        step=step,
        channel=_channel(channel),
        since=start,
        until=end,
    )

    async def compute() -> CachedBody:
        rows = await ctx.storage.list_anomalies(query, limit=limit + 1, after=after)
        page = rows[:limit]
        return _live(
            request,
            AnomalyPage(
                items=[AnomalyOut.of(a) for a in page],
                next_cursor=_encode_cursor(page[-1]) if len(rows) > limit else None,
            ),
        )

    entry = await _cached(ctx, request, compute)
    return entry.response(request.headers.get("if-none-match"))


@router.get(
    "/anomalies/stream",
    tags=["anomalies"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: one event per lifecycle change "
            "(`event: anomaly.opened|updated|resolved`, `id:` global event id), "
            "`: keepalive` comments while idle.",
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        }
    },
)
async def stream_anomalies(
    ctx: ContextDep,
    journey: Annotated[str | None, Query(description="Only this journey's changes.")] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_EVENT_ID,
            description="Start after this event id (0 = from the beginning). "
            "Omitted: only changes from now on.",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Sent by EventSource on reconnect; wins over `after`.",
        ),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events of anomaly lifecycle changes; reconnect with Last-Event-ID to resume without gaps."""
    if journey is not None and journey not in ctx.catalog.journeys:
        raise InvalidParameter("journey", f"no journey named '{journey}'")
    start = after
    if last_event_id is not None and last_event_id.strip():
        try:
            start = int(last_event_id)
        except ValueError:
            raise InvalidParameter(
                "Last-Event-ID", "must be an event id (integer)", "header"
            ) from None
        if not 0 <= start <= MAX_EVENT_ID:
            raise InvalidParameter("Last-Event-ID", "must be an event id (0 … 2^63-1)", "header")
    if start is None:
        start = await ctx.storage.last_event_id()
    return StreamingResponse(
        anomaly_stream(
            ctx.storage,
            after=start,
            journey=journey,
            poll_seconds=ctx.settings.api_sse_poll_seconds,
            heartbeat_seconds=ctx.settings.api_sse_heartbeat_seconds,
            shutdown=ctx.shutdown,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/anomalies/{anomaly_id}", response_model=AnomalyDetail, tags=["anomalies"])
async def get_anomaly(request: Request, ctx: ContextDep, anomaly_id: AnomalyId) -> Response:
    """One incident with its full timeline (opened / updated / resolved) and contributors."""

    async def compute() -> CachedBody:
        stored = await ctx.storage.get_anomaly(anomaly_id)
        if stored is None:
            raise NotFound(f"no anomaly with id '{anomaly_id}'")
        timeline = [TimelineEntry.of(e) for e in await ctx.storage.timeline(anomaly_id)]
        out = AnomalyOut.of(stored)
        history = await _incident_history(ctx, stored)
        return _live(request, AnomalyDetail(**out.__dict__, timeline=timeline, history=history))

    entry = await _cached(ctx, request, compute)
    return entry.response(request.headers.get("if-none-match"))


# The chart of an incident: its series from this many windows before it began to as many after
# it ended (or to now), enough to see the normal level on both sides.
HISTORY_CONTEXT_WINDOWS = 30
HISTORY_MAX_POINTS = 500


async def _incident_history(ctx: AppContext, stored: StoredAnomaly) -> list[MetricPoint]:
    a = stored.anomaly
    window = a.window_end - a.window_start
    began = min(a.onset or a.opened_at, a.opened_at) - window  # opened_at is a window's end
    ended = a.resolved_at or a.updated_at
    return await ctx.storage.metric_points(
        a.journey,
        stage=a.stage,
        metric=a.metric.value,
        channel=a.channel or ALL_CHANNELS,
        step=a.step or "",
        touchpoint=a.touchpoint or "",
        since=began - HISTORY_CONTEXT_WINDOWS * window,
        until=ended + HISTORY_CONTEXT_WINDOWS * window,
        limit=HISTORY_MAX_POINTS,
    )


async def _publish(ctx: AppContext, stored: StoredAnomaly, **fields: Any) -> None:
    a = stored.anomaly
    await ctx.publisher.publish(
        FeedbackCommand(
            anomaly_id=a.id,
            journey=a.journey,
            stage=a.stage,
            channel=a.channel,
            metric=a.metric,
            type=a.type,
            window_start=a.window_start,
            window_end=a.window_end,
            **fields,
        )
    )


def _written(stored: StoredAnomaly) -> Response:
    return Response(
        _json(AnomalyOut.of(stored)),
        media_type="application/json",
        headers={"Cache-Control": NO_STORE},
    )


WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: PROBLEM_RESPONSES[404] | {"description": "The body is not JSON"},
    503: PROBLEM_RESPONSES[404]
    | {"description": "Stored, but the feedback topic is unreachable; retry"},
}


@router.post(
    "/anomalies/{anomaly_id}/acknowledge",
    response_model=AnomalyOut,
    tags=["anomalies"],
    dependencies=[WriteAccess],
    responses=WRITE_RESPONSES,
)
async def acknowledge(
    ctx: ContextDep,
    anomaly_id: AnomalyId,
    body: Annotated[AcknowledgeIn, Body()],
) -> Response:
    """Record who is working on an incident (status becomes `acknowledged`) and tell the detector."""
    at = datetime.now(UTC)
    stored = await ctx.storage.acknowledge(anomaly_id, by=body.by, comment=body.comment, at=at)
    if stored is None:
        raise NotFound(f"no anomaly with id '{anomaly_id}'")
    ctx.cache.clear()
    await _publish(ctx, stored, action="acknowledge", by=body.by, comment=body.comment, at=at)
    return _written(stored)


@router.post(
    "/anomalies/{anomaly_id}/feedback",
    response_model=AnomalyOut,
    tags=["anomalies"],
    dependencies=[WriteAccess],
    responses=WRITE_RESPONSES,
)
async def feedback(
    ctx: ContextDep, anomaly_id: AnomalyId, body: Annotated[FeedbackIn, Body()]
) -> Response:
    """Judge an incident true or false positive; the detector learns from it (see docs/API.md)."""
    at = datetime.now(UTC)
    stored = await ctx.storage.apply_feedback(
        anomaly_id, verdict=body.verdict, by=body.by, comment=body.comment, at=at
    )
    if stored is None:
        raise NotFound(f"no anomaly with id '{anomaly_id}'")
    ctx.cache.clear()
    await _publish(
        ctx,
        stored,
        action="feedback",
        verdict=body.verdict,
        by=body.by,
        comment=body.comment,
        at=at,
    )
    return _written(stored)


# --- operations ----------------------------------------------------------------------------


@ops.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(status="ok")


@ops.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(ctx: ContextDep) -> Response:
    """Readiness: the database answers (the feedback producer is reported, not required)."""
    database = await ctx.storage.ping()
    body = Readiness(
        status="ready" if database else "not_ready",
        database=database,
        feedback_producer=ctx.publisher.ready,
    )
    return Response(
        _json(body),
        status_code=200 if database else 503,
        media_type="application/json",
        headers={"Cache-Control": NO_STORE},
    )


@ops.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
