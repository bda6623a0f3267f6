"""The one exception type the CLI turns into exit status 2 with a one-line message."""


class InputError(Exception):
    """Bad input or usage: a file, spec or option the user must fix.

    The message is one line, addressed to the user, and names what to do.
    """
