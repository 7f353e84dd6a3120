"""A/B experiments: creating one, assigning subjects to variants (deterministic, see
`domain.assign`) with the first exposure recorded once, stopping and concluding."""
from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from services.marketing import domain, metrics, schemas
from services.marketing.store import get_doc, insert_new
from services.marketing.views import public
from shared.clock import to_iso
from shared.errors import Conflict, ValidationFailed
from shared.validation import load


def _find(store, experiment_key: str, key_given) -> dict:
    return get_doc(store.db, "experiments", experiment_key, f"no experiment {key_given}",
                   {"experiment_key": key_given})


def create_experiment(store, experiment: dict, now: datetime) -> dict:
    data = load(schemas.Experiment(), experiment)
    doc = {"_id": data["key"], "key": data["key"], "variants": data["variants"],
           "control": data["control"], "description": data["description"],
           "status": "running", "winner": None, "created_at": to_iso(now)}
    insert_new(store, "experiments", doc,
               Conflict(f"experiment {data['key']} exists", {"key": data["key"]}),
               event=("experiment_created", {"experiment_key": data["key"],
                                             "variants": data["variants"],
                                             "control": data["control"]}))
    return public(doc)


def get_experiment(store, experiment_key: str) -> dict:
    out = public(_find(store, experiment_key, experiment_key))
    out["exposures"] = store.db.exposures.count_documents({"experiment_key": experiment_key})
    return out


def assign_variant(store, experiment_key, subject_id, now: datetime) -> dict:
    """Running: the subject's variant, its first assignment recorded and `experiment_exposed`
    emitted once. Stopped → control, concluded → the winner; neither exposes."""
    data = load(schemas.Assign(), {"experiment_key": experiment_key, "subject_id": subject_id})
    exp = _find(store, data["experiment_key"], experiment_key)
    out = {"id": f"{exp['_id']}|{data['subject_id']}", "experiment_key": exp["_id"],
           "subject_id": data["subject_id"], "status": exp["status"], "exposed": False}
    if exp["status"] != "running":
        out["variant"] = exp.get("winner") or exp["control"]
        return out
    variant = domain.assign(exp["_id"], data["subject_id"], exp["variants"])
    out["variant"] = variant
    key = f"{exp['_id']}|{data['subject_id']}"
    try:
        with store.transaction() as tx:
            if not tx.db.exposures.find_one({"_id": key}, session=tx.session):
                tx.db.exposures.insert_one({"_id": key, "experiment_key": exp["_id"],
                                            "subject_id": data["subject_id"], "variant": variant,
                                            "at": to_iso(now)}, session=tx.session)
                tx.emit("experiment_exposed", {"experiment_key": exp["_id"], "variant": variant,
                                               "subject_id": data["subject_id"]})
                out["exposed"] = True
    except DuplicateKeyError:  # a concurrent first assignment of the same subject exposed it
        out["exposed"] = False
    if out["exposed"]:
        metrics.EXPOSURES.inc()
    return out


def stop_experiment(store, experiment_key: str, now: datetime) -> dict:
    _find(store, experiment_key, experiment_key)
    store.db.experiments.update_one({"_id": experiment_key, "status": "running"},
                                    {"$set": {"status": "stopped", "stopped_at": to_iso(now)}})
    return get_experiment(store, experiment_key)


def conclude_experiment(store, experiment_key: str, winner, now: datetime) -> dict:
    """Concluding again with the same winner is a no-op; with another one, `Conflict`."""
    exp = _find(store, experiment_key, experiment_key)
    if winner not in {v["name"] for v in exp["variants"]}:
        raise ValidationFailed.field("winner", "Must name one of the variants.")
    done = store.db.experiments.update_one(
        {"_id": experiment_key, "status": {"$in": ["running", "stopped"]}},
        {"$set": {"status": "concluded", "winner": winner, "concluded_at": to_iso(now)}})
    if not done.matched_count and exp.get("winner") != winner:
        raise Conflict(f"experiment {experiment_key} already concluded",
                       {"winner": exp.get("winner")})
    return get_experiment(store, experiment_key)
