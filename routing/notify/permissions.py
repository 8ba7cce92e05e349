"""Who may notify, see, read and acknowledge a notification.

Who may notify: superusers, system principals (BRAIN, tasks) and users holding the Django
permission `routing.add_notification`. Who may see a notification: the person notified, the
principal who asked, superusers and holders of `routing.view_notification`; only the first two
see its content. Who may acknowledge: the person notified, superusers and holders of
`routing.change_notification`.
"""

PERM_ADD = "routing.add_notification"
PERM_VIEW = "routing.view_notification"
PERM_CHANGE = "routing.change_notification"


def _active_user(principal):
    user = principal.user
    return user is not None and user.is_active and user.is_authenticated


def _allowed(principal, rule):
    """System principals may; a missing, inactive or anonymous user may not; any other user as `rule(user)` says."""
    if principal.is_system:
        return True
    if not _active_user(principal):
        return False
    return rule(principal.user)


def can_notify(principal):
    return _allowed(principal, lambda user: user.is_superuser or user.has_perm(PERM_ADD))


def can_view(principal, notification):
    return _allowed(
        principal,
        lambda user: (
            user.is_superuser
            or notification.user_id == user.pk
            or notification.requested_by == principal.key
            or user.has_perm(PERM_VIEW)
        ),
    )


def can_see_content(principal, notification):
    """The person notified and whoever asked already know what it says; nobody else reads it."""
    return _allowed(principal, lambda user: notification.user_id == user.pk or notification.requested_by == principal.key)


def can_acknowledge(principal, notification):
    return _allowed(
        principal, lambda user: user.is_superuser or notification.user_id == user.pk or user.has_perm(PERM_CHANGE)
    )
