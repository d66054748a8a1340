"""Writing the report where it is asked for, and nothing else: report.md, report.html and
report_files/*.png, each through an exclusive temp file and an atomic rename (bench/safe_files.py).
A symlinked or non-regular target is refused, never written through, and only images an earlier
report listed in its manifest (and named as the report names them) are ever deleted.
"""
import os
import re

from bench import safe_files
from bench.plot_cache import PlotCache
from bench.report import build_report
from bench.results import read_records


class ReportWriteError(OSError):
    """The report cannot be written where asked (one line naming the fix)."""


#: the only names the report deletes in report_files/: its own images
OWN_PNG = re.compile(r"^(g\d+_(throughput|first_step|loss|accuracy|steps|memory)|overview_\d+|scaling_\d+|"
                     r"sweep_[0-9a-f]{12})\.png$")
MANIFEST = ".convbench-images"


def output_problem(out_dir):
    """Why the report cannot be written in out_dir (None when it can): checked before a run's
    first worker starts, and before `report` renders."""
    problem = safe_files.directory_problem(out_dir)
    if problem:
        return problem
    for name in ("report.md", "report.html", "report_files"):
        kind = safe_files.not_regular(os.path.join(out_dir, name))
        if kind and not (name == "report_files" and kind == "a directory"):
            return "%s is %s; convbench will not write through it" % (
                os.path.join(out_dir, name), kind)
    return None


def _earlier_images(files_dir):
    """(the images an earlier report wrote here, by its manifest and the report's own naming only:
    a file the report did not create is never deleted; a PlotCache of those still readable)."""
    try:
        with open(os.path.join(files_dir, MANIFEST)) as fh:
            keys = PlotCache.parse_manifest(fh.read())
    except (OSError, UnicodeDecodeError):
        return [], PlotCache()
    names, stored = [], {}
    for key, own in keys.items():
        own = [n for n in own if OWN_PNG.match(n)]
        names += own
        images = {}
        for name in own:
            path = os.path.join(files_dir, name)
            if safe_files.not_regular(path) is None and os.path.exists(path):
                with open(path, "rb") as fh:
                    images[name] = fh.read()
        if images and len(images) == len(own):
            stored[key] = images
    return names, PlotCache(stored)


def write_report(results_path, out_dir=None):
    """Regenerate report.md, report.html and report_files/*.png beside the results (or in out_dir).

    Every file is written to an exclusive temp file and renamed into place (bench/safe_files.py);
    a symlinked or non-regular target is refused (ReportWriteError), never written through."""
    records = read_records(results_path)
    out_dir = out_dir or os.path.dirname(os.path.abspath(results_path))
    problem = output_problem(out_dir)
    if problem:
        raise ReportWriteError("cannot write the report: %s; fix: pass another --out/--report-dir"
                               % problem)
    microbench_dir = os.path.join(os.path.dirname(os.path.abspath(results_path)), "microbench")
    files_dir = os.path.join(out_dir, "report_files")
    earlier, plots = _earlier_images(files_dir)
    md, page, pngs = build_report(records, microbench_dir if os.path.isdir(microbench_dir) else None,
                                  plots, out_dir)
    try:
        os.makedirs(files_dir, exist_ok=True)
        for name in set(earlier) - set(pngs):
            if safe_files.not_regular(os.path.join(files_dir, name)) is None:
                os.unlink(os.path.join(files_dir, name))
        for name, png in pngs.items():
            safe_files.replace_file(files_dir, name, png)
        used = dict((name, key) for name, key in plots.used.items() if name in pngs)
        safe_files.replace_file(files_dir, MANIFEST, PlotCache.manifest(used).encode())
        paths = {"md": os.path.join(out_dir, "report.md"), "html": os.path.join(out_dir, "report.html")}
        for key, text in (("md", md), ("html", page)):
            safe_files.replace_file(out_dir, os.path.basename(paths[key]), text.encode("utf-8"))
    except OSError as exc:
        raise ReportWriteError("cannot write the report in %s (%s); fix: free space there or pass "
                               "another --out/--report-dir" % (out_dir, _oserror_text(exc)))
    return paths


def _oserror_text(exc):
    if exc.filename and exc.strerror:
        return "%s: %s" % (exc.filename, exc.strerror)
    return str(exc)
