from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("files", views.files, name="files"),
    path("files/<uuid:file_id>", views.file_detail, name="file-detail"),
    path("files/<uuid:file_id>/download", views.file_download, name="file-download"),
]
