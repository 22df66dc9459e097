"""The people-facing pages: sign-in, files, upload, API tokens and the subscriber's webhooks."""

from django.contrib.auth import views as auth_views
from django.urls import path

from portal import page_views, webhook_views

urlpatterns = [
    path("", page_views.home, name="home"),
    # Our own template names: the admin's registration/ templates would otherwise win (admin is listed first).
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="portal/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(template_name="portal/password_change_form.html"),
        name="password_change",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="portal/password_change_done.html"),
        name="password_change_done",
    ),
    path("files/", page_views.file_list, name="files"),
    path("files/<uuid:file_id>/download", page_views.file_download, name="file-download"),
    path("files/<uuid:file_id>/delete", page_views.file_delete, name="file-delete"),
    path("upload/", page_views.upload, name="upload"),
    path("upload/plain", page_views.upload_plain, name="upload-plain"),
    path("tokens/", page_views.token_list, name="tokens"),
    path("tokens/<int:token_id>/revoke", page_views.token_revoke, name="token-revoke"),
    path("webhooks/", webhook_views.endpoint_list, name="webhooks"),
    path("webhooks/<int:endpoint_id>/", webhook_views.endpoint_detail, name="webhook"),
    path("webhooks/<int:endpoint_id>/rotate", webhook_views.endpoint_rotate, name="webhook-rotate"),
    path("webhooks/<int:endpoint_id>/test", webhook_views.endpoint_test, name="webhook-test"),
    path("webhooks/<int:endpoint_id>/active", webhook_views.endpoint_set_active, name="webhook-active"),
    path("webhooks/<int:endpoint_id>/replay", webhook_views.endpoint_replay_since, name="webhook-replay-since"),
    path("webhooks/deliveries/<int:delivery_id>/replay", webhook_views.delivery_replay, name="delivery-replay"),
]
