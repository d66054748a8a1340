"""The report's images, drawn only when what they show changed.

Drawing is most of a report's time (~0.1 s an image), and the report is rewritten after every
run while most of its tables stay as they were. An image is keyed by a hash of the code that draws
it (bench/report.py's source and matplotlib's version) and of the data it shows (each row's
record id and pooled figures); bench/report_writer.py keeps the keys in report_files' manifest and
hands back the images whose keys still match. A changed record, a new row or new drawing code
means a new key, so a stale image is never shown.

A report drawn from scratch (a new output directory, new drawing code) draws its images in
parallel: `prefetch` forks one process per core and each draws a share of the missing images
(matplotlib draws on one core; 33 images took ~4 s of a 6 s report).
"""
import hashlib
import json
import multiprocessing
import os

#: the code that draws the images and picks their colours (bench/)
DRAWING_CODE = ("report.py", "report_plots.py", "palette.py")


def _code_version():
    import matplotlib

    digest = hashlib.sha256(matplotlib.__version__.encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in DRAWING_CODE:  # read, not imported: bench.report imports this module
        with open(os.path.join(here, name), "rb") as fh:
            digest.update(fh.read())
    return digest.hexdigest()


class PlotCache(object):
    """stored: {key: {image name: png}} from an earlier report; used: {image name: key} now."""

    def __init__(self, stored=None):
        self.stored = stored or {}
        self.used = {}
        self._code = None

    def key(self, inputs):
        if self._code is None:
            self._code = _code_version()
        text = json.dumps(inputs, sort_keys=True, default=str)
        return hashlib.sha256((self._code + text).encode()).hexdigest()[:24]

    def draw(self, inputs, draw):
        """{image name: png}: the stored images for these inputs, else draw() (and remember it)."""
        key = self.key(inputs)
        images = self.stored.get(key)
        if images is None:
            images = dict((name, png) for name, png in (draw() or {}).items() if png)
            self.stored[key] = images
        for name in images:
            self.used[name] = key
        return images

    def prefetch(self, jobs, processes=None):
        """Draws, in parallel processes, the images of the (inputs, draw) jobs not stored yet, so
        that draw() then finds them. Sequential (left to draw()) with one core, one missing image,
        or no fork (the jobs' draw callables are closures: only a forked child can run them)."""
        todo = {}
        for inputs, draw in jobs:
            key = self.key(inputs)
            if key not in self.stored:
                todo.setdefault(key, draw)
        processes = min(len(todo), processes or _usable_cores())
        if processes < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        global _PENDING
        _PENDING = list(todo.values())
        try:
            _preload_matplotlib()  # once, here: each child inherits it instead of importing it
            # an executor, not a Pool: a child killed mid-drawing breaks it instead of hanging it
            with ProcessPoolExecutor(processes, multiprocessing.get_context("fork")) as pool:
                drawn = list(pool.map(_draw_pending, range(len(_PENDING))))
        except BrokenProcessPool:
            return  # a child died (killed, out of memory): draw() draws them here instead
        finally:
            _PENDING = []
        for key, images in zip(todo, drawn):
            self.stored[key] = dict((name, png) for name, png in (images or {}).items() if png)

    @staticmethod
    def manifest(used):
        return "".join("%s %s\n" % (name, key) for name, key in sorted(used.items()))

    @staticmethod
    def parse_manifest(text):
        """{key: [image names]} from a manifest's text (malformed lines are ignored)."""
        keys = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                keys.setdefault(parts[1], []).append(parts[0])
        return keys


#: the draw callables of the running prefetch, inherited by its forked children
_PENDING = []


def _draw_pending(index):
    return _PENDING[index]()


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _preload_matplotlib():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
