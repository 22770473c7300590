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


def test_the_final_pose_pass_is_priced_and_kept_within_the_time_limit():
    """Recent timed iterations: 50 particles in 1 s, then 250 in 2 s: 100 particles/s over the steps (a mean of
    per-step rates would say 87.5). 8,000 particles sampled at that rate and 2,000 summed at 0.02 s each: 120 s.
    The limit is 10 minutes, of which a full pass may take a quarter (150 s)."""
    from recon.configs import default
    from recon import training

    recent = [(1.0, 50), (2.0, 250)]
    assert abs(training.final_pass_seconds(recent, 10_000, 0, 0.0) - 100.0) < 1e-9
    assert abs(training.final_pass_seconds(recent, 8_000, 2_000, 0.02) - 120.0) < 1e-9
    assert training.final_pass_seconds([], 10_000, 0, 0.0) == 0.0
    # a measured evaluation rate (no gradient) prices the sampled particles instead of the training rate
    assert abs(training.final_pass_seconds(recent, 8_000, 2_000, 0.02, 0.004) - 72.0) < 1e-9
    config = default.get_config()
    config.stop.max_minutes = 10.0
    assert training.full_final_pass(config, 150.0) and not training.full_final_pass(config, 150.1)
    config.stop.max_minutes = 0.0
    assert training.full_final_pass(config, 1e9)


def test_particles_never_visited_are_assigned_at_the_finest_level_that_fits():
    """31,800 particles at 1e-5 s per particle and pose: levels of 1,000 / 10,000 / 100,000 poses take 318 / 3,180 /
    31,800 s. A 450-s budget (a quarter of 30 minutes) fits the first only; 3,200 s fits two; none fits: the
    coarsest."""
    from recon import training

    points = [1_000, 10_000, 100_000]
    assert training.assignment_level(31_800, 1e-5, points, 450.0) == 0
    assert training.assignment_level(31_800, 1e-5, points, 3_200.0) == 1
    assert training.assignment_level(31_800, 1e-5, points, 3_170.0) == 0
    assert training.assignment_level(31_800, 1e-5, points, 1e9) == 2
    assert training.assignment_level(31_800, 1e-5, points, 100.0) == 0


def test_a_run_that_stopped_early_for_its_final_pass_is_not_reopened_by_the_same_limit():
    """Stopped at 8.5 of its 10 minutes to leave the final pass 1.5: the same limit keeps it finished, a higher one
    (or none) continues it; a run that did not stop for time continues while its elapsed time is under the limit."""
    import types

    from recon.configs import default
    from recon import training

    config = default.get_config()
    config.stop.max_minutes = 10.0
    host = types.SimpleNamespace(stale_evaluations=0, elapsed=510.0, stopped_at_minutes=10.0)
    assert not training.can_extend(config, 100, host)
    config.stop.max_minutes = 12.0
    assert training.can_extend(config, 100, host)
    config.stop.max_minutes = 0.0
    assert training.can_extend(config, 100, host)
    config.stop.max_minutes = 10.0
    host.stopped_at_minutes = 0.0  # stopped for another reason (iterations) at 8.5 minutes
    assert training.can_extend(config, 100, host) == (100 < config.stop.max_iterations)
