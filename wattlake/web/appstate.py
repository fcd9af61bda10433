"""What every request of one web app shares, and the dependencies that hand it to a route.

A route asks for the state with the scope it needs, ``s: Reader`` or ``s: Admin`` (FastAPI's
``Depends``): the credentials are checked before the route runs. :meth:`WebState.figure` times
a figure in ``wattlake_web_query_seconds`` and keeps it per table state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.applications import Starlette
from starlette.datastructures import State

from wattlake.config import Settings
from wattlake.query.lakeview import LakeView
from wattlake.web.auth import Auth
from wattlake.web.live import LivePower
from wattlake.web.metrics import WebMetrics, alerts

T = TypeVar("T")


class WebState(State):
    """The app's ``app.state``, typed: settings, lake view, sign-ins, metrics, live power."""

    settings: Settings
    view: LakeView
    auth: Auth
    metrics: WebMetrics
    live: LivePower
    # Whether the app is served over HTTPS (session cookies are then ``Secure``).
    tls: bool

    def __init__(
        self,
        *,
        settings: Settings,
        view: LakeView,
        auth: Auth,
        metrics: WebMetrics,
        live: LivePower,
        tls: bool,
    ) -> None:
        # Starlette's State keeps attributes in a dict; these are all it holds.
        super().__init__(
            {
                "settings": settings,
                "view": view,
                "auth": auth,
                "metrics": metrics,
                "live": live,
                "tls": tls,
            }
        )

    @classmethod
    def of(cls, app: Starlette) -> WebState:
        """Return the state of ``app`` (made by :func:`wattlake.web.app.create_app`).

        Raises:
            TypeError: the app was not made by ``create_app``.
        """
        state = app.state
        if not isinstance(state, cls):
            raise TypeError(f"the app's state is a {type(state).__name__}, not a WebState")
        return state

    def alerts(self) -> list[dict[str, Any]]:
        """Return the alerts firing now."""
        return alerts(self.view, self.settings)

    def figure(
        self,
        endpoint: str,
        compute: Callable[[], T],
        *,
        key: tuple[Any, ...] | None = None,
        again: bool = True,
    ) -> T:
        """Return ``compute()``, its time observed under ``endpoint``; with a ``key``, kept
        under ``(endpoint, *key)`` for the lake's table state (``again``: see
        :meth:`LakeView.cached`)."""
        with self.metrics.query_seconds.labels(endpoint).time():
            if key is None:
                return compute()
            return self.view.cached((endpoint, *key), compute, again=again)


def web_state(request: Request) -> WebState:
    """Return the state of the app serving ``request``."""
    return WebState.of(request.app)


def require_scope(scope: str) -> Callable[[Request], WebState]:
    """Return a dependency that checks the request holds ``scope`` and returns the state.

    The dependency raises :class:`wattlake.httpserver.Unauthorized` without valid credentials
    and :class:`wattlake.httpserver.Forbidden` without the scope.
    """

    def holding_scope(request: Request) -> WebState:
        state = web_state(request)
        state.auth.require(request, scope)
        return state

    holding_scope.__name__ = f"require_{scope}"
    return holding_scope


Reader = Annotated[WebState, Depends(require_scope("read"))]
Admin = Annotated[WebState, Depends(require_scope("admin"))]
