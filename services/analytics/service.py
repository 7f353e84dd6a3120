"""The analytics service: entrypoints only. Every event of its queue arrives in
batches (`on_event_batch`), `/track` requests are batches too, and both fold through
one batch ingestion function; KPIs are served over RPC, HTTP, Prometheus and a dashboard."""
from __future__ import annotations

import json

from marshmallow import fields
from werkzeug.wrappers import Response

from services.analytics import admission, config, domain, openapi, schemas, store, usecases, views
from services.analytics.metrics import Gauges
from shared.clock import utcnow
from shared.errors import ShopError, ValidationFailed
from shared.messaging.rpc import rpc
from shared.messaging.subscriptions import handles_batch
from shared.security import guard
from shared.security.guard import Choice, Id, Int, Text, When
from shared.service import ShopService, json_response
from shared.storage.store import Store
from shared.validation import load
from shared.web.http import error_response, http


class AnalyticsService(ShopService):
    name = "analytics"
    store = Store(indexes={**store.INDEXES, **admission.INDEXES})
    gauges = Gauges()

    @property
    def tz(self):
        return config.timezone(self._shop_settings)

    def _range(self, start, end, now=None):
        return domain.resolve_range(start, end, now or utcnow())

    # --- the event stream ---------------------------------------------------------------

    @handles_batch(max_size=500)
    def on_event_batch(self, envelopes: list[dict]):
        """Every event of `evt--analytics`, up to 500 at a time, in one transaction
        (usecases.ingest_stream_batch)."""
        usecases.ingest_stream_batch(self.store, self._shop_settings, envelopes)

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
        window = config.attribution_window_days(self._shop_settings)
        return views.campaign_roi(self.store.db, self.tz, self._range(start, end), window)

    @rpc(schema={"start": When(), "end": When()})
    def channel_roi(self, start=None, end=None):
        window = config.attribution_window_days(self._shop_settings)
        return views.channel_roi(self.store.db, self.tz, self._range(start, end), window)

    @rpc(schema={"experiment_key": Id()})
    def experiment_results(self, experiment_key):
        args = load(schemas.ExperimentKey(), {"experiment_key": experiment_key})
        return views.experiment_results(
            self.store.db, args["experiment_key"], config.experiment_alpha(self._shop_settings),
            config.experiment_min_exposures(self._shop_settings))

    @rpc(schema={})
    def unfolded_events(self):
        """Counts of events kept but not folded (unknown type, or invalid payload)."""
        return views.unfolded_counts(self.store.db)

    @rpc(schema={})
    def rebuild(self):
        """Recompute every aggregate from the raw store (consumers should be stopped)."""
        return {"id": "rebuild", **usecases.rebuild(self.store.db, self._shop_settings)}

    @rpc(schema={"events": fields.Raw()})
    def track(self, events):
        return self._track(events)

    # --- HTTP ---------------------------------------------------------------------------

    def _track(self, body, admit=None) -> dict:
        return usecases.track(self.store, self._shop_settings, self.name, body, admit)

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
        return views.dashboard(self.store.db, self.tz, params, utcnow(),
                               config.dashboard_options(self._shop_settings))


def _error(exc: ShopError) -> Response:
    return json_response(exc.to_dict(), 400)
