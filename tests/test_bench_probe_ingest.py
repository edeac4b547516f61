"""`python -m bench.probes ingest-alone` turns thread CPU readings into its table."""

from __future__ import annotations

from bench.probe_ingest import Run, cpu_used, summary


def test_cpu_used_is_the_difference_of_two_readings_thread_by_thread() -> None:
    before = {"http": {"event loop": 1.0, "thread 7": 0.5}, "delivery": {"event loop": 2.0}}
    after = {
        "http": {"event loop": 3.0, "thread 7": 1.5, "thread 9": 0.25},
        "delivery": {"event loop": 2.5},
    }
    assert cpu_used(before, after) == {
        "http": {"event loop": 2.0, "thread 7": 1.0, "thread 9": 0.25},
        "delivery": {"event loop": 0.5},
    }


def test_the_table_gives_each_setting_against_the_floor_per_webhook() -> None:
    floor = Run(10_000.0, 80_000, {"all": {"event loop": 6.4, "thread 3": 1.6}})
    alone = Run(5_000.0, 40_000, {"http": {"event loop": 4.0, "thread 4": 3.2, "thread 5": 0.4},
                                  "delivery": {"event loop": 0.2}})  # fmt: skip
    lines = summary({"floor": [floor], "ingest alone": [alone], "with delivery": []})
    assert len(lines) == 3  # the header, then the settings that ran
    assert lines[1].split() == ["floor", "10000", "1.00x", "80", "20", "0"]
    # 4.0 s of loop over 40,000 webhooks is 100 us; the writer and a helper thread 90 us.
    assert lines[2].split() == ["ingest", "alone", "5000", "0.50x", "100", "90", "5"]
