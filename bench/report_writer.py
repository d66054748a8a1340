"""Writing the report where it is asked for, and nothing else: report.md, report.html and
report_files/*.png, each through an exclusive temp file and an atomic rename (bench/safe_files.py).
A symlinked or non-regular target is refused, never written through, and only images an earlier
report listed in its manifest (and named as the report names them) are ever deleted.
"""
import os
import re

from bench import safe_files
from bench.report import build_report
from bench.results import read_records


class ReportWriteError(OSError):
    """The report cannot be written where asked (one line naming the fix)."""


#: the only names the report deletes in report_files/: its own images
OWN_PNG = re.compile(r"^(g\d+_(steps|loss|accuracy|memory)|sweep_[0-9a-f]{12})\.png$")
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


def _old_images(files_dir):
    """The images an earlier report wrote here (its manifest), by the report's own naming only:
    a file the report did not create is never deleted."""
    try:
        with open(os.path.join(files_dir, MANIFEST)) as fh:
            names = fh.read().split()
    except OSError:
        return []
    return [n for n in names if OWN_PNG.match(n)]


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
    md, page, pngs = build_report(records, microbench_dir if os.path.isdir(microbench_dir) else None)
    files_dir = os.path.join(out_dir, "report_files")
    try:
        os.makedirs(files_dir, exist_ok=True)
        for name in set(_old_images(files_dir)) - set(pngs):
            if safe_files.not_regular(os.path.join(files_dir, name)) is None:
                os.unlink(os.path.join(files_dir, name))
        for name, png in pngs.items():
            safe_files.replace_file(files_dir, name, png)
        safe_files.replace_file(files_dir, MANIFEST, "\n".join(sorted(pngs)).encode() + b"\n")
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
