import pytest

from darwinmerge.errors import UnknownNameError
from darwinmerge.registry import Registry


def test_registry_refuses_duplicates_and_suggests():
    reg: Registry[int] = Registry("merge method")
    reg.add("slerp", 1)
    reg.add("linear", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("slerp", 3)
    with pytest.raises(UnknownNameError) as info:
        reg.get("slrep")
    assert "did you mean 'slerp'" in str(info.value)
    assert "known: linear, slerp" in str(info.value)
    assert reg.get("linear") == 2
    assert list(reg) == ["linear", "slerp"]
