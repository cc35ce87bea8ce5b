"""The audit log: every administrative action, who did it (None: the shell), to what, and when.

A row is added in the transaction of the action it records, so neither exists without the other.
"""

from extensions import db
from models import AuditEntry


def audit(
    actor_id: int | None, action: str, target_type: str, target_id: int | None, details: str = ""
) -> None:
    """Record an action in the current transaction (the caller commits)."""
    db.session.add(
        AuditEntry(
            actor_id=actor_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details,
        )
    )
