"""Is the machine quiet while a job runs? The CPU time everything else used during the job.

Two cores are easily saturated: measured here, a torch step went from 42 ms to 124 ms beside one
2-thread process. The parent reads the machine's busy CPU time (/proc/stat) around each worker
and subtracts what the worker (and its children) and this process used; what remains is other
processes' work. Averaged over the job's wall time, in cores, it is the record's `load`; above
NOISY_CORES the record is marked noisy: the report shows it and `compare` leaves it out unless
asked. Where /proc/stat is missing (not Linux), nothing is measured and nothing is marked.
"""
import os
import resource
import time

#: other processes' average CPU use (in cores) above which a job's step times are not trusted
NOISY_CORES = 0.25


def _busy_s():
    """Seconds of CPU time the whole machine spent busy since boot (all cores), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest is inside user)
    ticks = [int(v) for v in fields[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / float(os.sysconf("SC_CLK_TCK"))


def _own_s():
    """CPU seconds of this process and its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class LoadMeter(object):
    """Start before the worker starts, `stop()` after it has been reaped."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.time(), _busy_s(), _own_s()

    def stop(self):
        """{"other_cores", "other_cpu_s", "wall_s", "noisy", "threshold_cores"} or None."""
        busy = _busy_s()
        if busy is None or self.busy0 is None:
            return None
        wall = max(time.time() - self.t0, 1e-6)
        other = max(0.0, (busy - self.busy0) - (_own_s() - self.own0))
        cores = other / wall
        return {"other_cores": round(cores, 3), "other_cpu_s": round(other, 2),
                "wall_s": round(wall, 2), "noisy": cores > NOISY_CORES,
                "threshold_cores": NOISY_CORES}
