import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django_application = get_asgi_application()

# Imported after Django is set up. Answers 413 from Content-Length before the body is read (under ASGI Django
# reads the whole body before any view could refuse it).
from knowledge.uploads import UploadLimitMiddleware  # noqa: E402

application = UploadLimitMiddleware(django_application)
