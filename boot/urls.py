from django.contrib import admin
from django.urls import include, path

from common import views as common_views

urlpatterns = [
    path("healthz", common_views.healthz, name="healthz"),
    path("readyz", common_views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/", include("portal.urls")),
]
