"""The HiveMem error tree.

Every failure a user can see is a :class:`HiveError` subclass with a stable
``code`` (for programs), an HTTP ``status`` (for the server) and structured
``details``. Driver errors are translated into these at the storage boundary,
so no ``apsw`` or ``psycopg`` exception ever reaches a caller.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HiveError(Exception):
    """Root of every HiveMem error.

    Attributes:
        code: Stable machine-readable code, e.g. ``"not_found"``.
        status: HTTP status the server answers with.
        message: Human-readable explanation.
        details: Structured fields (which field, which id, current version...).
    """

    code: ClassVar[str] = "hive_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The one JSON shape every error is rendered as."""
        return {"code": self.code, "status": self.status, "message": self.message, "details": self.details}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> HiveError:
        """Rebuild the exception class and fields from :meth:`to_dict` output."""
        error_cls = ERRORS_BY_CODE.get(str(payload.get("code")), HiveError)
        error = error_cls.__new__(error_cls)
        HiveError.__init__(error, str(payload.get("message", "")), **dict(payload.get("details") or {}))
        return error


class InvalidInput(HiveError):
    """An argument is malformed or out of range; ``details["field"]`` names it."""

    code = "invalid_input"
    status = 422

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **details)

    @property
    def field(self) -> str:
        """The name of the offending argument."""
        return str(self.details["field"])


class NotFound(HiveError):
    """The addressed memory, group or key does not exist (or is not visible)."""

    code = "not_found"
    status = 404


class VersionConflict(HiveError):
    """An ``expected_version`` did not match; ``current_version`` says what is stored."""

    code = "version_conflict"
    status = 409

    @property
    def current_version(self) -> int:
        """The version stored now."""
        return int(self.details["current_version"])


class LockHeld(HiveError):
    """A lease could not be granted in time: another holder kept the resource."""

    code = "lock_held"
    status = 409


class LeaseExpired(HiveError):
    """A lease lapsed (or was released) before it was renewed; the resource may have a new holder."""

    code = "lease_expired"
    status = 409


class StaleFencingToken(HiveError):
    """A protected write carried a fencing token older than the newest grant."""

    code = "stale_fencing_token"
    status = 409


class Forbidden(HiveError):
    """The caller's grants do not allow this operation."""

    code = "forbidden"
    status = 403


class Unauthenticated(HiveError):
    """No valid credential was presented."""

    code = "unauthenticated"
    status = 401


class QuotaExceeded(HiveError):
    """A quota or size limit was exceeded."""

    code = "quota_exceeded"
    status = 429


class PayloadTooLarge(QuotaExceeded):
    """A single request or record is over a size limit."""

    code = "payload_too_large"
    status = 413


class StorageUnavailable(HiveError):
    """The store cannot be reached or has failed; nothing more is acknowledged."""

    code = "storage_unavailable"
    status = 503


class EmbedderUnavailable(HiveError):
    """The embedding service failed or answered with something unusable."""

    code = "embedder_unavailable"
    status = 503


class InvalidTransition(HiveError):
    """A plan task cannot move to the asked state from the one it is in (see ``hivemem.plans.TRANSITIONS``).

    ``details`` name the ``task``, its current ``state`` and the wanted one (``to``);
    a task whose dependencies are not done also names them (``waiting_on``).
    """

    code = "invalid_transition"
    status = 409


class ConfigError(HiveError):
    """HiveMem was configured inconsistently (bad URL, embedder mismatch...)."""

    code = "config_error"
    status = 500


class WorkflowDiverged(HiveError):
    """A replayed workflow called a different step than its recorded run did at the same step number.

    ``details`` name the ``workflow_id``, the ``step`` number, the ``recorded`` step name and
    the one the code ``called`` now (None when the code ended before a recorded step). The
    workflow is marked failed: its recorded results are never mixed with a changed program.
    """

    code = "workflow_diverged"
    status = 409


class WorkflowCancelled(HiveError):
    """The workflow was cancelled (``hive.cancel_workflow``); no further step is recorded."""

    code = "workflow_cancelled"
    status = 409


class WorkflowFailed(HiveError):
    """A workflow ended in failure; ``details["error"]`` holds the recorded ``{"type", "message"}``."""

    code = "workflow_failed"
    status = 500


class StepFailed(WorkflowFailed):
    """A step raised on its last attempt; replays raise the same recorded error, never re-running it."""

    code = "step_failed"
    status = 500


class EventsPruned(HiveError):
    """Events after the sequence number asked for were pruned (``event_retention_seconds``): a reader would miss them.

    ``details["oldest"]`` is the oldest event still kept in the namespace root.
    """

    code = "events_pruned"
    status = 410


ERRORS_BY_CODE: dict[str, type[HiveError]] = {
    cls.code: cls
    for cls in (
        HiveError,
        InvalidInput,
        NotFound,
        VersionConflict,
        LockHeld,
        LeaseExpired,
        StaleFencingToken,
        Forbidden,
        Unauthenticated,
        QuotaExceeded,
        PayloadTooLarge,
        StorageUnavailable,
        EmbedderUnavailable,
        ConfigError,
        InvalidTransition,
        WorkflowDiverged,
        WorkflowCancelled,
        WorkflowFailed,
        StepFailed,
        EventsPruned,
    )
}
