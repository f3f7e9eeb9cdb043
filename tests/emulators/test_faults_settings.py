"""The fault injector's settings (shared by both emulators): validation and seeded draws."""

from __future__ import annotations

import pytest

from identity_sync.emulators.faults import FaultInjector


@pytest.mark.parametrize("bad", [
    {"error_rate": 0.6, "timeout_rate": 0.3, "slow_body_rate": 0.2},  # rates add up past 1
    {"error_statuses": 503},
    {"error_statuses": [200]},
    {"retry_after": -1},
    {"slow_body_seconds": -0.1},
    {"slow_body_rate": 1.5},
    {"script": [{"fault": "explode"}]},
    {"burst": 1},
])
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    injector = FaultInjector()
    with pytest.raises(ValueError):
        injector.configure(bad)
    assert injector.settings.error_rate == 0  # the old settings stay


def test_settings_round_trip_with_the_new_names() -> None:
    injector = FaultInjector()
    data = {"seed": 9, "error_rate": 0.2, "error_statuses": [429, 500], "retry_after": 2.5,
            "slow_body_rate": 0.1, "slow_body_seconds": 1.0,
            "script": [{"fault": "slow_body", "seconds": 0.5},
                       {"fault": "error", "status": 429, "retry_after": None}]}
    injector.configure(data)
    dumped = injector.settings.to_dict()
    assert {k: dumped[k] for k in data if k != "script"} == {
        k: v for k, v in data.items() if k != "script"}
    assert [f["fault"] for f in dumped["script"]] == ["slow_body", "error"]
    injector.configure(dumped)  # what GET returns, PUT accepts
    assert injector.settings.to_dict() == dumped


def test_seeded_draws_mix_statuses_and_kinds_reproducibly() -> None:
    def draws() -> list[tuple[str, int, float | None]]:
        injector = FaultInjector()
        injector.configure({"seed": 5, "error_rate": 0.5, "error_statuses": [429, 503],
                            "retry_after": 1.0, "slow_body_rate": 0.25})
        out = []
        for _ in range(200):
            _, fault = injector.decide("GET", "/x")
            out.append(("none", 0, None) if fault is None else
                       (fault.kind, fault.status if fault.kind == "error" else 0,
                        fault.retry_after))
        return out

    first = draws()
    assert first == draws()
    kinds = [k for k, _, _ in first]
    assert 70 <= kinds.count("error") <= 130
    assert 25 <= kinds.count("slow_body") <= 75
    assert {s for k, s, _ in first if k == "error"} == {429, 503}
    assert {r for k, _, r in first if k == "error"} == {1.0}
