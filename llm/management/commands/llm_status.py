import json

from django.core.management.base import BaseCommand

from llm import selectors, services


def _fmt_ms(value) -> str:
    return "—" if value is None else f"{value:.0f} ms"


class Command(BaseCommand):
    help = "Print every model pool and server: state, in flight, models loaded, latency, recent errors."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Run a health check of every server first.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, check=False, json=False, **options):
        if check:
            services.health_check_all()
        pools = selectors.pool_status()
        summary = selectors.runtime_summary()
        if json:
            runtime = summary["runtime"].__dict__ if summary["runtime"] else None
            self.stdout.write(_dumps({"default_answer_target": summary["answer_target"],
                                      "default_answer_problem": summary["answer_problem"],
                                      "default_cheap_target": summary["cheap_target"], "runtime": runtime,
                                      "pools": pools}))
            return
        label = f" ({summary['answer_label']})" if summary["answer_label"] else ""
        self.stdout.write(f"Default answer model: {summary['answer_target']}{label}")
        if summary["answer_problem"]:
            self.stdout.write(self.style.ERROR(f"  it cannot answer: {summary['answer_problem']}"))
        if summary["note"]:
            self.stdout.write(f"  note: {summary['note']}")
        if summary["runtime"]:
            self.stdout.write(f"Chosen at start-up: {summary['runtime'].source} {summary['runtime'].detail}".rstrip())
        if not pools:
            self.stdout.write(self.style.WARNING("No model pool is configured (set OPENAI_API_KEY or OLLAMA_HOSTS, "
                                                 "or add a pool in the admin)."))
        for pool in pools:
            where = "self-hosted" if pool["is_local"] else "cloud"
            self.stdout.write("")
            self.stdout.write(self.style.MIGRATE_HEADING(
                f"{pool['name']}  [{pool['kind']}{'/' + pool['dialect'] if pool['dialect'] else ''}, {where}, "
                f"{pool['strategy']}, source {pool['source']}, waiting {pool['waiting']}]"))
            if pool["models"]:
                self.stdout.write(f"  models: {', '.join(pool['models'])}")
            for s in pool["servers"]:
                state = s["state"] + (f" {s['cooldown_s']}s" if s["state"] == "cooling" else "")
                style = {"healthy": self.style.SUCCESS, "cooling": self.style.WARNING, "degraded": self.style.WARNING,
                         "down": self.style.ERROR}.get(s["state"], str)
                self.stdout.write(
                    f"  {s['name']:<20} {style(state):<12} in flight {s['inflight']}/{s['slots']}  "
                    f"p50 {_fmt_ms(s['latency_p50_ms'])}  ok {s['ok_total']} failed {s['fail_total']}  "
                    f"loaded: {', '.join(s['loaded']) or '—'}  {s['base_url']}"
                )
                if s["check_error"]:
                    self.stdout.write(self.style.ERROR(f"    last check: {s['check_error']}"))
                for err in s["errors"][:3]:
                    self.stdout.write(f"    {err.get('ago_s', '?')}s ago: {err.get('msg', '')}")


def _dumps(data) -> str:
    return json.dumps(data, indent=2, default=str)
