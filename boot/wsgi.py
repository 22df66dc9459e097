"""WSGI entry point: DJANGO_CONFIGURATION=Prod gunicorn boot.wsgi."""

# Importing the boot package has already loaded the settings (boot/__init__.py loads the
# Celery app), so a default chosen here would come too late: a WSGI server must name its
# configuration, or it would silently serve Dev (DEBUG, eager tasks, a public secret key).
from configurations.wsgi import get_wsgi_application
from django.core.exceptions import ImproperlyConfigured

from boot import celery

if celery.CONFIGURATION_DEFAULTED:
    # An exception, not SystemExit: gunicorn then halts ("Worker failed to boot") instead of retrying.
    raise ImproperlyConfigured("set DJANGO_CONFIGURATION (Prod in production) to serve boot.wsgi")

application = get_wsgi_application()
