from django.contrib import admin
from django.urls import include, path

from common.monitoring import probes
from common.monitoring import views as monitoring_views

urlpatterns = [
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("ops/status", monitoring_views.status_json, name="ops-status"),
    path("metrics", monitoring_views.metrics, name="metrics"),
    # Before admin.site.urls so the admin's catch-all does not claim it; admin_view means staff only.
    path("admin/status/", admin.site.admin_view(monitoring_views.status_page), name="ops-status-page"),
    path("admin/", admin.site.urls),
    path("api/", include("portal.urls")),
]
