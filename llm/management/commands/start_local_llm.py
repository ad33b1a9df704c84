from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the offline default model server when no other provider is configured (LLM gateway issue)."

    def handle(self, *args, **options):
        self.stdout.write("No offline model server configured yet.")
