from rest_framework import serializers

from llm.models import TenantProvider


class TargetSerializer(serializers.Serializer):
    target = serializers.CharField(help_text="'<pool or provider>/<model>', e.g. 'local/smollm2'")
    label = serializers.CharField()
    is_local = serializers.BooleanField(help_text="Self-hosted (allowed under a local-only data policy)")


class TargetListSerializer(serializers.Serializer):
    default_answer_target = serializers.CharField()
    default_cheap_target = serializers.CharField()
    data_policy = serializers.CharField()
    targets = TargetSerializer(many=True)


class TenantProviderSerializer(serializers.ModelSerializer):
    # Checked by the service (llm/netguard.py first, so an address that is not allowed says so, in any spelling).
    base_url = serializers.CharField(max_length=300, help_text="The OpenAI-compatible /v1 base URL. Public "
                                     "addresses only, unless the operator allows more (LLM_ALLOWED_PRIVATE_NETWORKS).")
    api_key = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=400,
                                    style={"input_type": "password"},
                                    help_text="Stored encrypted; never returned.")
    # A list of names (the model field is free JSON: `true` or a number used to reach the service: 500).
    models = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    targets = serializers.SerializerMethodField()

    class Meta:
        model = TenantProvider
        fields = ["id", "name", "base_url", "api_key", "api_key_hint", "models", "self_hosted", "max_concurrency",
                  "created_at", "last_checked_at", "last_error", "targets"]
        read_only_fields = ["id", "api_key_hint", "created_at", "last_checked_at", "last_error", "targets"]
        extra_kwargs = {"name": {"validators": []}}

    def get_targets(self, provider) -> list[str]:
        return [f"{provider.pool_name}/{m}" for m in provider.models]


class ProviderTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField(help_text="Connected / Refused (with the HTTP status) / Unreachable / Not "
                                    "allowed; never the endpoint's own words.")
