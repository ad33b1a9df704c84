from django import forms
from django.utils.translation import gettext_lazy as _

from knowledge.embeddings import available_models
from knowledge.models import KnowledgeBase
from knowledge.selectors import kb_vectors
from knowledge.services import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE


def _model_choices():
    return [(m, m) for m in available_models()]


class KnowledgeBaseForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=120)
    description = forms.CharField(label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 3}))
    language = forms.ChoiceField(label=_("Language of the documents"), choices=KnowledgeBase.Language.choices,
                                 initial=KnowledgeBase.Language.AUTO)
    embedding_model = forms.ChoiceField(
        label=_("Embedding model"), choices=_model_choices,
        help_text=_("Changing it later computes the vectors again in the background; searches use the current "
                    "ones until all are done."),
    )
    chunk_size = forms.IntegerField(label=_("Chunk size (characters)"), initial=900, min_value=MIN_CHUNK_SIZE,
                                    max_value=MAX_CHUNK_SIZE)
    chunk_overlap = forms.IntegerField(label=_("Chunk overlap (characters)"), initial=120, min_value=0,
                                       max_value=MAX_CHUNK_SIZE // 2)

    def __init__(self, *args, kb: KnowledgeBase | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if kb is not None:
            for field in ("name", "description", "language", "chunk_size", "chunk_overlap"):
                self.fields[field].initial = getattr(kb, field)
            # The model the KB is moving to, when an upgrade is under way: saving unchanged keeps it going.
            model = kb_vectors(tenant=kb.tenant, kb=kb)["upgrading_to"] or kb.embedding_model
            self.fields["embedding_model"].initial = model
            offered = dict(self.fields["embedding_model"].choices)
            missing = [m for m in dict.fromkeys((model, kb.embedding_model)) if m not in offered]
            self.fields["embedding_model"].choices = [(m, m) for m in missing] + list(offered.items())
