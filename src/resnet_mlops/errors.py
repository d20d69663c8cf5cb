"""Errors a user can cause. The CLI prints them as one line and exits non-zero, without a traceback."""

EXIT_USER_ERROR = 2  # the exit status of every command (and stage) stopped by a user's mistake


class UserError(Exception):
    """A mistake in the user's input (params, files, services), reported as one sentence."""


class ConfigError(UserError):
    """A bad value in params.yaml; the message names the file, the key and the value."""

    def __init__(self, path, key: str, message: str):
        self.path = str(path)
        self.key = key
        super().__init__(f"{self.path}: {key}: {message}")
