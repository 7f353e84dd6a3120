"""RPC payload schemas: bad input is named by field (no broker, no mongod)."""
import pytest

from services.member import schemas
from shared.errors import ValidationFailed
from shared.validation import load


def register(**overrides):
    payload = {"email": " li@example.com ", "name": " Li ", "consent": {"sms": True}}
    payload.update(overrides)
    return load(schemas.Register(), payload)


def test_register_strips_and_defaults():
    data = register()
    assert data["email"] == "li@example.com" and data["name"] == "Li"
    assert data["interests"] == [] and data["consent"] == {"sms": True}


@pytest.mark.parametrize("overrides,field", [
    ({"email": "li@"}, "email"), ({"email": None}, "email"), ({"name": "x" * 101}, "name"),
    ({"consent": {"sms": "yes"}}, "consent"), ({"consent": {"post": True}}, "consent"),
    ({"interests": ["x" * 41]}, "interests"), ({"interests": ["a"] * 21}, "interests"),
    ({"birth_year": 3000}, "birth_year"), ({"region": ""}, "region"), ({"extra": 1}, "extra"),
])
def test_register_rejects(overrides, field):
    with pytest.raises(ValidationFailed) as err:
        register(**overrides)
    assert field in err.value.field_errors


@pytest.mark.parametrize("reason,ok", [("checkout", True), ("gift:card-2", True), ("Check out", False),
                                       ("", False), ("x" * 65, False), ("<script>", False)])
def test_redeem_reason_is_a_code(reason, ok):
    payload = {"member_id": "mem_1", "points": 5, "reason": reason}
    if ok:
        assert load(schemas.RedeemPoints(), payload)["reason"] == reason
    else:
        with pytest.raises(ValidationFailed) as err:
            load(schemas.RedeemPoints(), payload)
        assert "reason" in err.value.field_errors


@pytest.mark.parametrize("granted", ["true", 1, 0, None])
def test_consent_granted_must_be_boolean(granted):
    with pytest.raises(ValidationFailed) as err:
        load(schemas.UpdateConsent(), {"member_id": "mem_1", "channel": "email", "granted": granted})
    assert "granted" in err.value.field_errors


def test_points_must_be_a_positive_integer():
    for points in (0, -1, 1.5, "3", True):
        with pytest.raises(ValidationFailed) as err:
            load(schemas.RedeemPoints(), {"member_id": "mem_1", "points": points, "reason": "checkout"})
        assert "points" in err.value.field_errors
