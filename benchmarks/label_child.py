"""Labels a pool in a process of its own, as `prelabel label` does, and prints a report as JSON (run by
benchmarks.run): the run's summary figures, the peak RSS and the CPU time this process spent."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def cpu_s() -> float:
    """User + sys CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process now (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    pool, output, concurrency = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    from prelabel import label_config
    from prelabel.label_interface import parse_label_config
    from prelabel.labeling.live import label_file
    from prelabel.settings import Settings

    config = parse_label_config(label_config.read("summarization"))
    settings = Settings()
    baseline = current_rss_mb()
    before = cpu_s()
    summary = label_file(settings, config, pool, output, concurrency=concurrency)
    after = cpu_s()
    print(
        json.dumps(
            {
                "peak_rss_mb": rss_mb(),
                "baseline_rss_mb": baseline,
                "labeled": summary.labeled,
                "failed": summary.failed,
                "elapsed_s": summary.elapsed_s,
                "items_per_s": summary.items_per_s,
                "labeling_cpu_s": after - before,  # the parent measures the whole process
            }
        )
    )


if __name__ == "__main__":
    main()
