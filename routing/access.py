"""Who may act for whom on routing data: a person for themselves, staff with the matching model permission, superusers.

Staff acting for someone else need the matching Django model permission of the routing app (e.g.
`routing.change_connectorpreference`), superusers pass; anyone else is told the person does not
exist (404), so the API does not reveal who has an account.
"""
from django.contrib.auth import get_user_model
from django.db import transaction

from audit import services as audit
from brain_connectors.shared.errors import Hidden, NotFound, ValidationFailed
from connectors.permissions import Principal


def may_act_for(principal: Principal, user, perm: str) -> bool:
    """True if `principal` may use `perm` ("change_connectorpreference", …) on `user`'s routing data."""
    if principal.is_system:
        return True
    actor = principal.user
    if not (actor and actor.is_active and actor.is_authenticated):
        return False
    if actor.pk == user.pk:
        return True
    if actor.is_superuser:
        return True
    return bool(actor.is_staff and actor.has_perm(f"routing.{perm}"))


def check_actor(principal, user, perm):
    """Refuse, as if `user` did not exist, unless `principal` may use `perm` on their routing data."""
    if user is None or not may_act_for(principal, user, perm):
        name = user.get_username() if user is not None else "?"
        raise Hidden(f"User {name!r} does not exist.")


def resolve_user(principal: Principal, username, perm="view_connectorpreference"):
    """The person a request acts for: the caller, or (`?user=`) someone the caller may act for."""
    if not username:
        if principal.is_system:
            raise ValidationFailed("Name the user to act for.", details={"user": "required"})
        return principal.user
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not may_act_for(principal, user, perm):
        if user is not None:
            # Someone else's data: the same answer as an unknown user, but a refusal on record.
            with transaction.atomic():
                audit.record_action(
                    "routing.act_for",
                    principal,
                    "user",
                    user.pk,
                    result=audit.DENIED,
                    permission=perm,
                )
        raise NotFound(f"User {username!r} does not exist.")
    return user
