"""A worker's memory, phase by phase (runs in every backend's interpreter: CPython 3.6-safe).

The lifetime peak (ru_maxrss) mostly measures what is not training: the framework's import, the
data, and evaluation at a large batch. So the harness also reads the resident set at each phase
boundary and resets the kernel's high-water mark (`/proc/self/clear_refs`, value 5, Linux 4.0+)
around evaluations: the training peak and the evaluation peak are measured apart. Where the
reset is not possible (another OS, a locked-down /proc) those two are None, never a guess.
"""
import resource

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_mb(field):
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb():
    """The resident set now (VmRSS), or None where /proc is not there."""
    return _status_mb("VmRSS")


def lifetime_peak_mb():
    """The process' peak resident set since it started (never reset)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def reset_high_water_mark():
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PhasePeaks(object):
    """Peak resident set of training and of evaluation, apart, and of the whole process.

    Call `training_starts()` before the first step and `evaluation_starts()` /
    `evaluation_ends()` around each evaluation (every epoch ends with one).

    The training peak is the high-water mark from the first step to the first evaluation: an
    evaluation's freed buffers stay resident in the allocator afterwards, so later stretches of
    training would count them. A reset of the mark also resets what ru_maxrss reports for a live
    process, so the lifetime peak is kept here, from the mark read before each reset."""

    def __init__(self):
        self.can_reset = False
        self.train_mb = None
        self.eval_mb = None
        self._lifetime = 0.0
        self._evaluated = False

    def _hwm(self):
        return _status_mb("VmHWM") if self.can_reset else None

    def _reset(self):
        hwm = self._hwm()
        if hwm is not None:
            self._lifetime = max(self._lifetime, hwm)
        reset_high_water_mark()

    def training_starts(self):
        self._lifetime = lifetime_peak_mb()
        self.can_reset = _status_mb("VmHWM") is not None and reset_high_water_mark()

    def evaluation_starts(self):
        if not self.can_reset:
            return
        if not self._evaluated:
            self.train_mb = self._hwm()
            self._evaluated = True
        self._reset()

    def evaluation_ends(self):
        if not self.can_reset:
            return
        hwm = self._hwm()
        self.eval_mb = max(self.eval_mb or 0.0, hwm)
        self._reset()

    def lifetime_mb(self):
        """The process' peak resident set so far."""
        return max(self._lifetime, self._hwm() or 0.0, lifetime_peak_mb())
