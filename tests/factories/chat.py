import factory

from chat.models import Assistant, Conversation, Feedback, Message
from tests.factories.accounts import TenantFactory


class AssistantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Assistant

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Assistant {n}")
    answer_target = "test/answer-model"
    cheap_target = "test/cheap-model"


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    tenant = factory.SubFactory(TenantFactory)
    assistant = factory.SubFactory(AssistantFactory, tenant=factory.SelfAttribute("..tenant"))
    title = factory.Sequence(lambda n: f"Conversation {n}")


class QuestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    tenant = factory.SubFactory(TenantFactory)
    conversation = factory.SubFactory(ConversationFactory, tenant=factory.SelfAttribute("..tenant"))
    role = Message.Role.USER
    content = "What is the refund policy?"
    status = Message.Status.DONE


class AnswerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    tenant = factory.SubFactory(TenantFactory)
    conversation = factory.SubFactory(ConversationFactory, tenant=factory.SelfAttribute("..tenant"))
    parent = factory.SubFactory(QuestionFactory, tenant=factory.SelfAttribute("..tenant"),
                                conversation=factory.SelfAttribute("..conversation"))
    role = Message.Role.ASSISTANT
    content = "Refunds are possible within 30 days [1]."
    status = Message.Status.DONE
    citations = factory.LazyFunction(lambda: [{"n": 1, "chunk_id": 1, "document_id": 1, "kb_id": 1,
                                               "title": "Policy", "page": 2, "heading": "", "snippet": "30 days"}])


class FeedbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feedback

    tenant = factory.SubFactory(TenantFactory)
    message = factory.SubFactory(AnswerFactory, tenant=factory.SelfAttribute("..tenant"))
    rating = 1
