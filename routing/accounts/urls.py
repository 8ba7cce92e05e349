"""Routes of sign-in help under /accounts/: password reset (Django's views) and invitation links.

Emailed links expire (PASSWORD_RESET_TIMEOUT, INVITATION_TIMEOUT) and work once. The names are
Django's own (password_reset, password_reset_confirm, …), so its templates and views find them."""
from django.urls import path

from routing.accounts import views

urlpatterns = [
    path("accounts/password_reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password_reset/done/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", views.PasswordResetConfirmView.as_view(), name="password_reset_confirm"),
    path("accounts/reset/done/", views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("accounts/invitation/<uidb64>/<token>/", views.InvitationAcceptView.as_view(), name="invitation-accept"),
    path("accounts/invitation/done/", views.InvitationCompleteView.as_view(), name="invitation_complete"),
]
