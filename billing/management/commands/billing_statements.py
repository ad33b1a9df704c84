from django.core.management.base import CommandError

from accounts.models import Tenant
from billing.invoicing import invoice_sink, statement_build
from billing.periods import parse_period
from config.commands import SchemaCommand


class Command(SchemaCommand):
    help = ("Build each tenant's monthly statement and, with --issue, hand it to the configured invoice sink "
            "(settings.BILLING_INVOICE_SINK; the default only logs: no payment provider is integrated).")

    def add_arguments(self, parser):
        parser.add_argument("--month", default="previous", help="YYYY-MM, 'previous' (default) or 'current'")
        parser.add_argument("--issue", action="store_true", help="push the statements to the invoice sink")

    def handle(self, *args, month, issue, **options):
        try:
            period = parse_period(month)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not period.is_month:
            raise CommandError("a statement covers one calendar month")
        sink = invoice_sink() if issue else None
        for tenant in Tenant.objects.order_by("slug"):
            statement = statement_build(tenant=tenant, period=period)
            reference = sink.push(statement) if sink else None
            self.stdout.write(f"{statement.number}\t{statement.total_due} {statement.currency}\t"
                              f"{len(statement.lines)} lines" + (f"\t{reference}" if reference else ""))
