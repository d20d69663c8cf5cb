"""Serving that follows an alias: when `@champion` moves, the server switches versions without a gap.

A nightly promotion has to reach users without anyone restarting the server. The scoring
server's app is wrapped (`Following`, an ASGI app): a thread asks the registry every
`poll_s` seconds which version the alias names; a new one is loaded and checked (it must answer
an image of its own input shape) while the old one keeps serving, then takes the next requests.
Requests already running finish on the old one (they hold it). A version that fails to load or
to answer is logged and never tried again, and the old one goes on serving. Every answer says
which version produced it, in the `X-Model-Version` header (`VersionedApp`), pinned or not.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

VERSION_HEADER = b"x-model-version"

_log = logging.getLogger("resnet_mlops.serve")


class VersionedApp:
    """An ASGI app answering with `app`, each HTTP response headed with the version `label`."""

    def __init__(self, label: str, app):
        self.label, self.app = label, app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (VERSION_HEADER, self.label.encode())

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_version)


class Following:
    """The version that `resolve()` names now, served; `load(pinned)` builds (and checks) its app."""

    def __init__(self, resolve: Callable[[], str], load: Callable[[str], object], poll_s: float):
        self._resolve, self._load, self._poll_s = resolve, load, poll_s
        pinned = resolve()
        self._current = VersionedApp(pinned, load(pinned))
        self._failed: set[str] = set()
        threading.Thread(target=self._watch, name="follow-alias", daemon=True).start()

    @property
    def serving(self) -> str:
        return self._current.label

    def _watch(self) -> None:
        while True:
            time.sleep(self._poll_s)
            self.check_once()

    def check_once(self) -> None:
        """Ask the registry once; switch if the alias names another version that loads and answers."""
        try:
            pinned = self._resolve()
        except Exception as error:  # noqa: BLE001 - a registry hiccup must not stop the serving
            _log.warning("serve: could not read the registry (%s); still serving %s", error, self.serving)
            return
        if pinned == self.serving or pinned in self._failed:
            return
        _log.warning("serve: the alias now names %s; loading it (still serving %s)", pinned, self.serving)
        try:
            app = self._load(pinned)
        except Exception as error:  # noqa: BLE001 - whatever a broken version raises, keep the old one
            self._failed.add(pinned)
            _log.warning("serve: %s did not load or answer (%s); still serving %s", pinned,
                         str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                         self.serving)
            return
        previous, self._current = self.serving, VersionedApp(pinned, app)  # one assignment: atomic
        _log.warning("serve: now serving %s (was %s)", pinned, previous)

    async def __call__(self, scope, receive, send):
        await self._current(scope, receive, send)  # the version at this request's start serves it whole
