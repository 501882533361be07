"""The exceptions a user meets, and the words for what a path is when it is not the file a setting asked for.

Front ends print a UserError's message (it says what to do) without a traceback. path_problem says what a path
is instead of a regular file (a folder, a FIFO, a device, a symbolic-link loop ...) without ever raising, and
shown() escapes control characters in user text that goes into a message.
"""
import errno
import os
import stat


class UserError(Exception):
    """Bad input or a missing file: main() prints the message (which says what to do) without a traceback."""


class RunCancelled(Exception):
    """A caller's progress callback (the app's Cancel button) stopped the run between steps: run.json 'cancelled'."""


MISSING = "does not exist"

# what a path is, by its file type, when it is not a regular file
_KINDS = ((stat.S_ISDIR, "is a folder, not a file"),
          (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
          (stat.S_ISCHR, "is a character device, not a regular file"),
          (stat.S_ISBLK, "is a block device, not a regular file"),
          (stat.S_ISSOCK, "is a socket, not a regular file"))


def path_problem(path):
    """None when path is a regular file (through any symbolic links), else what it is, in words: MISSING,
    'is a folder, not a file', 'is a FIFO (named pipe), not a regular file', 'is a symbolic link that loops', ...
    Only the path's metadata is read: a FIFO is never opened (opening one waits for a writer forever)."""
    try:
        mode = os.stat(path).st_mode
    except ValueError:   # os.stat refuses a NUL character in a path
        return "holds a NUL character, which no file name can"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link that loops (it leads back to itself)"
        if err.errno == errno.ENOENT and os.path.islink(path):
            return f"is a symbolic link to {shown(os.readlink(path))}, which does not exist"
        if err.errno == errno.ENOENT:
            return MISSING
        if err.errno == errno.ENOTDIR:
            return "lies under a file, not a folder"
        return f"cannot be looked at ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    return next((words for test, words in _KINDS if test(mode)), "is not a regular file")


def shown(text):
    """User text for a message with its control characters escaped (ESC, newline, NUL ... as \\x1b, \\n, \\x00):
    a path or name printed as it is could colour the terminal or split a log line."""
    return "".join(c if c == "\t" or c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))
