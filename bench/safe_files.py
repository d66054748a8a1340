"""Writes that land whole or fail loudly: appends looped over short writes and undone when they
cannot finish, files replaced through exclusive temp files and atomic renames, and no symlink or
non-regular file ever followed. Anyone who can write into a shared results folder could plant a
link; a full disk or a file-size limit (`ulimit -f`) cuts a write short without an exception.
"""
import errno
import fcntl
import os
import stat
import uuid


class UnsafeTarget(OSError):
    """A path convbench will not write through (a symlink, a FIFO, a directory ...)."""


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return None


def not_regular(path):
    """Why `path` is not a regular file convbench may write (None when it is, or is absent)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # absent (a parent that is a file: its caller's)
        return None
    return _kind(st.st_mode)


def write_all(fd, data):
    """os.write until every byte is out: a full disk or RLIMIT_FSIZE writes short first, then
    raises (ENOSPC, EFBIG); a short write is never taken for a whole one."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "write returned %d" % n)
        view = view[n:]


def append_line(path, line):
    """Append bytes `line` (one whole line) to a regular file under an exclusive lock, then
    fsync. A previous writer's line cut short gets a newline first. When the append cannot finish,
    the bytes this call added are cut off again (ftruncate to the size it found, under the lock:
    only its own bytes), so the file never keeps a partial record, and the OSError is raised."""
    # read access for the pread of the last byte; O_NONBLOCK: a FIFO fails here instead of blocking
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeTarget(errno.ELOOP, "is a symlink (convbench never writes through one)", path)
        raise
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind:
            raise UnsafeTarget(errno.EINVAL, "is %s, not a regular file" % kind, path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            write_all(fd, line)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)  # closing drops the lock


def replace_file(directory, name, data):
    """Write `data` to directory/name atomically: a fresh temp file (O_EXCL | O_NOFOLLOW, a random
    name: a planted `name.tmp` is never touched) in the same directory, fsync, rename over the
    target. A target that is a symlink or not a regular file is refused, not replaced."""
    target = os.path.join(directory, name)
    kind = not_regular(target)
    if kind:
        raise UnsafeTarget(errno.EINVAL, "is %s; convbench will not replace it" % kind, target)
    tmp = os.path.join(directory, ".%s.%s.tmp" % (name, uuid.uuid4().hex[:12]))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def directory_problem(directory, create=True):
    """Why files cannot be written in `directory` (None when they can): not a directory, a
    symlink, a parent that is a file, a read-only place. Creates it (and its parents) when absent."""
    if os.path.islink(directory):
        return "%s is a symlink (convbench never writes through one)" % directory
    if os.path.exists(directory) and not os.path.isdir(directory):
        return "%s is not a directory" % directory
    if not os.path.exists(directory):
        if not create:
            return "%s does not exist" % directory
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            return "cannot create %s (%s)" % (directory, exc.strerror or exc)
    probe = os.path.join(directory, ".convbench-probe-%s" % uuid.uuid4().hex[:12])
    try:  # os.access says yes to root on a read-only filesystem: try for real
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return "cannot write in %s (%s)" % (directory, exc.strerror or exc)
    return None
