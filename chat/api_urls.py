from django.urls import path

from chat import api, openai_api

urlpatterns = [
    path("assistants", api.AssistantListCreate.as_view(), name="api-assistant-list"),
    path("assistants/<int:assistant_id>", api.AssistantDetail.as_view(), name="api-assistant-detail"),
    path("assistants/<int:assistant_id>/chat", api.AssistantChat.as_view(), name="api-assistant-chat"),
    path("conversations", api.ConversationList.as_view(), name="api-conversation-list"),
    path("conversations/<int:conversation_id>", api.ConversationDetail.as_view(), name="api-conversation-detail"),
    path("conversations/<int:conversation_id>/messages", api.ConversationMessages.as_view(),
         name="api-conversation-messages"),
    path("messages/<int:message_id>", api.MessageDetail.as_view(), name="api-message-detail"),
    path("messages/<int:message_id>/stream", api.MessageStream.as_view(), name="api-message-stream"),
    path("messages/<int:message_id>/stop", api.MessageStop.as_view(), name="api-message-stop"),
    path("messages/<int:message_id>/regenerate", api.MessageRegenerate.as_view(), name="api-message-regenerate"),
    path("messages/<int:message_id>/feedback", api.MessageFeedback.as_view(), name="api-message-feedback"),
    path("openai/chat/completions", openai_api.ChatCompletions.as_view(), name="api-openai-chat-completions"),
    path("openai/models", openai_api.ModelList.as_view(), name="api-openai-models"),
]
