"""What both executors share: the local one (bench/sweep.py) and the ray one (bench/ray_executor.py).

Kept apart from both so that sweep.py can hand jobs to ray_executor.py without the two importing
each other.
"""
import sys


class SweepError(Exception):
    """A sweep that cannot start or must stop (one line naming the fix; exit status 2)."""


def resolve_threads(config, cores):
    """threads 0 means all cores of the machine that runs the job."""
    return config if config.threads else config._replace(threads=cores or 1)


def jobs_bar(total, desc="jobs"):
    """The progress bar over jobs (stderr; none when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="job", desc=desc, file=sys.stderr, disable=None, position=0,
                dynamic_ncols=True)


def say(text):
    """One line on stderr that does not break the progress bars."""
    if text:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
