"""Schedules against the paper's formulas."""

import numpy as np

from recon import schedules


def test_step_size_schedule_of_the_paper():
    expected = {0: 2.0, 149: 2.0, 150: 1.0, 299: 1.0, 300: 0.5, 450: 0.25, 600: 0.125, 750: 1 / 16, 10_000: 1 / 16}
    for tau, eps in expected.items():
        assert schedules.step_size(tau) == eps == max(1 / 16, 2.0 ** (1 - tau // 150))


def test_resolution_levels_are_geometric_from_start_to_target():
    levels = schedules.resolution_levels(40.0, 10.0, 1.2)
    assert levels[0] == 40.0 and np.isclose(levels[-1], 10.0)
    ratios = levels[:-1] / levels[1:]
    assert np.all(ratios <= 1.2 + 1e-9) and np.allclose(ratios, ratios[0])
    assert len(levels) == 9  # ceil(log(4) / log(1.2)) = 8 steps
    assert list(schedules.resolution_levels(20.0, 25.0)) == [25.0]


def test_levels_in_time():
    assert [schedules.level_at(i, 3, 100) for i in (0, 99, 100, 250, 10_000)] == [0, 0, 1, 2, 2]
    assert schedules.level_start(2, 100) == 200


def test_line_searches_every_20_and_on_frequency_increase():
    due = [i for i in range(130) if schedules.line_search_due(i, 50, 20)]
    assert due == [0, 20, 40, 50, 60, 80, 100, 120]
    assert np.isclose(schedules.lipschitz_decay(150) ** 150, 0.5)


def test_evaluation_and_save_points():
    assert [i for i in range(60) if schedules.heldout_due(i, 25, 1000)] == [24, 49]
    assert [i for i in range(60) if schedules.heldout_due(i, 0, 30)] == [29, 59]
    assert not schedules.due(5, 0) and schedules.due(10, 5)


def test_the_time_limit_keeps_room_for_the_final_pose_pass_or_skips_it():
    """Recent iterations ran 100 particles/s; the limit is 10 minutes, of which the final pass may take a quarter
    (150 s): 10,000 particles need 100 s, kept in reserve; 20,000 would need 200 s, so the pass is skipped."""
    from experiments.configs import default
    from recon import training

    config = default.get_config()
    config.stop.max_minutes, config.output.final_pose_pass = 10.0, True
    recent = [(1.0, 50), (1.0, 150)]
    assert training.final_pass_reserve(config, recent, 10_000) == 100.0
    assert training.final_pass_reserve(config, recent, 15_000) == 150.0
    assert training.final_pass_reserve(config, recent, 20_000) == 0.0
    assert training.final_pass_reserve(config, [], 10_000) == 0.0
    config.output.final_pose_pass = False
    assert training.final_pass_reserve(config, recent, 10_000) == 0.0
    config.output.final_pose_pass, config.stop.max_minutes = True, 0.0
    assert training.final_pass_reserve(config, recent, 10_000) == 0.0
