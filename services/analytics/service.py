"""The analytics service: entrypoints only. Every catalog event analytics consumes
has a handler (generated below from the event catalog) that funnels into one
ingestion function; KPIs are served over RPC, HTTP, Prometheus and a dashboard."""
from __future__ import annotations

import json
from datetime import timedelta
from zoneinfo import ZoneInfo

from marshmallow import fields
from pymongo.errors import DuplicateKeyError
from werkzeug.wrappers import Response

from services.analytics import admission, dashboard, domain, openapi, queries, schemas, store, tracking
from services.analytics.gauges import Gauges
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
from shared.subscriptions import handles
from shared.validation import load

log = get_logger(__name__)


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

    def ingest(self, envelope: dict) -> str:
        """The one ingestion function every handler and the collector use."""
        shards = self.shards
        with store.leases(shards).lease(envelope["event_id"]) as shard:
            with self.store.transaction() as tx:
                status = store.ingest(tx.db, tx.session, envelope, self.tz, shards=shards,
                                      shard=shard)
        if status in ("unknown", "invalid"):
            log.warning("event_kept_unfolded", status=status, event_type=envelope["event_type"],
                        source=envelope["source"], event_id=envelope["event_id"])
        return status

    # --- RPC ----------------------------------------------------------------------------

    @rpc(schema={"start": When(), "end": When()})
    def get_kpis(self, start=None, end=None):
        return queries.get_kpis(self.store.db, self.tz, self._range(start, end))

    @rpc(schema={"limit": Int(1, 500), "start": When(), "end": When()})
    def top_products(self, limit=10, start=None, end=None):
        args = load(schemas.Limit(), {"limit": limit})
        return queries.top_products(self.store.db, self.tz, self._range(start, end), args["limit"])

    @rpc(schema={"limit": Int(1, 500), "start": When(), "end": When()})
    def slow_products(self, limit=10, start=None, end=None):
        args = load(schemas.Limit(), {"limit": limit})
        return queries.slow_products(self.store.db, self.tz, self._range(start, end), args["limit"])

    @rpc(schema={"period": Choice(["month", "week"]), "first": Text(10), "last": Text(10)})
    def retention_cohorts(self, period="month", first=None, last=None):
        args = load(schemas.Cohorts(), {"period": period, "first": first, "last": last})
        return queries.retention_cohorts(self.store.db, self.tz, args["period"], args["first"],
                                         args["last"])

    @rpc(schema={"start": When(), "end": When()})
    def campaign_roi(self, start=None, end=None):
        window = setting(self, "attribution_window_days", 7)
        return queries.campaign_roi(self.store.db, self.tz, self._range(start, end), window)

    @rpc(schema={"experiment_key": Id()})
    def experiment_results(self, experiment_key):
        args = load(schemas.ExperimentKey(), {"experiment_key": experiment_key})
        return queries.experiment_results(
            self.store.db, args["experiment_key"], setting(self, "experiment_alpha", 0.05, float),
            setting(self, "experiment_min_exposures", 30))

    @rpc(schema={})
    def unfolded_events(self):
        """Counts of events kept but not folded (unknown type, or invalid payload)."""
        return queries.unfolded_counts(self.store.db)

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
        # One transaction per event, on purpose: each event's transaction touches one
        # counter shard, so concurrent requests rarely collide; a batch transaction
        # would hold a lock on most shards until its commit and collide with every
        # other batch, and a conflict would redo the whole batch. Idempotent per event_id.
        max_batch = setting(self, "track_max_batch", 100)
        envelopes = tracking.events_of(body, max_batch, self._shop_settings.currency)
        if admit is not None:
            admit(envelopes)
        accepted = duplicates = 0
        for envelope in envelopes:
            status = self._ingest_retrying(envelope)
            if status == "duplicate":
                duplicates += 1
            else:
                accepted += 1
        return {"id": "track", "accepted": accepted, "duplicates": duplicates,
                "event_ids": [e["event_id"] for e in envelopes]}

    def _ingest_retrying(self, envelope: dict) -> str:
        """Each event of a batch is retried on its own (write conflicts with replicas
        folding into the same documents), so a conflict never redoes the whole batch."""
        def ingest_once() -> str:
            try:
                return self.ingest(envelope)
            except DuplicateKeyError:
                return "duplicate"  # a concurrent request stored it first

        return call_with_retries(ingest_once, self._shop_settings, self.name, "http", "track")

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
            return json_response(queries.get_kpis(
                self.store.db, self.tz, self._range(request.args.get("start"), request.args.get("end"))))
        except ValidationFailed as exc:
            return _error(exc)

    @http("GET", "/dashboard", openapi=openapi.DASHBOARD)
    def http_dashboard(self, request):
        try:
            data = self._dashboard_data(request.args.get("start"), request.args.get("end"))
        except ValidationFailed as exc:
            return _error(exc)
        return Response(dashboard.render(data), mimetype="text/html")

    @http("GET", "/dashboard/data", openapi=openapi.DASHBOARD_DATA)
    def http_dashboard_data(self, request):
        try:
            return json_response(self._dashboard_data(request.args.get("start"), request.args.get("end")))
        except ValidationFailed as exc:
            return _error(exc)

    @http("GET", "/dashboard.js", openapi=openapi.SCRIPT)
    def http_dashboard_js(self, request):
        return Response(dashboard.SCRIPT, mimetype="application/javascript")

    def _dashboard_data(self, start, end) -> dict:
        db, tz = self.store.db, self.tz
        rng = self._range(start, end)
        days = domain.TimeRange(domain.local_day_start(rng.start, tz), rng.end + timedelta(days=1))
        experiments = []
        for key in queries.experiment_keys(db)[:10]:
            experiments.append(queries.experiment_results(
                db, key, setting(self, "experiment_alpha", 0.05, float),
                setting(self, "experiment_min_exposures", 30)))
        return {"currency": self._shop_settings.currency,
                "kpis": queries.get_kpis(db, tz, rng),
                "series": queries.daily_series(db, tz, days),
                "top_products": queries.top_products(db, tz, rng, 10),
                "cohorts": queries.retention_cohorts(db, tz, "month", None, None)["cohorts"][-12:],
                "campaign_roi": queries.campaign_roi(db, tz, rng,
                                                     setting(self, "attribution_window_days", 7)),
                "experiments": experiments}


def _error(exc: ShopError) -> Response:
    return json_response(exc.to_dict(), 400)


def _handler(event_type: str):
    def handler(self, envelope):
        self.ingest(envelope)

    handler.__name__ = handler.__qualname__ = f"on_{event_type}"
    handler.__doc__ = f"Store `{event_type}` once and fold it into the aggregates."
    return handler


# One handler per event of the catalog that names analytics as a consumer.
for _source, _event_type in store.analytics_events():
    setattr(AnalyticsService, f"on_{_event_type}", handles(_source, _event_type)(_handler(_event_type)))
