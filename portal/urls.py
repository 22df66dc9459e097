from django.urls import path, re_path

from portal import views

app_name = "portal"

urlpatterns = [
    path("files", views.files, name="files"),
    # <str>, not <uuid>: a malformed id must get the API's JSON 404, not Django's HTML one.
    path("files/<str:file_id>", views.file_detail, name="file-detail"),
    path("files/<str:file_id>/download", views.file_download, name="file-download"),
    path("openapi.json", views.openapi_json, name="openapi"),
    # Last: every other path under /api/ answers in JSON too.
    re_path(r"", views.unknown_endpoint, name="unknown-endpoint"),
]
