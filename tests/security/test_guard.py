"""The chassis mechanism itself: no entrypoint without a schema, every argument
checked (request_id included), and the store refusing a caller's dict or
server-side JavaScript in a filter whatever a use case does."""
from __future__ import annotations

import uuid

import pytest

from shared.errors import ValidationFailed
from shared.messaging.rpc import rpc
from shared.security import guard
from shared.storage.store import connect


def test_an_rpc_entrypoint_without_a_schema_does_not_register():
    with pytest.raises(TypeError, match="schema"):
        class Bare:
            name = "bare"

            @rpc
            def get_thing(self, thing_id):
                return thing_id
    with pytest.raises(TypeError, match="schema"):
        class Empty:
            name = "empty"

            @rpc()
            def get_thing(self, thing_id):
                return thing_id


def test_a_schema_that_leaves_out_a_parameter_does_not_register():
    with pytest.raises(TypeError, match="no schema field for reason"):
        class Partial:
            name = "partial"

            @rpc(schema={"thing_id": guard.Id()})
            def cancel_thing(self, thing_id, reason):
                return thing_id


def _arguments():
    def cancel_thing(self, thing_id, reason=None, count=1):
        return thing_id

    return guard.Arguments(cancel_thing, {"thing_id": guard.Id(), "reason": guard.Text(50),
                                          "count": guard.Int(1, 10)})


@pytest.mark.parametrize("args, kwargs, field", [
    (({"$gt": ""},), {}, "thing_id"),
    (("t1",), {"reason": {"$where": "1"}}, "reason"),
    (("t1",), {"count": 2 ** 63}, "count"),
    (("t1",), {"count": 11}, "count"),
    (("t1",), {"count": True}, "count"),
    (("t 1",), {}, "thing_id"),
    (("t" * 201,), {}, "thing_id"),
    (("\ud800",), {}, "thing_id"),
    (("t1",), {"reason": float("nan")}, "reason"),
    (("t1",), {"reason": [[[[[[[[[[[[["deep"]]]]]]]]]]]]]}, "reason.0.0.0.0.0.0.0.0.0.0.0.0"),
    (("t1",), {"request_id": {"$ne": None}}, "request_id"),
    (("t1",), {"request_id": "has space"}, "request_id"),
    (("t1",), {"request_id": 7}, "request_id"),
])
def test_hostile_arguments_are_refused_naming_the_field(args, kwargs, field):
    with pytest.raises(ValidationFailed) as info:
        _arguments().check(args, kwargs)
    assert field in info.value.field_errors, info.value.field_errors


def test_good_arguments_pass_with_caller_dicts_marked():
    args, kwargs = _arguments().check(("t1",), {"reason": None, "request_id": "req-1"})
    assert args == ("t1",) and kwargs == {"reason": None, "request_id": "req-1"}
    method = guard.Arguments(lambda self, payload: payload, {"payload": guard.Payload()})
    (payload,), _ = method.check(({"a": {"b": 1}},), {})
    assert isinstance(payload, guard.CallerDict) and isinstance(payload["a"], guard.CallerDict)


@pytest.fixture
def guarded_db(mongo_uri):
    client = connect(mongo_uri)
    name = f"guard_{uuid.uuid4().hex[:8]}"
    db = client[name]
    db.things.insert_many([{"_id": "a", "owner": "m1"}, {"_id": "b", "owner": "m2"}])
    yield guard.guarded(db)
    client.drop_database(name)
    client.close()


def test_the_store_refuses_a_callers_dict_in_a_filter(guarded_db):
    caller_value = guard.mark({"$gt": ""})  # as a use case would get it from an RPC argument
    for call in (lambda: guarded_db.things.find_one({"_id": caller_value}),
                 lambda: list(guarded_db.things.find({"owner": caller_value})),
                 lambda: guarded_db.things.update_one({"_id": caller_value}, {"$set": {"x": 1}}),
                 lambda: guarded_db["things"].delete_many({"$or": [{"_id": caller_value}]}),
                 lambda: guarded_db.things.count_documents({"_id": {"$in": [caller_value]}})):
        with pytest.raises(ValidationFailed) as info:
            call()
        assert "_id" in info.value.field_errors or "owner" in info.value.field_errors
    assert guarded_db.things.count_documents({}) == 2
    assert guarded_db.unguarded.things.count_documents({"x": 1}) == 0


def test_the_store_refuses_server_side_javascript_from_anyone(guarded_db):
    with pytest.raises(ValidationFailed):
        guarded_db.things.find_one({"$where": "true"})
    with pytest.raises(ValidationFailed):
        list(guarded_db.things.aggregate([{"$match": {"$expr": {"$function": {
            "body": "function() { return true }", "args": [], "lang": "js"}}}}]))


def test_operators_our_code_builds_still_work(guarded_db):
    assert guarded_db.things.count_documents({"_id": {"$in": ["a", "b"]}, "owner": {"$ne": None}}) == 2
    assert guarded_db.things.find_one({"_id": "a"})["owner"] == "m1"
    assert sorted(guarded_db.things.distinct("owner", {"_id": {"$gt": ""}})) == ["m1", "m2"]
