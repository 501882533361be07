"""The exceptions a user meets. Front ends print a UserError's message (it says what to do) without a traceback."""


class UserError(Exception):
    """Bad input or a missing file: main() prints the message (which says what to do) without a traceback."""


class RunCancelled(Exception):
    """A caller's progress callback (the app's Cancel button) stopped the run between steps: run.json 'cancelled'."""
