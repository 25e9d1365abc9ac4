"""The compiled fast path never accepts what cerberus rejects, and normalises
the same way, for every registered kind's schema."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules import KINDS, get_module
from provisioner.secret import Secret
from provisioner.spec.schema import COMMON_FIELDS, _fast_schema, validate, validate_with_cerberus

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 100000), st.floats(-5, 1e6, allow_nan=False),
    st.sampled_from(["", "x", "2GiB", "512M", "0644", "755", "yes", "no", "true", "1", "1.5",
                     "present", "absent", "running", "stopped", "latest", "root", "/etc/motd",
                     "a b", "-rf", "bob\n", "tcp", "80:80", "always", "10", "-1"]),
    st.builds(Secret, st.sampled_from(["s", "2GiB"])),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["a", "memory", "cpus", "host", "name", "path"]), inner,
                    max_size=3)), max_leaves=5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fast_path_agrees_with_cerberus(kind):
    schema = get_module(kind).schema
    fast = _fast_schema({**schema, **COMMON_FIELDS})
    if fast is None:
        pytest.skip(f"{kind}: schema uses rules the fast path leaves to cerberus")
    keys = sorted(schema) + ["depends_on"]

    @settings(max_examples=80, deadline=None)
    @given(doc=st.dictionaries(st.sampled_from(keys), VALUES, max_size=6))
    def check(doc):
        ok, fast_doc = fast.check(doc)
        if ok:
            cerb_ok, cerb_doc = validate_with_cerberus(doc, schema)
            assert cerb_ok, (doc, cerb_doc)
            assert fast_doc == cerb_doc

    check()


def test_fast_path_is_used_and_errors_still_come_from_cerberus():
    schema = get_module("file").schema
    assert validate({"path": "/x", "content": "a", "mode": "0600"}, schema)["mode"] == 0o600
    from provisioner.spec.schema import ValidationFailure
    with pytest.raises(ValidationFailure) as info:
        validate({"path": "/x", "conent": "a"}, schema)
    assert "did you mean content?" in info.value.message
