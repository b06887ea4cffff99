import pytest

from gateway.durations import parse_duration


@pytest.mark.parametrize(
    "value, seconds",
    [(300, 300.0), (1.5, 1.5), ("300", 300.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0),
     ("2h", 7200.0), ("14d", 1209600.0), (" 2 h ", 7200.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["2 hours", "h", "", None, True, "-5s", [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
