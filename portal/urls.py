from django.urls import path, re_path

from portal import tus_views, views

app_name = "portal"

urlpatterns = [
    path("files", views.files, name="files"),
    # <str>, not <uuid>: a malformed id must get the API's JSON 404, not Django's HTML one.
    path("files/<str:file_id>", views.file_detail, name="file-detail"),
    path("files/<str:file_id>/download", views.file_download, name="file-download"),
    # tus 1.0 resumable uploads; the collection answers with and without the trailing slash.
    path("uploads/", tus_views.uploads, name="uploads"),
    path("uploads", tus_views.uploads),
    path("uploads/<str:upload_id>", tus_views.upload, name="upload"),
    path("openapi.json", views.openapi_json, name="openapi"),
    # Last: every other path under /api/ answers in JSON too.
    re_path(r"", views.unknown_endpoint, name="unknown-endpoint"),
]
