"""What the state and activity endpoints use of the service that holds them, as protocols.

``app.Service`` builds :class:`~.state_api.StateAPI` and :class:`~.activity_api.ActivityAPI`
and hands itself to them; they see it through :class:`ServiceParts`, so neither imports
``app`` (which imports them), not even for type checking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only; none of these modules imports this one's importers
    from ..tokens import VerifiedTokenCache
    from .gate import RequestGate
    from .metrics import Metrics
    from .reload import PolicyHolder


class Alerts(Protocol):
    """The activity layer's webhooks, as the state endpoints announce what they change."""

    def alert(self, alert_type: str, data: dict[str, Any]) -> None: ...

    def emergency_ended(self, emergency: Any, now: float) -> None: ...


class ServiceParts(Protocol):
    """The parts of one service process that its state and activity endpoints share."""

    @property
    def gate(self) -> RequestGate: ...

    @property
    def holder(self) -> PolicyHolder: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def subject_tokens(self) -> VerifiedTokenCache | None: ...

    @property
    def activity(self) -> Alerts: ...
