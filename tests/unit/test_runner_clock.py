"""The detector defends its clock: a bounded advance closes a large watermark jump in steps."""

from datetime import timedelta

from tests.unit.detector_streams import NOW, Scenario, constant_rate, generate, new_detector


def test_a_bounded_advance_closes_a_jump_in_steps_with_the_same_output() -> None:
    events = generate(Scenario(rate=constant_rate(50), minutes=5))
    jump = events[-1].model_copy(
        update={"occurred_at": events[-1].occurred_at + timedelta(hours=6), "event_id": "jump"}
    )
    whole, stepped = new_detector(), new_detector()
    for event in [*events, jump]:
        whole.observe(event)
        stepped.observe(event)
    expected = whole.advance(NOW)
    closed, points, calls = [], [], 0
    while True:
        out = stepped.advance(NOW, max_windows=50)
        calls += 1
        assert len(out.closed_windows) <= 50
        if not out.closed_windows:
            break
        closed += out.closed_windows
        points += out.metric_points
    assert len(expected.closed_windows) == 365  # 5 minutes + 6 hours of one-minute windows
    assert closed == expected.closed_windows
    assert points == expected.metric_points
    assert calls == 9  # 8 bounded steps of at most 50, then nothing left
