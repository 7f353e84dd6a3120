"""Hostile values for every parameter: operator dicts, server-side JavaScript,
integers past int64, negative numbers, deep nesting, long and non-BMP strings,
NaN, wrong types; mixed with plausible values so the use cases run too."""
from __future__ import annotations

from hypothesis import strategies as st

OPERATORS = ["$gt", "$ne", "$regex", "$in", "$where", "$expr", "$function", "$exists", "$or"]

operator_dicts = st.dictionaries(
    st.sampled_from(OPERATORS),
    st.one_of(st.just(""), st.just("sleep(100) || true"), st.just(0), st.lists(st.just(""), max_size=2),
              st.just({"$gt": ""})),
    min_size=1, max_size=2)
huge_ints = st.one_of(st.integers(min_value=2 ** 63, max_value=2 ** 70),
                      st.integers(min_value=-(2 ** 70), max_value=-(2 ** 63) - 1))
negative = st.integers(min_value=-10 ** 9, max_value=-1)
deep = st.integers(min_value=13, max_value=60).map(lambda n: _nest(n))
long_strings = st.builds(lambda char, n: char * n, st.sampled_from(["a", "界", "😀", "$"]),
                         st.integers(min_value=201, max_value=25_000))
non_bmp = st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
                  min_size=1, max_size=20)
wrong_types = st.one_of(st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                        st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2), st.none())
nested_operators = st.builds(lambda key, op: {key: op}, st.sampled_from(["status", "a", "$set"]),
                             operator_dicts)

hostile = st.one_of(operator_dicts, huge_ints, negative, deep, long_strings, non_bmp, wrong_types,
                    nested_operators, st.lists(operator_dicts, min_size=1, max_size=2))
plausible = st.one_of(st.text(alphabet="abcdefghkmnp_0123456789", min_size=1, max_size=16),
                      st.integers(min_value=0, max_value=50), st.none(), st.booleans(),
                      st.sampled_from(["2026-11-21T02:00:00Z", "member", "email", "month", "approved"]))
value = st.one_of(hostile, hostile, plausible)


def _nest(depth: int):
    value = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def arguments(params) -> st.SearchStrategy[dict]:
    """kwargs for a call: every required parameter, each optional one or not."""
    required = {p.name: value for p in params if p.default is p.empty}
    optional = {p.name: value for p in params if p.default is not p.empty}
    return st.fixed_dictionaries(required, optional=optional)
