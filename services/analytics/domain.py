"""Pure analytics rules: time buckets in the shop's time zone, range resolution,
KPI arithmetic, percentiles, significance tests and personal-data stripping.
No I/O; `now` is always passed in."""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from shared.clock import parse_iso
from shared.errors import ValidationFailed

HOUR = timedelta(hours=1)
RATE_DIGITS = 6
MAX_RANGE_DAYS = 3 * 366
DEFAULT_RANGE_DAYS = 30

# Keys dropped from raw payloads: personal data (DESIGN.md) and free text.
PERSONAL_KEYS = frozenset({
    "shipping_address", "email", "phone", "name", "address", "text", "message", "resolution",
    "referrer", "landing_path", "path", "device", "region", "gender", "birth_year", "interests",
    "tracking_number",
})


# Fields that are codes in most events but free text the member wrote in these.
FREE_TEXT_FIELDS = {"return_requested": frozenset({"reason"})}


# --- counter shards ---------------------------------------------------------------------

DEFAULT_COUNTER_SHARDS = 16


def shard_of(event_id: str, shards: int) -> int:
    """The counter shard an event folds into: crc32 of its id modulo `shards`. Stable
    across processes and Python versions, so a rebuild refolds every event into the
    same shard documents live ingestion used."""
    if shards < 1:
        raise ValueError(f"counter shards must be at least 1, got {shards}")
    return zlib.crc32(str(event_id).encode("utf-8")) % shards


# --- time buckets -----------------------------------------------------------------------

def hour_floor(moment: datetime) -> datetime:
    moment = moment.astimezone(timezone.utc)
    return moment.replace(minute=0, second=0, microsecond=0)


def hour_ceil(moment: datetime) -> datetime:
    floor = hour_floor(moment)
    return floor if floor == moment.astimezone(timezone.utc) else floor + HOUR


def local_day_start(moment: datetime, tz: ZoneInfo) -> datetime:
    """UTC instant of the start of `moment`'s calendar day in `tz`."""
    local = moment.astimezone(tz)
    midnight = datetime(local.year, local.month, local.day, tzinfo=tz)
    return midnight.astimezone(timezone.utc)


def next_local_day_start(day_start: datetime, tz: ZoneInfo) -> datetime:
    local = day_start.astimezone(tz)
    nxt = (datetime(local.year, local.month, local.day) + timedelta(days=1)).replace(tzinfo=tz)
    return nxt.astimezone(timezone.utc)


@dataclass(frozen=True)
class Bucket:
    grain: str          # "hour" or "day"
    key: str            # "2026-11-26T20+0800" or "2026-11-26" (local)
    start: datetime     # UTC
    end: datetime       # UTC


def buckets_of(moment: datetime, tz: ZoneInfo) -> tuple[Bucket, Bucket]:
    """The hour and the local day `moment` falls in."""
    hour = hour_floor(moment)
    day = local_day_start(moment, tz)
    return (Bucket("hour", hour.astimezone(tz).strftime("%Y-%m-%dT%H%z"), hour, hour + HOUR),
            Bucket("day", day.astimezone(tz).strftime("%Y-%m-%d"), day, next_local_day_start(day, tz)))


def day_bucket_of_date(date_text: str, tz: ZoneInfo) -> datetime:
    """UTC start of a local calendar date `YYYY-MM-DD` (ad spend is booked by date)."""
    year, month, day = (int(part) for part in date_text.split("-"))
    return datetime(year, month, day, tzinfo=tz).astimezone(timezone.utc)


def month_key(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m")


def week_key(moment: datetime, tz: ZoneInfo) -> str:
    year, week, _ = moment.astimezone(tz).isocalendar()
    return f"{year:04d}-W{week:02d}"


def period_bounds(key: str, period: str, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
    """UTC [start, end) of the local month ("2026-11") or ISO week ("2026-W47") `key`,
    or None when `key` is not one."""
    try:
        if period == "month":
            year, month = (int(x) for x in key.split("-"))
            start = datetime(year, month, 1, tzinfo=tz)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
        else:
            year, week = key.split("-W")
            start = datetime.combine(datetime.fromisocalendar(int(year), int(week), 1).date(),
                                     datetime.min.time(), tzinfo=tz)
            end = start + timedelta(days=7)
    except ValueError:
        return None
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


# --- ranges -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def covering(self, tz: ZoneInfo) -> dict:
        """Whole local days inside the range (read from day buckets) and the hours at
        its edges (read from hour buckets): the read grows with buckets, not events."""
        first_day = local_day_start(self.start, tz)
        if first_day < self.start:
            first_day = next_local_day_start(first_day, tz)
        days_end = first_day
        while next_local_day_start(days_end, tz) <= self.end:
            days_end = next_local_day_start(days_end, tz)
        if days_end == first_day:
            return {"days": None, "hours": [(self.start, self.end)]}
        return {"days": (first_day, days_end),
                "hours": [(a, b) for a, b in ((self.start, first_day), (days_end, self.end)) if a < b]}


def _parse_moment(value, field: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return parse_iso(value)
    except (ValueError, TypeError):
        raise ValidationFailed.field(field, "Not an ISO 8601 timestamp.") from None


# The instants a range may name: no shop event is older than the epoch, and a range with
# room on both sides keeps the previous period and the rounding to whole local days
# inside what datetime can hold (year 1 to 9999).
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def _within_bounds(moment: datetime, field: str) -> datetime:
    if not EARLIEST <= moment <= LATEST:
        raise ValidationFailed.field(field, "Must be between 1970-01-01 and 9000-01-01.")
    return moment


def resolve_range(start, end, now: datetime, default_days: int = DEFAULT_RANGE_DAYS) -> TimeRange:
    """[start, end) in whole hours: start rounded down, end rounded up. Defaults:
    end = now, start = end - `default_days` days."""
    end_at = _within_bounds(_parse_moment(end, "end") if end not in (None, "") else now, "end")
    start_at = _within_bounds(_parse_moment(start, "start") if start not in (None, "")
                              else end_at - timedelta(days=default_days), "start")
    start_at, end_at = hour_floor(start_at), hour_ceil(end_at)
    if start_at >= end_at:
        raise ValidationFailed.field("end", "Must be after start.")
    if end_at - start_at > timedelta(days=MAX_RANGE_DAYS):
        raise ValidationFailed.field("start", f"The range may span at most {MAX_RANGE_DAYS} days.")
    return TimeRange(start_at, end_at)


PRESETS = ("today", "7d", "30d")


def dashboard_range(params: dict, now: datetime, tz: ZoneInfo) -> tuple[str, TimeRange]:
    """The dashboard's range and how it was chosen: `preset` (today: local midnight
    to now; 7d, 30d: the last 7 or 30 days), `from`/`to` (local calendar dates, both
    included), or `start`/`end` (ISO instants); default 7d. Resolved to whole hours."""
    preset = params.get("preset") or None
    if params.get("from") or params.get("to"):
        first = _local_date(params.get("from"), "from", tz)
        last = _local_date(params.get("to"), "to", tz)
        if last < first:
            raise ValidationFailed.field("to", "Must be on or after from.")
        return "custom", resolve_range(first, next_local_day_start(last, tz), now)
    if params.get("start") or params.get("end"):
        return "custom", resolve_range(params.get("start"), params.get("end"), now)
    preset = preset or "7d"
    if preset not in PRESETS:
        raise ValidationFailed.field("preset", f"Must be one of: {', '.join(PRESETS)}.")
    if preset == "today":
        return preset, resolve_range(local_day_start(now, tz), now, now)
    return preset, resolve_range(now - timedelta(days=int(preset[:-1])), now, now)


def previous_range(rng: TimeRange) -> TimeRange:
    """The period of the same length just before `rng` (for comparisons)."""
    return TimeRange(rng.start - (rng.end - rng.start), rng.start)


def _local_date(text, field: str, tz: ZoneInfo) -> datetime:
    try:
        year, month, day = (int(part) for part in str(text).split("-"))
        moment = datetime(year, month, day, tzinfo=tz)
    except (ValueError, TypeError):
        raise ValidationFailed.field(field, "Not a date (YYYY-MM-DD).") from None
    if not EARLIEST.year <= year < LATEST.year:  # before converting: year 1 in UTC+8 overflows
        raise ValidationFailed.field(field, "Must be between 1970-01-01 and 8999-12-31.")
    return moment.astimezone(timezone.utc)


# --- arithmetic -------------------------------------------------------------------------

def rate(part: int | float, whole: int | float) -> float:
    """part / whole rounded to 6 decimals; 0.0 when whole is 0."""
    if not whole:
        return 0.0
    return round(part / whole, RATE_DIGITS)


def money_div(amount: int, count: int) -> int:
    """amount / count in minor units, half away from zero; 0 when count is 0."""
    if not count:
        return 0
    return int((Decimal(amount) / Decimal(count)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least pct% at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def duration_summary(seconds: list[float]) -> dict:
    return {"count": len(seconds), "p50": percentile(seconds, 50), "p90": percentile(seconds, 90)}


def kpis(totals: dict, distinct: dict) -> dict:
    """The KPI dict from summed bucket counters and distinct-entity counts."""
    paid = totals.get("paid_total", 0)
    refunded = totals.get("refunded", 0)
    orders = totals.get("orders", 0)
    gmv = paid - refunded
    sessions = distinct["sessions"]
    funnel_counts = distinct["funnel"]
    steps = ["sessions", "product_viewed", "cart_updated", "checkout_started", "ordered"]
    counts = {"sessions": sessions, **funnel_counts}
    funnel = {"steps": [{"step": step, "sessions": counts[step],
                         "rate_from_previous": 1.0 if i == 0 else rate(counts[step], counts[steps[i - 1]]),
                         "rate_from_start": 1.0 if i == 0 else rate(counts[step], sessions)}
                        for i, step in enumerate(steps)]}
    return {
        "sessions": sessions,
        "page_views": totals.get("page_views", 0),
        "orders": orders,
        "orders_placed": totals.get("orders_placed", 0),
        "gross_paid": paid,
        "refunded": refunded,
        "gmv": gmv,
        "aov": money_div(gmv, orders),
        "conversion_rate": rate(counts["ordered"], sessions),
        "converted_sessions": counts["ordered"],
        "funnel": funnel,
        "buyers": distinct["buyers"],
        "repeat_buyers": distinct["repeat_buyers"],
        "repurchase_rate": rate(distinct["repeat_buyers"], distinct["buyers"]),
        "refund_rate": rate(refunded, paid),
        "new_members": totals.get("new_members", 0),
        "active_members": distinct["active_members"],
    }


def roi(revenue: int, cost: int) -> float | None:
    """(revenue - cost) / cost; None when nothing was spent."""
    if not cost:
        return None
    return round((revenue - cost) / cost, RATE_DIGITS)


# --- experiments ------------------------------------------------------------------------

def two_proportion_z_test(conv_a: int, n_a: int, conv_b: int, n_b: int) -> tuple[float | None, float | None]:
    """Two-sided pooled two-proportion z-test of b against a: (z, p-value)."""
    if n_a == 0 or n_b == 0:
        return None, None
    pooled = (conv_a + conv_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (conv_b / n_b - conv_a / n_a) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def verdict(variant: str, control: str, rate_v: float, rate_c: float, p_value: float | None,
            n_v: int, n_c: int, alpha: float = 0.05, min_exposures: int = 30) -> str:
    if variant == control:
        return "control"
    if min(n_v, n_c) < min_exposures or p_value is None:
        return f"not enough data yet (at least {min_exposures} exposures per variant needed)"
    if p_value < alpha:
        direction = "better" if rate_v > rate_c else "worse"
        return (f"{variant} converts significantly {direction} than {control} "
                f"(p = {p_value:.4f} < {alpha})")
    return f"no significant difference between {variant} and {control} (p = {p_value:.4f})"


def experiment_table(key: str, control: str | None, per_variant: dict[str, tuple[int, int]],
                     alpha: float = 0.05, min_exposures: int = 30) -> dict:
    """per_variant: variant -> (exposures, conversions)."""
    names = sorted(per_variant)
    if control is None or control not in per_variant:
        control = control if control in per_variant else (names[0] if names else None)
    n_c, x_c = per_variant.get(control, (0, 0))
    rate_c = x_c / n_c if n_c else 0.0
    rows = []
    for name in names:
        n, x = per_variant[name]
        rate_v = x / n if n else 0.0
        z, p = (None, None) if name == control else two_proportion_z_test(x_c, n_c, x, n)
        rows.append({
            "variant": name, "exposures": n, "conversions": x, "rate": round(rate_v, RATE_DIGITS),
            "lift": (round((rate_v - rate_c) / rate_c, RATE_DIGITS) if rate_c and name != control
                     else None),
            "z": None if z is None else round(z, RATE_DIGITS),
            "p_value": None if p is None else round(p, RATE_DIGITS),
            "verdict": verdict(name, control, rate_v, rate_c, p, n, n_c, alpha, min_exposures),
        })
    return {"id": key, "experiment_key": key, "control": control, "alpha": alpha, "variants": rows}


# --- cohorts ----------------------------------------------------------------------------

def cohort_table(periods_by_member: list[list[str]], all_periods: list[str]) -> list[dict]:
    """Rows per first-purchase period: size and the share active in each later period.
    `periods_by_member`: each buyer's sorted distinct purchase periods."""
    cohorts: dict[str, list[set[str]]] = {}
    for periods in periods_by_member:
        if periods:
            cohorts.setdefault(periods[0], []).append(set(periods))
    rows = []
    for cohort in sorted(cohorts):
        members = cohorts[cohort]
        later = [p for p in all_periods if p > cohort]
        rows.append({"cohort": cohort, "size": len(members),
                     "retention": [{"period": p, "offset": i + 1,
                                    "buyers": sum(1 for m in members if p in m),
                                    "share": rate(sum(1 for m in members if p in m), len(members))}
                                   for i, p in enumerate(later)]})
    return rows


# --- traffic sources --------------------------------------------------------------------

# Referrer hosts of the channels a Chinese shop buys or earns traffic from.
SOURCE_HOSTS = {"douyin.com": "douyin", "baidu.com": "baidu", "xiaohongshu.com": "xiaohongshu",
                "weibo.com": "weibo", "weixin.qq.com": "wechat", "bilibili.com": "bilibili",
                "taobao.com": "taobao", "google.com": "google", "bing.com": "bing"}


def traffic_source(session: dict) -> str:
    """Where a session came from: `referral` (a referral code), the channel of a known
    referrer host, `campaign` (a campaign link without one), `other` (another site) or
    `direct`."""
    if session.get("referral_code"):
        return "referral"
    referrer = session.get("referrer")
    if isinstance(referrer, str) and "://" in referrer:
        host = referrer.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0].lower()
        for suffix, channel in SOURCE_HOSTS.items():
            if host == suffix or host.endswith("." + suffix):
                return channel
        if host:
            return "other"
    return "campaign" if session.get("campaign_id") else "direct"


# --- personal data ----------------------------------------------------------------------

def strip_personal(data: dict, keep_region: bool = False, event_type: str | None = None) -> dict:
    """A copy of `data` without personal keys (recursively through dicts and lists), and
    without the fields that are free text in that event type (FREE_TEXT_FIELDS)."""
    data = {k: v for k, v in data.items() if k not in FREE_TEXT_FIELDS.get(event_type, ())}

    def clean(value):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k == "shipping_address" and keep_region and isinstance(v, dict):
                    out[k] = {"region": v.get("region")}
                elif k not in PERSONAL_KEYS:
                    out[k] = clean(v)
            return out
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(data)


def minimise(data: dict) -> dict:
    """What the raw store keeps of any payload: the shipping address shrinks to its region."""
    if isinstance(data.get("shipping_address"), dict):
        data = {**data, "shipping_address": {"region": data["shipping_address"].get("region")}}
    return data
