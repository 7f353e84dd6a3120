"""The analytics service: entrypoints only. Every event of its queue arrives in
batches (`on_event_batch`), `/track` requests are batches too, and both fold through
one batch ingestion function; KPIs are served over RPC, HTTP, Prometheus and a dashboard."""
from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from eventlet.semaphore import Semaphore
from marshmallow import fields
from pymongo.errors import DuplicateKeyError
from werkzeug.wrappers import Response

from services.analytics import admission, domain, openapi, schemas, store, views
from services.analytics.metrics import Gauges
from shared import guard
from shared.clock import utcnow
from shared.errors import ShopError, ValidationFailed
from shared.guard import Choice, Id, Int, Text, When
from shared.http import error_response, http
from shared.logs import get_logger
from shared.retry import call_with_retries
from shared.rpc import rpc
from shared.service import ShopService, json_response
from shared.store import Store
from shared.subscriptions import handles_batch
from shared.validation import load

log = get_logger(__name__)
# One stream batch in flight per process (see on_event_batch).
STREAM_BATCHES = Semaphore(1)


def setting(service, name: str, default, kind=int):
    """A business setting: Settings.extra (tests) first, then ANALYTICS_<NAME>."""
    return service._shop_settings.option(name, default, kind)


class AnalyticsService(ShopService):
    name = "analytics"
    store = Store(indexes={**store.INDEXES, **admission.INDEXES})
    gauges = Gauges()

    # --- helpers ------------------------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self._shop_settings.timezone)

    @property
    def shards(self) -> int:
        """ANALYTICS_COUNTER_SHARDS: counter documents per (bucket, dim, key)."""
        return store.counter_shards(self._shop_settings)

    def _range(self, start, end, now=None):
        return domain.resolve_range(start, end, now or utcnow())

    def ingest_batch(self, envelopes: list[dict], validated: bool = False) -> list[str]:
        """Store and fold a batch in ONE transaction, every event of the batch into
        one counter shard leased for the batch: the process's concurrent batches never
        write the same bucket document, so they do not abort each other."""
        shards = self.shards
        with store.leases(shards).lease(envelopes[0]["event_id"]) as shard:
            with self.store.transaction() as tx:
                statuses = store.ingest_batch(tx.db, tx.session, envelopes, self.tz, shard,
                                              validated=validated)
        self._log_unfolded(envelopes, statuses)
        return statuses

    def ingest(self, envelope: dict) -> str:
        """One event: a batch of one."""
        return self.ingest_batch([envelope])[0]

    def _log_unfolded(self, envelopes: list[dict], statuses: list[str]) -> None:
        for envelope, status in zip(envelopes, statuses, strict=True):
            if status in ("unknown", "invalid"):
                log.warning("event_kept_unfolded", status=status, event_type=envelope["event_type"],
                            source=envelope["source"], event_id=envelope["event_id"])

    # --- the event stream ---------------------------------------------------------------

    @handles_batch(max_size=500)
    def on_event_batch(self, envelopes: list[dict]):
        """Every event of `evt--analytics`, up to 500 at a time, in one transaction:
        its inbox rows (the chassis records them in the first transaction and leaves
        in `tx.fresh` the events this consumer never applied) and the batch fold.
        One stream batch at a time per process: with a backlog the chassis hands out
        batches back to back, and concurrent batches of one order's or one member's
        events write the same summaries and abort each other (measured: every batch
        retried); the next batch waits instead, and replicas add the parallelism.
        The raw store's own look-up still drops an event already stored by another
        path (a rebuild, or a replay with a new inbox)."""
        shards = self.shards
        with STREAM_BATCHES, store.leases(shards).lease(envelopes[0]["event_id"]) as shard:
            with self.store.transaction() as tx:
                fresh = tx.fresh
                statuses = store.ingest_batch(tx.db, tx.session, fresh, self.tz, shard) if fresh else []
        self._log_unfolded(fresh, statuses)

    # --- RPC ----------------------------------------------------------------------------

    @rpc(schema={"start": When(), "end": When()})
    def get_kpis(self, start=None, end=None):
        return views.get_kpis(self.store.db, self.tz, self._range(start, end))

    @rpc(schema={"limit": Int(1, 500), "start": When(), "end": When()})
    def top_products(self, limit=10, start=None, end=None):
        args = load(schemas.Limit(), {"limit": limit})
        return views.top_products(self.store.db, self.tz, self._range(start, end), args["limit"])

    @rpc(schema={"limit": Int(1, 500), "start": When(), "end": When()})
    def slow_products(self, limit=10, start=None, end=None):
        args = load(schemas.Limit(), {"limit": limit})
        return views.slow_products(self.store.db, self.tz, self._range(start, end), args["limit"])

    @rpc(schema={"period": Choice(["month", "week"]), "first": Text(10), "last": Text(10)})
    def retention_cohorts(self, period="month", first=None, last=None):
        args = load(schemas.Cohorts(), {"period": period, "first": first, "last": last})
        return views.retention_cohorts(self.store.db, self.tz, args["period"], args["first"],
                                         args["last"])

    @rpc(schema={"start": When(), "end": When()})
    def campaign_roi(self, start=None, end=None):
        window = setting(self, "attribution_window_days", 7)
        return views.campaign_roi(self.store.db, self.tz, self._range(start, end), window)

    @rpc(schema={"start": When(), "end": When()})
    def channel_roi(self, start=None, end=None):
        window = setting(self, "attribution_window_days", 7)
        return views.channel_roi(self.store.db, self.tz, self._range(start, end), window)

    @rpc(schema={"experiment_key": Id()})
    def experiment_results(self, experiment_key):
        args = load(schemas.ExperimentKey(), {"experiment_key": experiment_key})
        return views.experiment_results(
            self.store.db, args["experiment_key"], setting(self, "experiment_alpha", 0.05, float),
            setting(self, "experiment_min_exposures", 30))

    @rpc(schema={})
    def unfolded_events(self):
        """Counts of events kept but not folded (unknown type, or invalid payload)."""
        return views.unfolded_counts(self.store.db)

    @rpc(schema={})
    def rebuild(self):
        """Recompute every aggregate from the raw store (consumers should be stopped)."""
        result = store.rebuild(self.store.db, self.tz, shards=self.shards)
        log.info("analytics_rebuilt", **result)
        return {"id": "rebuild", **result}

    @rpc(schema={"events": fields.Raw()})
    def track(self, events):
        return self._track(events)

    # --- HTTP ---------------------------------------------------------------------------

    def _track(self, body, admit=None) -> dict:
        # One request = one batch = one transaction: validated first (all or nothing),
        # then stored and folded together. Idempotent per event_id.
        max_batch = setting(self, "track_max_batch", 500)
        envelopes = schemas.events_of(body, max_batch, self._shop_settings.currency)
        if admit is not None:
            admit(envelopes)

        def ingest_once() -> list[str]:
            try:
                return self.ingest_batch(envelopes, validated=True)
            except DuplicateKeyError:
                # A concurrent request committed one of these event ids after our
                # look-up; the transaction is aborted, and a re-run sees it stored.
                return self.ingest_batch(envelopes, validated=True)

        statuses = call_with_retries(ingest_once, self._shop_settings, self.name, "http", "track")
        duplicates = statuses.count("duplicate")
        return {"id": "track", "accepted": len(statuses) - duplicates, "duplicates": duplicates,
                "event_ids": [e["event_id"] for e in envelopes]}

    @http("POST", "/track", access="own", openapi=openapi.TRACK)
    def http_track(self, request):
        # Authenticate before reading the body as JSON; count the request before
        # validating it, so a flood of bad bodies is limited too (admission.py).
        raw, settings, now = request.get_data(), self._shop_settings, utcnow()
        try:
            key = admission.authenticate(request.headers, raw, settings)
            admission.limit_rate(self.store.db, key, settings, now)
            try:
                body = json.loads(raw.decode("utf-8") or "null")
            except ValueError:
                raise ValidationFailed.field("_schema", "The body is not valid JSON.") from None
            guard.inspect(body)
            return json_response(self._track(admission.identify(body, key, settings, now),
                                             admit=lambda envelopes: admission.clamp(
                                                 envelopes, key, settings, now)), 202)
        except ShopError as exc:
            return error_response(exc)

    @http("GET", "/kpis", openapi=openapi.KPIS)
    def http_kpis(self, request):
        try:
            return json_response(views.get_kpis(
                self.store.db, self.tz, self._range(request.args.get("start"), request.args.get("end"))))
        except ValidationFailed as exc:
            return _error(exc)

    @http("GET", "/dashboard", openapi=openapi.DASHBOARD)
    def http_dashboard(self, request):
        try:
            payload = self._dashboard_data(request.args.to_dict())
        except ValidationFailed as exc:
            return _error(exc)
        return Response(views.render_dashboard(payload), mimetype="text/html")

    @http("GET", "/dashboard/data", openapi=openapi.DASHBOARD_DATA)
    def http_dashboard_data(self, request):
        try:
            return json_response(self._dashboard_data(request.args.to_dict()))
        except ValidationFailed as exc:
            return _error(exc)

    @http("GET", "/dashboard.js", openapi=openapi.SCRIPT)
    def http_dashboard_js(self, request):
        return Response(views.DASHBOARD_SCRIPT, mimetype="application/javascript")

    @http("GET", "/dashboard/vendor/chart.umd.min.js", openapi=openapi.CHART_SCRIPT)
    def http_chart_js(self, request):
        return Response(views.CHART_JS, mimetype="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    def _dashboard_data(self, params: dict) -> dict:
        options = views.DashboardOptions(
            currency=self._shop_settings.currency,
            locale=setting(self, "locale", "zh-CN", str),
            attribution_window_days=setting(self, "attribution_window_days", 7),
            experiment_alpha=setting(self, "experiment_alpha", 0.05, float),
            experiment_min_exposures=setting(self, "experiment_min_exposures", 30),
            refresh_seconds=setting(self, "dashboard_refresh_seconds", 60))
        return views.dashboard(self.store.db, self.tz, params, utcnow(), options)


def _error(exc: ShopError) -> Response:
    return json_response(exc.to_dict(), 400)
