from django import forms
from django.utils.translation import gettext_lazy as _

from knowledge.search.config import RetrievalSettings

MODE_CHOICES = [("hybrid", _("Hybrid (keywords + meaning)")), ("bm25", _("Keywords only (BM25)")),
                ("dense", _("Meaning only (vectors)"))]
FUSION_CHOICES = [("zscore", _("Score-based (z-score)")), ("rrf", _("Reciprocal rank fusion"))]


class TestSearchForm(forms.Form):
    """A link with only `?query=` searches with the defaults shown in the form."""

    query = forms.CharField(label=_("Query"), max_length=2000)
    mode = forms.ChoiceField(label=_("Mode"), choices=MODE_CHOICES, initial="hybrid", required=False)
    k = forms.IntegerField(label=_("Results"), min_value=1, max_value=50, initial=8, required=False)

    def clean_mode(self):
        return self.cleaned_data["mode"] or self.get_initial_for_field(self.fields["mode"], "mode")

    def clean_k(self):
        k = self.cleaned_data["k"]
        return k if k is not None else self.get_initial_for_field(self.fields["k"], "k")


class RetrievalSettingsForm(forms.Form):
    mode = forms.ChoiceField(label=_("Mode"), choices=MODE_CHOICES)
    k = forms.IntegerField(label=_("Chunks per answer (k)"), min_value=1, max_value=100)
    fusion = forms.ChoiceField(label=_("Fusion"), choices=FUSION_CHOICES)
    bm25_weight = forms.FloatField(label=_("Keyword weight"), min_value=0, max_value=10)
    dense_weight = forms.FloatField(label=_("Vector weight"), min_value=0, max_value=10, required=False,
                                    help_text=_("Empty: the embedding model's default."))
    k1 = forms.FloatField(label="BM25 k1", min_value=0, max_value=5)
    b = forms.FloatField(label="BM25 b", min_value=0, max_value=1)
    mmr_lambda = forms.FloatField(label=_("Diversity (MMR λ)"), min_value=0, max_value=1, required=False,
                                  help_text=_("Empty: off. 1 = relevance only, 0 = diversity only."))
    neighbors = forms.IntegerField(label=_("Neighbouring chunks"), min_value=0, max_value=3)
    expansion = forms.BooleanField(label=_("Multi-query expansion (LLM)"), required=False)
    expansion_model = forms.CharField(label=_("Expansion model"), required=False, max_length=200,
                                      help_text=_("e.g. local/llama3.2; empty: the server default."))
    compression = forms.BooleanField(label=_("Contextual compression (LLM)"), required=False)
    compression_model = forms.CharField(label=_("Compression model"), required=False, max_length=200)
    rerank_model = forms.CharField(label=_("Cross-encoder reranker"), required=False, max_length=200,
                                   help_text=_("A local sentence-transformers CrossEncoder path; empty: off."))

    @classmethod
    def for_settings(cls, retrieval: RetrievalSettings, data=None):
        initial = {name: getattr(retrieval, name) for name in cls.base_fields}
        return cls(data=data, initial=initial)


class EvalQuestionForm(forms.Form):
    text = forms.CharField(label=_("Question"), max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))
    documents = forms.MultipleChoiceField(label=_("Expected documents"), required=True)

    def __init__(self, *args, documents=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["documents"].choices = [(str(pk), title) for pk, title in documents]


class EvalUploadForm(forms.Form):
    file = forms.FileField(label=_("Questions file (JSONL or CSV)"))
